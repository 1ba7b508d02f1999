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
            _forget_concurrency_clients()
            yield info
    finally:
        _forget_concurrency_clients()
        stop_server(home)


def _forget_concurrency_clients() -> None:
    """Stop Prefect's concurrency-slot services: each keeps the client of the server it first talked to (one per
    limit name, for the life of the process), so after a switch of server a rate limit would still be taken on
    the previous one. A process in production talks to one server; a test session switches."""
    from prefect.concurrency.services import (
        ConcurrencySlotAcquisitionService,
        ConcurrencySlotAcquisitionWithLeaseService,
    )

    for service in (ConcurrencySlotAcquisitionService, ConcurrencySlotAcquisitionWithLeaseService):
        service.drain_all(timeout=10, at_exit=False)
