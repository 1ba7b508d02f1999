"""The kill switch from the Prefect UI: the ``kill-switch`` flow (what its deployment runs) on the session's
PostgreSQL-backed Prefect server, against a MemoryBroker standing in for the order-owning broker session."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from prefect.artifacts import Artifact

from models.enums import OrderStatus
from services.broker.loop_owner import SyncBroker
from services.broker.memory import MemoryBroker
from services.db import init_database, session_scope
from services.orders import kill_switch
from services.orders.submit import submit_order
from services.repositories import orders as orders_repo
from services.repositories import trading_state
from services.runtime import Runtime, use_runtime
from services.settings import load_settings
from tests.orders_support import BAR0, SPY, bars, send_ctx, store_strategy
from tests.test_send_gate import order

pytestmark = [pytest.mark.postgres, pytest.mark.prefect, pytest.mark.slow]
NOW = BAR0 + dt.timedelta(minutes=50)


def test_the_kill_switch_flow_engages_cancels_and_releases(prefect_api: object, tmp_path: Path) -> None:
    from flows.orders import kill_switch_flow

    settings = load_settings({"TRADER_DATA_DIR": str(tmp_path)}, trading={"dry_run": False})
    init_database(settings)
    db_url = settings.database_url()
    store_strategy(db_url)
    mb = MemoryBroker([SPY], {"SPY": bars()})
    mb.clock.set(NOW)
    with SyncBroker(lambda: mb) as sync:
        working = submit_order(db_url, sync, SPY, order(40), send_ctx(NOW, dry_run=False))
        assert working.status is OrderStatus.SUBMITTED
    with use_runtime(Runtime(settings, broker_factory=lambda: mb, clock=lambda: NOW)) as runtime:
        ended = kill_switch_flow(engage=True, reason="from the UI", cancel_all=True)
        runtime.close()
        assert ended == [working.key]
        with session_scope(db_url) as s:
            assert trading_state.get_kill_switch(s).reason == "from the UI"
            row = orders_repo.get(s, working.order_id)
            assert row is not None and row.status is OrderStatus.CANCELLED
        kill_switch_flow(engage=False, reason="checked")
        runtime.close()
    [released, engaged] = kill_switch.history(db_url)
    assert (engaged.engaged, engaged.reason, released.engaged) == (True, "from the UI", False)
    assert engaged.changed_by is not None and engaged.changed_by.startswith("prefect flow run ")
    artifact = Artifact.get("kill-switch-history")
    assert artifact is not None and "from the UI" in str(artifact.data) and "released" in str(artifact.data)
