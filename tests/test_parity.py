"""Replay and paper mode make the same trades (``scripts/parity_test.py``, short): spy-sma-cross with market
orders and the offline analyst over 120 daily SPY bars of 2017, once through ``replay`` and once as a paper
trader against the simulator stepped bar by bar (real ib_async client, ``order_for_signal``, ``sync_orders``)."""

from __future__ import annotations

import datetime as dt

import pytest

from models.enums import ExitKind
from scripts.parity_test import run


@pytest.mark.slow
def test_replay_and_paper_mode_make_identical_orders_fills_exits_and_equity() -> None:
    parity = run(dt.date(2017, 1, 3), bars=120, warmup=300)
    replayed, paper = parity.replay, parity.paper
    # enough happened for the comparison to mean something: entries, brackets and every kind of exit
    assert len(replayed.orders) >= 5 and len(replayed.fills) >= 10
    assert {e[1] for e in replayed.exits} == {ExitKind.STOP, ExitKind.TARGET, ExitKind.SIGNAL}
    assert parity.differences() == [], parity.report()
    assert paper.orders == replayed.orders
    assert paper.fills == replayed.fills
    assert paper.exits == replayed.exits
    assert paper.end_equity == replayed.end_equity != 100_000
