"""Strategy lifecycle at the edges (issue 12): activate / deactivate / delete reach the Prefect deployment at once,
the hourly `strategy-sync` flow converges what they could not reach, the strategy flow skips a deactivated or
deleted strategy before anything else, and `trader trigger` refuses a deactivated or unknown one.

All against the session's real PostgreSQL-backed Prefect server (``prefect_api``) and a real SQLite database
(the CLI's ``TRADER_DATA_DIR``). Every test removes the managed deployments it made (they live on the shared server).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from click.testing import Result
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import func, select

from deployments.sync import MANAGED_TAG
from services.db import session_scope
from services.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "strategies" / "spy-sma-cross.yaml"
NOT_REACHABLE = (
    "Prefect server not reachable: the deployment stays as it is until `trader deploy` or the next strategy-sync run"
)
SESSION_TIME = datetime(2017, 12, 29, 21, 5, tzinfo=UTC)  # Friday 16:05 New York: the market gate lets it run

pytestmark = [pytest.mark.postgres, pytest.mark.prefect, pytest.mark.slow]

Trader = Callable[..., Result]


@pytest.fixture
def client(prefect_api: Any) -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as sync_client:
        yield sync_client
        for dep in sync_client.read_deployments():  # leave the shared server as we found it
            if MANAGED_TAG in dep.tags and dep.name.startswith("life-"):
                sync_client.delete_deployment(dep.id)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def _settings(data_dir: Path) -> Settings:
    return load_settings({"TRADER_DATA_DIR": str(data_dir)})


def _create(trader: Trader, tmp_path: Path, name: str) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    created = trader("strategies", "create", "--file", str(path))
    assert created.exit_code == 0, created.output


def _active_in_db(data_dir: Path, name: str) -> bool | None:
    from services.repositories import strategies as repo

    with session_scope(_settings(data_dir).database_url()) as session:
        row = repo.get_by_name(session, name)
        return None if row is None else row.active


def _paused_and_schedules(client: SyncPrefectClient, name: str) -> tuple[bool, list[bool]]:
    dep = client.read_deployment_by_name(f"strategy-run/{name}")
    return bool(dep.paused), [s.active for s in dep.schedules]


def _closed_port_url() -> str:
    with socket.socket() as sock:  # bound, then closed: nothing listens there any more
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


def test_deactivate_pauses_activate_resumes_delete_removes_at_once(
    client: SyncPrefectClient, trader: Trader, tmp_path: Path, data_dir: Path
) -> None:
    _create(trader, tmp_path, "life-spy")
    deployed = trader("deploy")
    assert deployed.exit_code == 0, deployed.output
    assert _paused_and_schedules(client, "life-spy") == (False, [True])

    off = trader("strategies", "deactivate", "life-spy")
    assert off.exit_code == 0, off.output
    assert "deployment strategy-run/life-spy paused" in off.output
    assert _active_in_db(data_dir, "life-spy") is False
    assert _paused_and_schedules(client, "life-spy") == (True, [False])  # read back from the API

    on = trader("strategies", "activate", "life-spy")
    assert on.exit_code == 0, on.output
    assert "deployment strategy-run/life-spy resumed" in on.output
    assert _active_in_db(data_dir, "life-spy") is True
    assert _paused_and_schedules(client, "life-spy") == (False, [True])

    gone = trader("strategies", "delete", "life-spy")
    assert gone.exit_code == 0, gone.output
    assert "deployment strategy-run/life-spy removed" in gone.output
    assert _active_in_db(data_dir, "life-spy") is None
    with pytest.raises(ObjectNotFound):
        client.read_deployment_by_name("strategy-run/life-spy")


def test_unreachable_server_is_said_and_the_database_still_changes(
    client: SyncPrefectClient, trader: Trader, tmp_path: Path, data_dir: Path
) -> None:
    _create(trader, tmp_path, "life-offline")
    _create(trader, tmp_path, "life-doomed")
    assert trader("deploy").exit_code == 0
    with temporary_settings({PREFECT_API_URL: _closed_port_url()}):
        off = trader("strategies", "deactivate", "life-offline")
        gone = trader("strategies", "delete", "life-doomed")
    for result in (off, gone):
        assert result.exit_code == 0, result.output
        assert NOT_REACHABLE in result.output
        assert "paused" not in result.output and "removed" not in result.output
    assert _active_in_db(data_dir, "life-offline") is False
    assert _active_in_db(data_dir, "life-doomed") is None
    # the deployments stay as they were (stale) until the next sync
    assert _paused_and_schedules(client, "life-offline") == (False, [True])
    assert client.read_deployment_by_name("strategy-run/life-doomed").paused is False


def test_strategy_sync_flow_converges_stale_deployments_and_lists_them(
    client: SyncPrefectClient, trader: Trader, tmp_path: Path, data_dir: Path
) -> None:
    from deployments.maintenance import strategy_sync
    from services.runtime import Runtime, use_runtime

    for name in ("life-keep", "life-stale", "life-deleted"):
        _create(trader, tmp_path, name)
    assert trader("deploy").exit_code == 0
    with temporary_settings({PREFECT_API_URL: _closed_port_url()}):  # changes made while the server was away
        assert trader("strategies", "deactivate", "life-stale").exit_code == 0
        assert trader("strategies", "delete", "life-deleted").exit_code == 0
    assert _paused_and_schedules(client, "life-stale") == (False, [True])  # stale

    with use_runtime(Runtime(_settings(data_dir))):
        state = strategy_sync(return_state=True)
    assert state.is_completed(), state
    rows = state.result()
    assert {r["deployment"]: r["change"] for r in rows} == {
        "strategy-run/life-keep": "unchanged",
        "strategy-run/life-stale": "paused",
        "strategy-run/life-deleted": "removed",
    }
    assert _paused_and_schedules(client, "life-stale") == (True, [False])
    assert _paused_and_schedules(client, "life-keep") == (False, [True])
    with pytest.raises(ObjectNotFound):
        client.read_deployment_by_name("strategy-run/life-deleted")

    [artifact] = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["strategy-sync"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
        )
    )
    text = str(artifact.data)
    assert "strategy-run/life-stale | paused" in text and "strategy-run/life-deleted | removed" in text
    assert "unchanged 1" in text

    with use_runtime(Runtime(_settings(data_dir))):
        again = strategy_sync()
    assert {r["change"] for r in again} == {"unchanged"}  # converged: a second run writes nothing


class _NoBroker:
    """A broker factory that fails the run if the flow ever asks for a broker (no bars, no orders)."""

    calls = 0

    def __call__(self) -> object:
        type(self).calls += 1
        raise AssertionError("an inactive or deleted strategy must stop before any broker use")


@pytest.mark.parametrize(("stored", "message"), [("inactive", "Skipped: strategy inactive"), ("deleted", None)])
def test_strategy_run_of_an_inactive_or_deleted_strategy_is_skipped_and_orders_nothing(
    client: SyncPrefectClient, tmp_path: Path, stored: str, message: str | None
) -> None:
    from flows.strategy import strategy_run
    from models.tables import Order, Signal
    from services import strategies as store
    from services.db import init_database
    from services.repositories import strategies as repo
    from services.runtime import Runtime, use_runtime

    settings = _settings(tmp_path / "data")
    init_database(settings)
    definition = store.load_strategy_file(EXAMPLE)
    with session_scope(settings.database_url()) as session:
        store.save_definition(session, definition.model_copy(update={"active": False}))
        if stored == "deleted":
            repo.delete(session, definition.name)
    _NoBroker.calls = 0
    with use_runtime(Runtime(settings, broker_factory=_NoBroker(), clock=lambda: SESSION_TIME)):  # type: ignore[arg-type]
        state = strategy_run(definition.name, return_state=True)
    expected = message or "Skipped: strategy deleted"
    assert state.is_completed(), state
    assert (state.name, state.message) == ("Skipped", expected)
    stored_state = client.read_flow_run(state.state_details.flow_run_id).state  # what the UI shows
    assert stored_state is not None and (stored_state.type.value, stored_state.name) == ("COMPLETED", "Skipped")
    assert stored_state.message == expected
    assert _NoBroker.calls == 0
    with session_scope(settings.database_url()) as session:
        assert session.scalar(select(func.count()).select_from(Signal)) == 0
        assert session.scalar(select(func.count()).select_from(Order)) == 0


def test_trigger_refuses_a_deactivated_or_unknown_strategy(
    client: SyncPrefectClient, trader: Trader, tmp_path: Path
) -> None:
    _create(trader, tmp_path, "life-trig")
    assert trader("deploy").exit_code == 0

    active = trader("trigger", "life-trig", "--bar-time", "2017-12-29T16:00-05:00")
    assert active.exit_code == 0, active.output  # the control: an active strategy is triggered
    assert "life-trig: flow run" in active.output
    run_id = active.output.split("flow run ")[1].split()[0]
    client.delete_flow_run(UUID(run_id))

    assert trader("strategies", "deactivate", "life-trig").exit_code == 0
    refused = trader("trigger", "life-trig", "--bar-time", "2017-12-28T16:00-05:00")
    assert refused.exit_code == 2, refused.output
    assert "strategy 'life-trig' is deactivated" in refused.output
    assert "trader strategies activate life-trig" in refused.output
    assert "flow run" not in refused.output

    unknown = trader("trigger", "life-nope")
    assert unknown.exit_code == 2, unknown.output
    assert "no strategy named 'life-nope'" in unknown.output


def test_trader_run_says_why_a_deactivated_strategy_was_skipped(
    client: SyncPrefectClient, trader: Trader, tmp_path: Path, data_dir: Path
) -> None:
    from services.runtime import Runtime, use_runtime

    _create(trader, tmp_path, "life-run")
    assert trader("strategies", "deactivate", "life-run").exit_code == 0
    _NoBroker.calls = 0
    runtime = Runtime(_settings(data_dir), broker_factory=_NoBroker(), clock=lambda: SESSION_TIME)  # type: ignore[arg-type]
    with use_runtime(runtime):
        skipped = trader("run", "life-run")
        unknown = trader("run", "life-nope")
    assert skipped.exit_code == 0, skipped.output
    assert "life-run: Skipped: strategy inactive; nothing fetched or ordered" in skipped.output
    assert _NoBroker.calls == 0
    assert unknown.exit_code == 2, unknown.output  # a typo is bad input, not a "Skipped" run
    assert "no strategy named 'life-nope'" in unknown.output
