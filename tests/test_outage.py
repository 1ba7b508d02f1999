"""The outage test (``scripts/outage_test.py``) in small: the simulator refuses connections far longer than the
old reconnect loop's give-up horizon (8 attempts; the backoff scaled down, injected), a warm worker in this
process keeps running, and a strategy run triggered after the outage completes and reaches the simulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import get_client

from services.broker.pacing import Backoff

OLD_ATTEMPTS = 8
FAST = Backoff(attempts=OLD_ATTEMPTS, base_s=0.05, max_s=0.25, jitter=0.2)  # old horizon here: under 2 s
OUTAGE_S = 8.0


@pytest.mark.prefect
@pytest.mark.postgres
@pytest.mark.slow
def test_a_warm_worker_trades_again_after_an_outage_longer_than_the_old_give_up(
    prefect_api: object, tmp_path: Path
) -> None:
    from scripts.outage_test import scenario, seed

    settings = seed(tmp_path / "trader")
    with get_client(sync_client=True) as client:
        result = scenario(client, settings, outage_s=OUTAGE_S, reconnect=FAST, trigger_every_s=60.0, run_timeout_s=300)
    report = "\n".join(result.lines())
    assert result.ok, report
    assert result.startup_reconcile == "Completed", report  # in-process: no reconcile deployment on this server
    assert result.before.startswith("Completed") and result.after.startswith("Completed"), report
    assert result.reconnect_attempts > OLD_ATTEMPTS, report  # the old loop would have given up long before
    assert (result.sessions_built, result.reconnects) == (1, 1), report  # the same session healed: no rebuild
    assert result.hist_at_end > result.hist_after_outage_end >= result.hist_before_outage >= 1, report
    assert result.worker_alive, report
