"""Replay and paper mode make the same trades (``scripts/parity_test.py``, short): spy-sma-cross with the offline
analyst over daily SPY bars, once through ``replay`` and once as a paper trader against the simulator stepped bar
by bar (real ib_async client, ``order_for_signal``, ``time_exit_for``, ``sync_orders``): as shipped (DAY limits),
and with market orders plus a time exit after 12 bars (``risk.max_holding_bars``) and a 2 % trailing stop
(``risk.trailing_stop``)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from models.enums import ExitKind, OrderType
from scripts.parity_test import run


@pytest.mark.slow
@pytest.mark.parametrize(
    ("order_type", "held", "trail", "start", "bars", "kinds"),
    [
        (None, None, None, dt.date(2017, 1, 3), 120, {ExitKind.STOP, ExitKind.TARGET, ExitKind.SIGNAL}),  # as shipped
        (OrderType.MARKET, 12, Decimal(2), dt.date(2011, 1, 3), 60, {ExitKind.STOP, ExitKind.TARGET, ExitKind.TIME}),
    ],
)
def test_replay_and_paper_mode_make_identical_orders_fills_exits_and_equity(
    order_type: OrderType | None,
    held: int | None,
    trail: Decimal | None,
    start: dt.date,
    bars: int,
    kinds: set[ExitKind],
) -> None:
    parity = run(start, bars=bars, warmup=300, order_type=order_type, max_holding_bars=held, trailing_percent=trail)
    replayed, paper = parity.replay, parity.paper
    # enough happened for the comparison to mean something: entries, brackets and the kinds of exit
    assert len(replayed.orders) >= 5 and len(replayed.fills) >= 10
    assert {e[1] for e in replayed.exits} == kinds
    assert parity.differences() == [], parity.report()
    assert paper.orders == replayed.orders
    assert paper.fills == replayed.fills
    assert paper.exits == replayed.exits
    assert paper.end_equity == replayed.end_equity != 100_000
    if trail is not None:  # the trailing stop moved: some long left at its stop above where that stop started
        entries = [o for o in replayed.orders if o[5] is not None]
        trailed = [e for o, e in zip(entries, replayed.exits, strict=False) if e[1] is ExitKind.STOP and e[3] > o[5]]
        assert trailed, replayed.exits
