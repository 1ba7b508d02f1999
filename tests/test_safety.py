"""The randomized safety test (``scripts/safety_test.py``), short: a few runs on SQLite and on PostgreSQL with
the real ib_async client against the simulator. The full figure (N=200) is in the README."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.safety_test import INVARIANTS, run
from tests.pg import PgCluster


def _assert_safe_and_exercised(totals: object) -> None:
    from scripts.safety_test import Totals

    assert isinstance(totals, Totals)
    assert {name: totals.violations[name] for name in INVARIANTS} == dict.fromkeys(INVARIANTS, 0), totals.examples
    assert totals.sent > 0  # orders did reach the broker ...
    refused = sum(v for k, v in totals.outcomes.items() if k in ("signal: risk_rejected", "order ended risk_rejected"))
    assert refused > 0  # ... and the gate refused others: both sides of every invariant were exercised
    assert totals.outcomes["recover: error"] == 0  # every run's fills were checked after a clean reconcile
    assert totals.actions["halt"] > 0 and totals.actions["crash (SIGKILL)"] > 0


@pytest.mark.slow
def test_safety_invariants_hold_on_sqlite() -> None:
    _assert_safe_and_exercised(run(3, seed=11, steps=30, quiet=True))


@pytest.mark.slow
@pytest.mark.postgres
def test_safety_invariants_hold_on_postgresql(pg_cluster: PgCluster) -> None:
    def make_db(i: int, _tmp: Path) -> str:
        url, _ = pg_cluster.create_database(f"safety_test_{i}")
        return url

    _assert_safe_and_exercised(run(2, seed=12, steps=30, quiet=True, make_db=make_db))
