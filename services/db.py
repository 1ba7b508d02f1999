"""Engines, sessions and schema migrations.

* :func:`make_engine` builds (and caches per URL) an engine; SQLite gets foreign keys, WAL and a busy timeout.
* :func:`session_scope` is the unit of work: commit on success, roll back on any error.
* :func:`upgrade_schema` runs ``alembic upgrade head`` programmatically; :func:`init_database` is what
  ``trader db init`` and the flows call at start-up.

JSON columns accept ``Decimal``, ``datetime``, ``date`` and enums (stored as strings).
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from models.migrations import MIGRATIONS_DIR
from models.migrations.support import context_options
from services.errors import ConfigurationError, InputError, Problem
from services.settings import Settings

SQLITE_BUSY_TIMEOUT_MS: Final = 10_000
_PG_MIGRATION_LOCK_KEY: Final = 0x7472_6164_6572  # "trader": serializes concurrent upgrade_schema calls

InitAction = Literal["created", "upgraded", "current"]


@dataclass(frozen=True)
class InitReport:
    """What :func:`init_database` did. ``url`` has any password masked."""

    url: str
    action: InitAction
    previous_revision: str | None
    revision: str


# ---------------------------------------------------------------------------------------------------------------------
# Engines and sessions

_engines: dict[tuple[str, bool], Engine] = {}
_engines_lock = threading.Lock()


def _json_default(value: Any) -> Any:
    # JSON columns get documents built by pydantic models and risk checks: keep money exact as strings.
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_json_dumps = partial(json.dumps, default=_json_default, ensure_ascii=False)


def _is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling (no BEGIN before SELECT, COMMIT before DDL) breaks savepoints and
    # transactional DDL: switch it off and emit BEGIN ourselves (see _sqlite_on_begin).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so a transaction that reads and
    # then writes never fails with SQLITE_BUSY halfway; SQLite serializes writers anyway.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """Return the engine for ``url``, created on first use and cached per (url, echo).

    SQLite: foreign keys on, WAL journal, busy timeout, real transactions (``BEGIN IMMEDIATE``, so savepoints and
    transactional DDL work); ``sqlite://`` (memory) shares one connection.
    PostgreSQL: connections are pinged before use.
    """
    parsed = make_url(url)
    key = (parsed.render_as_string(hide_password=False), echo)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is not None:
            return engine
        kwargs: dict[str, Any] = {"echo": echo, "json_serializer": _json_dumps}
        if parsed.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False}
            if _is_memory_sqlite(parsed):
                kwargs["poolclass"] = StaticPool
        else:
            kwargs["pool_pre_ping"] = True
        engine = create_engine(parsed, **kwargs)
        if parsed.get_backend_name() == "sqlite":
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
        _engines[key] = engine
        return engine


def dispose_engines(url: str | URL | None = None) -> None:
    """Close and forget cached engines (all of them, or those for ``url``): needed before dropping a database."""
    wanted = None if url is None else make_url(url).render_as_string(hide_password=False)
    with _engines_lock:
        for key in [k for k in _engines if wanted is None or k[0] == wanted]:
            _engines.pop(key).dispose()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return a session factory bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(target: Engine | sessionmaker[Session] | str | URL) -> Iterator[Session]:
    """Yield a session; commit when the block ends, roll back if it raises.

    A value a column type refuses (naive datetime, float money, too many decimals) surfaces as
    :class:`~services.errors.InputError` instead of SQLAlchemy's wrapper.
    """
    if isinstance(target, sessionmaker):
        factory = target
    else:
        factory = session_factory(target if isinstance(target, Engine) else make_engine(target))
    session = factory()
    try:
        yield session
        session.commit()
    except StatementError as exc:
        session.rollback()
        if isinstance(exc.orig, ValueError | TypeError):
            raise InputError("database", [Problem(_statement_table(exc), str(exc.orig))]) from exc
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _statement_table(exc: StatementError) -> str:
    words = (exc.statement or "").split()
    for before, after in itertools.pairwise(words):
        if before.upper() in {"INTO", "UPDATE", "FROM"}:
            return after.strip('"')
    return ""


# ---------------------------------------------------------------------------------------------------------------------
# Migrations


def alembic_config(connection: Connection | None = None) -> Config:
    """Return an Alembic config for our migrations, optionally bound to an open connection."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """Return the newest revision of the migration scripts."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no Alembic revisions found in {MIGRATIONS_DIR / 'versions'}")
    return head


def current_revision(url: str | URL) -> str | None:
    """Return the database's Alembic revision, or ``None`` for a database never migrated."""
    with make_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_schema(url: str | URL) -> str:
    """Migrate the database at ``url`` to the newest revision and return it. A no-op when already current.

    On PostgreSQL an advisory lock serializes concurrent callers (two workers starting together). A database at a
    revision these migrations do not know raises :class:`~services.errors.ConfigurationError`.
    """
    engine = make_engine(url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY})
        try:
            command.upgrade(alembic_config(conn), "head")
        except CommandError as exc:
            raise ConfigurationError(
                f"cannot migrate {make_url(url).render_as_string(hide_password=True)}: {exc} "
                "(was the database created by a newer version of this program?)"
            ) from exc
        revision = MigrationContext.configure(conn).get_current_revision()
    if revision is None:
        raise RuntimeError("alembic upgrade finished without a revision")
    return revision


def schema_differences(url: str | URL) -> list[Any]:
    """Return Alembic's autogenerate diff between the database at ``url`` and ``models.tables`` (empty = in sync)."""
    with make_engine(url).connect() as conn:
        opts = context_options(conn.dialect.name)
        metadata = opts.pop("target_metadata")
        ctx = MigrationContext.configure(conn, opts=opts)
        return list(compare_metadata(ctx, metadata))


def init_database(settings: Settings) -> InitReport:
    """Create or upgrade the configured database and report which of the two happened.

    For SQLite the file's directory is created when missing.
    """
    url = make_url(settings.database_url())
    if url.get_backend_name() == "sqlite" and not _is_memory_sqlite(url) and url.database:
        path = Path(url.database).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError("database.url", f"cannot create directory {path.parent}: {exc}") from exc
    previous = current_revision(url)
    revision = upgrade_schema(url)
    action: InitAction
    if previous is None:
        action = "created"
    elif previous != revision:
        action = "upgraded"
    else:
        action = "current"
    return InitReport(
        url=url.render_as_string(hide_password=True),
        action=action,
        previous_revision=previous,
        revision=revision,
    )
