"""Alembic environment: migrate ``models.tables.Base.metadata``.

Programmatic use (``services.db.upgrade_schema``) passes an open connection in ``config.attributes["connection"]``.
CLI use takes the URL from ``-x url=...``, the ini's ``sqlalchemy.url`` or ``TRADER_DATABASE__URL``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from models.migrations.support import context_options

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    url = url or os.environ.get("TRADER_DATABASE__URL")
    if not url:
        raise SystemExit("no database URL: pass -x url=..., set TRADER_DATABASE__URL, or run `trader db upgrade`")
    return url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **context_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    url = _url()
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    context.configure(url=url, literal_binds=True, **context_options(dialect))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
