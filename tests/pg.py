"""A throwaway PostgreSQL 15 cluster for the test session.

:class:`PgCluster` runs ``initdb`` + ``pg_ctl start`` in a temp directory on a free loopback port (fsync off,
trust auth) and removes everything on :meth:`PgCluster.stop`. As root (sessions and CI) the binaries run as the
``postgres`` user through ``runuser``, because PostgreSQL refuses to run as root.

Other tests get databases through the ``pg_url`` fixture (``trader_test``) or :func:`create_database`::

    sync_url, async_url = create_database("prefect")   # postgresql+psycopg2://..., postgresql+asyncpg://...
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Final

import psycopg2  # type: ignore[import-untyped]
from psycopg2 import sql

SETUP_HINT: Final = (
    "PostgreSQL 15 server binaries (initdb, pg_ctl) are required for the test suite. "
    "Install them with `apt-get install -y postgresql-15` (Debian/Ubuntu; binaries in /usr/lib/postgresql/15/bin) "
    "or put initdb and pg_ctl on PATH."
)
_SEARCH_DIRS: Final = ("/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/bin")
TEST_DATABASE: Final = "trader_test"


class PgSetupError(RuntimeError):
    """The throwaway cluster could not be created or started."""


def find_binary(name: str) -> str:
    """Return the path of a PostgreSQL server binary, or raise :class:`PgSetupError` naming the set-up command."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _SEARCH_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise PgSetupError(f"`{name}` not found. {SETUP_HINT}")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """One temporary PostgreSQL cluster; use :meth:`start` / :meth:`stop` (or as a context manager)."""

    def __init__(self) -> None:
        self.port = 0
        self.root: Path | None = None
        self._as_postgres = os.geteuid() == 0
        self._started = False

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "cluster not started"
        return self.root / "data"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PgSetupError(f"{' '.join(cmd)} failed: {exc}. {SETUP_HINT}") from exc
        if done.returncode != 0:
            raise PgSetupError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def start(self) -> PgCluster:
        """Create and start the cluster; raise :class:`PgSetupError` with the reason on any failure."""
        initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
        self.root = Path(tempfile.mkdtemp(prefix="trader-pg-"))
        try:
            if self._as_postgres:
                try:
                    user = pwd.getpwnam("postgres")
                except KeyError as exc:
                    raise PgSetupError(f"running as root but there is no `postgres` user. {SETUP_HINT}") from exc
                os.chown(self.root, user.pw_uid, user.pw_gid)
            self._run(initdb, "-D", str(self.data_dir), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
            self.port = free_port()
            options = (
                f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c autovacuum=off"
            )
            self._run(
                pg_ctl,
                "-D",
                str(self.data_dir),
                "-o",
                options,
                "-l",
                str(self.root / "server.log"),
                "-w",
                "-t",
                "30",
                "start",
            )
            self._started = True
            self.create_database(TEST_DATABASE)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory. Safe to call twice."""
        if self.root is None:
            return
        if self._started:
            with contextlib.suppress(PgSetupError):
                self._run(find_binary("pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
            self._started = False
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, database: str = TEST_DATABASE, driver: str = "psycopg2") -> str:
        """Return the SQLAlchemy URL of ``database`` on this cluster."""
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def admin_connection(self) -> psycopg2.extensions.connection:
        """Return an autocommit connection to the ``postgres`` database (caller closes it)."""
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        return conn

    def create_database(self, name: str, template: str | None = None) -> tuple[str, str]:
        """Create database ``name`` (dropping an old one) and return ``(psycopg2_url, asyncpg_url)``."""
        conn = self.admin_connection()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                if template is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                else:
                    # FILE_COPY is ~4x faster than the default WAL_LOG for small templates (fsync is off)
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                            sql.Identifier(name), sql.Identifier(template)
                        )
                    )
        finally:
            conn.close()
        return self.url(name), self.url(name, "asyncpg")

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting its sessions."""
        conn = self.admin_connection()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            conn.close()


_cluster: PgCluster | None = None


def cluster() -> PgCluster:
    """Return the session's cluster, starting it on first use.

    The ``pg_cluster`` fixture stops it at the end of the session; an exit hook covers any other use.
    """
    global _cluster
    if _cluster is None or _cluster.root is None:
        _cluster = PgCluster().start()
        atexit.register(stop_cluster)
    return _cluster


def stop_cluster() -> None:
    """Stop the session's cluster if one was started."""
    global _cluster
    if _cluster is not None:
        _cluster.stop()
        _cluster = None


def create_database(name: str) -> tuple[str, str]:
    """Create (or recreate) database ``name`` on the session cluster; return ``(psycopg2_url, asyncpg_url)``.

    Example: ``sync_url, async_url = create_database("prefect")`` for a Prefect server's
    ``PREFECT_SERVER_DATABASE_CONNECTION_URL=async_url``. Raises :class:`PgSetupError` if PostgreSQL is missing.
    """
    return cluster().create_database(name)
