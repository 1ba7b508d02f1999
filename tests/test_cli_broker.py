"""``trader broker status`` through typer's CliRunner, against the TWS simulator and a closed port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import common
from cli.broker import mask
from cli.main import app
from simulator import SimConfig, SimServer

runner = CliRunner()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("TRADER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TRADER_IB__CONNECT_TIMEOUT_S", "2")
    common.settings.cache_clear()
    yield monkeypatch
    common.settings.cache_clear()


def test_status_against_the_simulator_prints_state_version_and_masked_account(env: pytest.MonkeyPatch) -> None:
    with SimServer.in_thread(SimConfig(port=0, accounts=("DU1234567",))) as sim:
        env.setenv("TRADER_IB__PORT", str(sim.port))
        env.setenv("TRADER_IB__CLIENT_ID", "71")
        result = runner.invoke(app, ["broker", "status"])
        assert sim.stats.connections == 1
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"broker 127.0.0.1:{sim.port} clientId 71: connected"
    assert lines[1] == f"  server version: {sim.config.server_version}"
    assert lines[2] == "  account: DU***67"
    assert "DU1234567" not in result.output


def test_status_with_nothing_listening_prints_the_error_and_exits_1(env: pytest.MonkeyPatch) -> None:
    env.setenv("TRADER_IB__PORT", "1")
    result = runner.invoke(app, ["broker", "status"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["broker 127.0.0.1:1 clientId 17: disconnected"]
    assert result.stderr.startswith("error: cannot connect to 127.0.0.1:1")


def test_mask_keeps_the_kind_and_hides_the_number() -> None:
    assert mask("U7654321") == "U7***21"
    assert mask("DU1") == "***"
