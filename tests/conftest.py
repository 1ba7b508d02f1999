"""Fixtures shared by the whole suite.

* Every test runs with ``PREFECT_HOME``, ``XDG_DATA_HOME`` in a temp dir, Prefect analytics off and no ``TRADER_*``
  variables from the developer's shell (set in ``pytest_configure``, before any test module imports Prefect).
* ``pg_cluster`` / ``pg_url``: the session's throwaway PostgreSQL, any installed major version (see ``tests/pg.py``);
  ``pg_url`` is the migrated ``trader_test`` database, shared by the session. ``tests.pg.create_database(name)``
  adds a database to the same cluster (e.g. ``prefect`` with an asyncpg URL).
* ``db_url``: a fresh, migrated database per test, parametrized over ``sqlite`` and ``postgres``;
  ``empty_db_url``: the same, never migrated; ``session``: an ORM session on ``db_url``.
* ``trader``: ``trader ARGS...`` through typer's CliRunner with ``TRADER_DATA_DIR`` in the test's temp dir (its
  SQLite database, unless a module overrides ``trader_db_url``, e.g. with ``db_url``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy.orm import Session

from deployments.local_server import ServerInfo
from services.db import dispose_engines, make_engine, session_factory, upgrade_schema
from tests.pg import PgCluster, PgSetupError, cluster, stop_cluster
from tests.trader_cli import Invoke

BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]
_PG_TEMPLATE = "trader_template"
_ISOLATION_ROOT: Path | None = None
_db_numbers = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    global _ISOLATION_ROOT
    _ISOLATION_ROOT = Path(tempfile.mkdtemp(prefix="trader-tests-"))
    for key in [k for k in os.environ if k.upper().startswith("TRADER_")]:
        del os.environ[key]
    os.environ["PREFECT_HOME"] = str(_ISOLATION_ROOT / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["XDG_DATA_HOME"] = str(_ISOLATION_ROOT / "xdg-data")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _ISOLATION_ROOT is not None:
        shutil.rmtree(_ISOLATION_ROOT, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def isolated_environment() -> Iterator[dict[str, str]]:
    """Re-assert the isolation variables for the session; yields them."""
    assert _ISOLATION_ROOT is not None
    values = {
        "PREFECT_HOME": str(_ISOLATION_ROOT / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "XDG_DATA_HOME": str(_ISOLATION_ROOT / "xdg-data"),
    }
    os.environ.update(values)
    yield values


# ---------------------------------------------------------------------------------------------------------------------
# PostgreSQL


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's PostgreSQL cluster; FAILS (never skips) when the server binaries are missing."""
    try:
        started = cluster()
    except PgSetupError as exc:
        pytest.fail(f"cannot start the test PostgreSQL cluster: {exc}", pytrace=False)
    try:
        yield started
    finally:
        dispose_engines()
        stop_cluster()


@pytest.fixture(scope="session")
def pg_url(pg_cluster: PgCluster) -> str:
    """URL of the migrated ``trader_test`` database (psycopg2 driver), shared by the whole session."""
    url = pg_cluster.url()
    upgrade_schema(url)
    return url


@pytest.fixture(scope="session")
def _pg_template(pg_cluster: PgCluster) -> str:
    url, _ = pg_cluster.create_database(_PG_TEMPLATE)
    upgrade_schema(url)
    dispose_engines(url)  # a template must have no open connections
    return _PG_TEMPLATE


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    url = f"sqlite:///{path}"
    upgrade_schema(url)
    dispose_engines(url)
    return path


def _copy_sqlite(source: Path, target: Path) -> None:
    # The backup API copies a consistent image even with WAL files around.
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _fresh_database(request: pytest.FixtureRequest, tmp_path: Path, *, migrated: bool) -> Iterator[str]:
    backend: str = request.param
    if backend == "sqlite":
        path = tmp_path / "trader.db"
        if migrated:
            _copy_sqlite(request.getfixturevalue("_sqlite_template"), path)
        url = f"sqlite:///{path}"
        yield url
        dispose_engines(url)
        return
    pg: PgCluster = request.getfixturevalue("pg_cluster")
    template = request.getfixturevalue("_pg_template") if migrated else None
    name = f"t{os.getpid()}_{next(_db_numbers)}"
    url, _ = pg.create_database(name, template=template)
    yield url
    dispose_engines(url)
    pg.drop_database(name)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database at the newest migration, once on SQLite and once on PostgreSQL."""
    yield from _fresh_database(request, tmp_path, migrated=True)


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty (never migrated) database, once on SQLite and once on PostgreSQL."""
    yield from _fresh_database(request, tmp_path, migrated=False)


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    """An ORM session on ``db_url``; whatever is not committed is rolled back at the end."""
    with session_factory(make_engine(db_url))() as db_session:
        yield db_session


# ---------------------------------------------------------------------------------------------------------------------
# The ``trader`` CLI


@pytest.fixture
def trader_db_url() -> str | None:
    """The database the ``trader`` fixture points the CLI at; None: the SQLite file in its data directory."""
    return None


@pytest.fixture
def trader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trader_db_url: str | None) -> Iterator[Invoke]:
    """``trader(*args)`` runs the CLI in this process (real settings, database and services) and returns the result."""
    from typer.testing import CliRunner

    from cli import common
    from cli.main import app

    monkeypatch.setenv("TRADER_DATA_DIR", str(tmp_path / "data"))
    if trader_db_url is not None:
        monkeypatch.setenv("TRADER_DATABASE__URL", trader_db_url)
    common.settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args))

    yield invoke
    common.settings.cache_clear()


# ---------------------------------------------------------------------------------------------------------------------
# Prefect


@pytest.fixture(scope="session")
def prefect_api(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """One real, bootstrapped Prefect server for the session, on the test PostgreSQL (no SQLite 503s, no ephemeral
    start-up races).

    Flows run in tests that request it (and in every later test of the session) report to this server.
    """
    from deployments.bootstrap import bootstrap
    from services.settings import load_settings
    from tests.prefect_server import prefect_server

    with prefect_server(pg_cluster, tmp_path_factory.mktemp("prefect-home"), "prefect_session") as info:
        bootstrap(load_settings({}))  # work pool, global limits (used strictly by the tasks), variables
        yield info
