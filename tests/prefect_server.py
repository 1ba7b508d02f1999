"""A real Prefect server for tests, on its own database of the test PostgreSQL cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.local_server import ServerInfo, free_port, start_server, stop_server
from tests.pg import PgCluster


@contextmanager
def prefect_server(
    pg_cluster: PgCluster, home: Path, db_name: str, extra_env: dict[str, str] | None = None
) -> Iterator[ServerInfo]:
    """Start ``prefect server start`` on database ``db_name`` (free port, ``home``), set it as PREFECT_API_URL for
    the block, stop it after. ``extra_env`` adds server settings."""
    _, async_url = pg_cluster.create_database(db_name)
    info = start_server(home, port=free_port(), database_url=async_url, extra_env=extra_env)
    try:
        with temporary_settings({PREFECT_API_URL: info.api_url}):
            yield info
    finally:
        stop_server(home)
