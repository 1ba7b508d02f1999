"""tests/pg.py's PostgreSQL discovery against fake install trees (no server is started).

Fake installs are temp directories with executable ``initdb`` / ``pg_ctl`` stubs laid out like Debian's
``/usr/lib/postgresql/<major>/bin``; ``PATH`` is an explicit, otherwise empty directory list so the machine's own
PostgreSQL never answers.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.pg import SERVER_BINARIES, PgSetupError, find_bindir

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "find_postgres.sh"


def _executable(path: Path, body: str = "exit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _install(root: Path, version: str, binaries: tuple[str, ...] = SERVER_BINARIES) -> Path:
    bindir = root / version / "bin"
    for name in binaries:
        _executable(bindir / name)
    return bindir


@pytest.fixture
def empty_path(tmp_path: Path) -> str:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    return str(empty)


@pytest.mark.parametrize("versions", [("15",), ("16",), ("17",), ("15", "16", "17"), ("17", "15", "16")])
def test_debian_layout_picks_the_highest_installed_major(tmp_path: Path, empty_path: str, versions: tuple[str]) -> None:
    root = tmp_path / "usr-lib-postgresql"
    for version in versions:  # creation order must not matter
        _install(root, version)
    expected = root / max(versions, key=int) / "bin"
    assert find_bindir(path=empty_path, debian_root=root) == expected


def test_versions_sort_as_numbers_not_text(tmp_path: Path, empty_path: str) -> None:
    root = tmp_path / "pg"
    for version in ("9.6", "15", "16"):
        _install(root, version)
    assert find_bindir(path=empty_path, debian_root=root) == root / "16" / "bin"  # "9.6" > "16" as text


def test_an_incomplete_install_is_skipped_never_mixed(tmp_path: Path, empty_path: str) -> None:
    root = tmp_path / "pg"
    _install(root, "15")
    _install(root, "16")
    _install(root, "17", binaries=("initdb",))  # client-only or half-removed 17: no pg_ctl
    assert find_bindir(path=empty_path, debian_root=root) == root / "16" / "bin"


def test_path_comes_first(tmp_path: Path) -> None:
    root = tmp_path / "pg"
    _install(root, "17")
    on_path = _install(tmp_path / "opt", "15")
    assert find_bindir(path=str(on_path), debian_root=root) == on_path
    # initdb on PATH without pg_ctl beside it does not count: fall through to the Debian tree
    lonely = _install(tmp_path / "lonely", "16", binaries=("initdb",))
    assert find_bindir(path=str(lonely), debian_root=root) == root / "17" / "bin"


def test_pg_config_bindir_comes_before_the_debian_tree(tmp_path: Path) -> None:
    root = tmp_path / "pg"
    _install(root, "17")
    elsewhere = _install(tmp_path / "custom", "16")
    tools = tmp_path / "tools"
    _executable(tools / "pg_config", f'[ "$1" = --bindir ] && echo {elsewhere}\n')
    assert find_bindir(path=str(tools), debian_root=root) == elsewhere
    # a pg_config whose bindir has no server (libpq-dev only) is passed over
    _executable(tools / "pg_config", f"echo {tmp_path / 'nowhere'}\n")
    assert find_bindir(path=str(tools), debian_root=root) == root / "17" / "bin"


def test_nothing_installed_names_every_place_searched(tmp_path: Path, empty_path: str) -> None:
    root = tmp_path / "pg"
    _install(root, "17", binaries=("pg_ctl",))
    with pytest.raises(PgSetupError) as err:
        find_bindir(path=empty_path, debian_root=root)
    message = str(err.value)
    assert f"PATH ({empty_path})" in message
    assert "pg_config --bindir (no pg_config on PATH)" in message
    assert f"{root}/*/bin ({root / '17' / 'bin'})" in message
    assert "apt-get install -y postgresql" in message
    with pytest.raises(PgSetupError, match=r"/\*/bin \(none\)"):
        find_bindir(path=empty_path, debian_root=tmp_path / "missing")


def _script(path_dirs: list[Path], root: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run scripts/find_postgres.sh (setup.sh's "is PostgreSQL installed" check) with only ``path_dirs`` on PATH
    (plus links to the two external commands it uses)."""
    tools = tmp_path / "coreutils"
    tools.mkdir(exist_ok=True)
    for name in ("find", "sort"):
        found = shutil.which(name)
        assert found is not None
        if not (tools / name).exists():
            os.symlink(found, tools / name)
    path = os.pathsep.join(str(p) for p in [*path_dirs, tools])
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run(
        [bash, str(SCRIPT), str(root)], env={"PATH": path}, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize(
    "layout",
    [
        {"debian": ("15",), "expect": "pg/15/bin"},  # Debian 12
        {"debian": ("17",), "expect": "pg/17/bin"},  # Debian 13
        {"debian": ("15", "16", "17"), "expect": "pg/17/bin"},
        {"debian": ("9.6", "16"), "expect": "pg/16/bin"},
        {"debian": ("15", "16"), "half_17": True, "expect": "pg/16/bin"},
        {"debian": ("17",), "path": "15", "expect": "opt/15/bin"},
        {"debian": ("17",), "pg_config": "16", "expect": "custom/16/bin"},
    ],
    ids=["deb12", "deb13", "three", "numeric-sort", "incomplete-17", "path-first", "pg-config"],
)
def test_setup_script_uses_the_same_rule(tmp_path: Path, layout: dict[str, object]) -> None:
    root = tmp_path / "pg"
    for version in layout["debian"]:  # type: ignore[attr-defined]
        _install(root, version)
    if layout.get("half_17"):
        _install(root, "17", binaries=("initdb",))
    path_dirs = [tmp_path / "empty"]
    path_dirs[0].mkdir()
    if "path" in layout:
        path_dirs.insert(0, _install(tmp_path / "opt", str(layout["path"])))
    if "pg_config" in layout:
        custom = _install(tmp_path / "custom", str(layout["pg_config"]))
        _executable(tmp_path / "tools" / "pg_config", f"echo {custom}\n")
        path_dirs.insert(0, tmp_path / "tools")
    python_answer = find_bindir(path=os.pathsep.join(str(p) for p in path_dirs), debian_root=root)
    done = _script(path_dirs, root, tmp_path)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == python_answer == tmp_path / str(layout["expect"])


def test_setup_script_explains_what_it_searched(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = _script([tmp_path / "empty"], tmp_path / "pg", tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert "pg_config --bindir (no pg_config on PATH)" in done.stderr
    assert f"{tmp_path / 'pg'}/*/bin (none)" in done.stderr
