"""A throwaway PostgreSQL cluster (any installed major version) for the test session.

:func:`find_bindir` finds the server binaries (PATH, ``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``);
:class:`PgCluster` runs that directory's ``initdb`` + ``pg_ctl start`` in a temp directory on a free loopback port
(fsync off, trust auth) and removes everything on :meth:`PgCluster.stop`. As root (sessions and CI) the binaries
run as the ``postgres`` user through ``runuser``, because PostgreSQL refuses to run as root.

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
    "PostgreSQL server binaries (initdb, pg_ctl; any major version) are required for the test suite. "
    "Install them with `./scripts/setup.sh` or `apt-get install -y postgresql` (Debian: version 15 on Debian 12, "
    "17 on Debian 13, binaries in /usr/lib/postgresql/<version>/bin), or put initdb and pg_ctl on PATH."
)
DEBIAN_ROOT: Final = Path("/usr/lib/postgresql")
SERVER_BINARIES: Final = ("initdb", "pg_ctl")
TEST_DATABASE: Final = "trader_test"


class PgSetupError(RuntimeError):
    """The throwaway cluster could not be created or started."""


def _has_server(directory: Path) -> bool:
    return all((directory / name).is_file() and os.access(directory / name, os.X_OK) for name in SERVER_BINARIES)


def _version_key(directory: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in directory.parent.name.split("."))
    except ValueError:
        return (-1,)


def find_bindir(*, path: str | None = None, debian_root: Path | None = None) -> Path:
    """Return the directory holding both ``initdb`` and ``pg_ctl`` of one PostgreSQL install, any major version.

    Searched in order, first match wins:

    1. ``PATH`` (``path`` overrides ``$PATH``): the directory of ``initdb``, if ``pg_ctl`` is beside it;
    2. ``pg_config --bindir`` (``pg_config`` from the same ``PATH``);
    3. ``<debian_root>/<version>/bin`` (Debian/Ubuntu's layout; default :data:`DEBIAN_ROOT`), highest version
       first (17 before 16 before 15 before 9.6).

    Both binaries always come from one directory, so initdb and pg_ctl are the same version. Raises
    :class:`PgSetupError` naming every place searched when none has them.
    """
    debian_root = DEBIAN_ROOT if debian_root is None else debian_root
    searched: list[str] = []
    initdb = shutil.which("initdb", path=path)
    if initdb is not None and _has_server(Path(initdb).parent):
        return Path(initdb).parent
    searched.append(f"PATH ({path if path is not None else os.environ.get('PATH', '')})")
    pg_config = shutil.which("pg_config", path=path)
    if pg_config is None:
        searched.append("pg_config --bindir (no pg_config on PATH)")
    else:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False)
            bindir = Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            bindir = None
        if bindir is not None and _has_server(bindir):
            return bindir
        searched.append(f"{pg_config} --bindir ({bindir if bindir is not None else 'no answer'})")
    candidates = sorted(debian_root.glob("*/bin"), key=_version_key, reverse=True) if debian_root.is_dir() else []
    for candidate in candidates:
        if _has_server(candidate):
            return candidate
    searched.append(f"{debian_root}/*/bin ({', '.join(str(c) for c in candidates) or 'none'})")
    raise PgSetupError(
        f"no PostgreSQL server binaries ({' and '.join(SERVER_BINARIES)}) in: {'; '.join(searched)}. {SETUP_HINT}"
    )


def find_binary(name: str) -> str:
    """Return the path of a PostgreSQL server binary from :func:`find_bindir`'s directory."""
    return str(find_bindir() / name)


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
        self.bindir: Path | None = None
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
        bindir = find_bindir()
        self.bindir = bindir
        initdb, pg_ctl = str(bindir / "initdb"), str(bindir / "pg_ctl")
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
                assert self.bindir is not None
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
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
