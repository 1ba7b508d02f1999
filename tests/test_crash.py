"""The crash test (``scripts/crash_test.py``) in small: one iteration per kill point, every invariant holds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_killed_runs_recover_without_duplicates_or_lost_fills() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from scripts.crash_test import KILL_POINTS, run

    totals = run(len(KILL_POINTS), seed=7, quiet=True)
    assert totals.notes == []
    assert totals.duplicates == 0
    assert totals.unknown_at_broker == 0
    assert totals.fills_twice == 0
    assert totals.fills_lost == 0
    assert totals.not_terminal == 0
    assert totals.position_mismatches == 0
    # every planned kill really killed its child (the control run did not die)
    assert {k: totals.killed[k] for k in KILL_POINTS} == {k: int(k != "none") for k in KILL_POINTS}
    assert totals.outcomes == {"filled": len(KILL_POINTS)}
