"""The layering rules the README states, checked on the source: every Prefect task lives in tasks/, services/ and
models/ know nothing of Prefect, flows/ run no SQL, and each vendor library is imported by its one adapter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "deployments", "flows", "tasks", "services", "models", "simulator")


def _modules(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _modules_imported(path: Path) -> set[str]:
    """Every module ``path`` imports, by its full name (``from a.b import c``: ``a.b`` and ``a.b.c``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _modules_imported(path)}


def _tasks(path: Path) -> list[str]:
    """Functions decorated with Prefect's task (``@task``, ``@prefect.task``, ``@task(...)``, an alias of it), or
    wrapped by a call of it (``task(fn)``)."""
    tree = ast.parse(path.read_text(), str(path))
    aliases = {"task"} | {
        a.asname
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "prefect"
        for a in n.names
        if a.name == "task" and a.asname
    }

    def is_task(target: ast.expr) -> bool:
        return (isinstance(target, ast.Name) and target.id in aliases) or (
            isinstance(target, ast.Attribute) and target.attr == "task"
        )

    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for deco in node.decorator_list:
                if is_task(deco.func if isinstance(deco, ast.Call) else deco):
                    names.append(node.name)
        elif isinstance(node, ast.Call) and is_task(node.func) and node.args:  # task(fn) / task(name=...)(fn)
            names.append(ast.unparse(node.args[0]))
    return names


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_every_task_lives_in_tasks() -> None:
    elsewhere = {_rel(p): _tasks(p) for p in _modules(*(pkg for pkg in PACKAGES if pkg != "tasks")) if _tasks(p)}
    assert elsewhere == {}
    assert len([t for p in _modules("tasks") for t in _tasks(p)]) >= 10  # the check sees the decorators


def test_services_and_models_know_nothing_of_prefect() -> None:
    assert [_rel(p) for p in _modules("services", "models", "simulator") if "prefect" in _imports(p)] == []


def test_flows_run_no_sql() -> None:
    """No SQL library, and no database session or repository either: flow bodies call tasks."""
    database = {"services.db", "services.repositories"}

    def touches_the_database(path: Path) -> bool:
        names = _modules_imported(path)
        return bool(_imports(path) & {"sqlalchemy", "psycopg", "psycopg2", "sqlite3"}) or any(
            n == d or n.startswith(d + ".") for n in names for d in database
        )

    assert [_rel(p) for p in _modules("flows") if touches_the_database(p)] == []
    assert touches_the_database(ROOT / "tasks" / "run_meta.py")  # the check sees a session import


@pytest.mark.parametrize(
    ("vendor", "adapters"),
    [
        ("ib_async", {"services/broker/ib_adapter.py"}),
        ("openai", {"services/llm/client.py"}),
        ("plotly", {"services/charts.py"}),
        ("kaleido", {"services/charts.py"}),
        ("great_expectations", {"services/bars/validation.py"}),
    ],
)
def test_each_vendor_is_imported_by_its_adapter_only(vendor: str, adapters: set[str]) -> None:
    importers = {_rel(p) for p in _modules(*PACKAGES) if vendor in _imports(p)}
    assert importers == adapters
