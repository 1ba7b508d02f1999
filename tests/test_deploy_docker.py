"""Static checks of docker/ (no Docker engine here): what the compose file and Dockerfile promise."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return data


def test_ports_are_published_on_loopback_only() -> None:
    ports = [(name, p) for name, svc in _compose()["services"].items() for p in svc.get("ports", [])]
    assert ports
    assert all(str(p).startswith("127.0.0.1:") for _, p in ports), ports


def test_server_on_postgres_with_encryption_key_from_env() -> None:
    services = _compose()["services"]
    env = services["prefect-server"]["environment"]
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert env["PREFECT_SERVER_ENCRYPTION_KEY"].startswith("${PREFECT_SERVER_ENCRYPTION_KEY")
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "ib-gateway" in services["ib-gateway"]["profiles"]


def test_worker_and_tools_targets_exist_and_run_as_non_root() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.MULTILINE))
    assert {"builder", "runtime", "worker", "tools"} <= targets
    assert "uv sync --locked --no-dev" in text
    assert re.search(r"^USER trader$", text, flags=re.MULTILINE)
    assert "chromium" in text
    for name, svc in _compose()["services"].items():
        if "build" in svc:
            assert svc["build"]["target"] in targets, name
