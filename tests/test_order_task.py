"""The order step of the strategy flow (size -> gate -> submit), in dry-run mode on a MemoryBroker."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import pandas as pd
import pytest

from models.enums import AnalystKind, BadRowPolicy, BarSize, OrderStatus, OrderType, RunMode, SignalAction, SizingMethod
from models.strategy import StrategyDefinition
from services.bars.validation import ValidationResult
from services.broker.loop_owner import SyncBroker
from services.broker.memory import MemoryBroker, stock
from services.db import session_scope
from services.orders.monitor import reconcile, record_executions, sync_orders
from services.positions import rebuild
from services.repositories import fills as fills_repo
from services.repositories import orders as orders_repo
from services.repositories import signals, trading_state
from services.runtime import Runtime, get_runtime, use_runtime
from services.settings import load_settings
from services.signals import Signal
from services.strategies import load_strategy_file
from tasks.market_data import MarketData
from tasks.orders import order_for_signal
from tasks.signal import StoredSignal
from tests.orders_support import store_strategy

ROOT = Path(__file__).resolve().parents[1]
SPY = stock("SPY", 756733)
START = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
NOW = dt.datetime(2024, 6, 3, 15, 0, tzinfo=dt.UTC)  # Monday 11:00 New York


def daily(n: int = 30) -> pd.DataFrame:
    closes = [100.0 + i for i in range(n)]
    return pd.DataFrame(
        {
            "timestamp": pd.DatetimeIndex([START + dt.timedelta(days=i) for i in range(n)]),
            "open": closes,
            "high": [c + 2 for c in closes],
            "low": [c - 2 for c in closes],
            "close": closes,
            "volume": [1e6] * n,
        }
    )


def market_data(frame: pd.DataFrame) -> MarketData:
    validation = ValidationResult(frame, [], BadRowPolicy.FLAG, BarSize.DAY_1, len(frame), 0, 0, 0, 0.0, 0.0)
    return MarketData(frame=frame, validation=validation)


@pytest.fixture
def definition() -> StrategyDefinition:
    """The example strategy; its signals here are days old at NOW, so they stay valid for 7 bars."""
    base = load_strategy_file(ROOT / "examples" / "strategies" / "spy-sma-cross.yaml")
    return base.model_copy(update={"risk": base.risk.model_copy(update={"order_expiry_bars": 7})})


@pytest.fixture
def runtime(db_url: str, tmp_path: Path) -> Iterator[Runtime]:
    settings = load_settings({}, data_dir=tmp_path, database={"url": db_url})
    with use_runtime(Runtime(settings, clock=lambda: NOW)) as rt:
        yield rt


@pytest.fixture
def broker() -> Iterator[SyncBroker]:
    memory = MemoryBroker([SPY], {"SPY": daily()})
    memory.clock.set(NOW)
    sync = SyncBroker(lambda: memory)
    sync.connect()
    yield sync
    sync.close()


def stored(
    action: SignalAction,
    entry: str = "129.5",
    stop: str | None = "125",
    days: int = 29,
    strategy: str = "spy-sma-cross",
) -> StoredSignal:
    bar_time = START + dt.timedelta(days=days)
    signal = Signal(action, "test", AnalystKind.OFFLINE, bar_time, 0.7, D(entry), D(stop) if stop else None, None)
    from services.runtime import get_runtime

    with session_scope(get_runtime().database_url) as s:
        row = signals.record(
            s,
            strategy_name=strategy,
            symbol="SPY",
            bar_time=bar_time,
            action=action,
            analyst=AnalystKind.OFFLINE,
            reason="test",
        )
        return StoredSignal(row.id, signal)


def run(definition: StrategyDefinition, broker: SyncBroker, signal: StoredSignal, *, now: dt.datetime = NOW):  # type: ignore[no-untyped-def]
    """The order step for ``signal``, with ``definition`` stored as it is (the send-time gate reads the stored one)."""
    from services.runtime import get_runtime

    store_strategy(get_runtime().database_url, definition)
    return order_for_signal(definition, SPY, market_data(daily()), signal, broker=broker, dry_run=True, now=now)


def test_buy_is_sized_by_risk_capped_and_rounded(
    runtime: Runtime, definition: StrategyDefinition, broker: SyncBroker
) -> None:
    result = run(definition, broker, stored(SignalAction.BUY, entry="129.537"))
    with session_scope(runtime.database_url) as s:
        row = orders_repo.get(s, result.order_id)
        assert row is not None
        # equity 1,000,000 x 0.005 = 5000 at risk / (129.537 - 125) per share = 1102.05 shares, capped by the
        # strategy's max notional 25000 / 129.537 = 192.99 -> 192 (rounded down); max position 200 allows it
        assert row.quantity == D(192)
        assert row.limit_price == D("129.53")  # BUY limit rounded down to the tick
        assert row.order_type is OrderType.LIMIT
        assert row.run_mode is RunMode.DRY_RUN and orders_repo.is_dry_run(row)
    assert result.status is OrderStatus.FILLED and result.sent  # limit 129.53 above the last close 129


def test_a_buy_while_long_is_refused_no_pyramiding(
    runtime: Runtime, definition: StrategyDefinition, broker: SyncBroker
) -> None:
    # One position per strategy (services.orders.planning): a second BUY on the long is not sized at all, even
    # when the position limit would allow it (until the unified rule, it was sized and max_position capped it)
    sizing = definition.risk.sizing.model_copy(update={"method": SizingMethod.FIXED_QUANTITY, "quantity": D(50)})
    fixed = definition.model_copy(update={"risk": definition.risk.model_copy(update={"sizing": sizing})})
    first = run(fixed, broker, stored(SignalAction.BUY, days=28))
    assert first.status is OrderStatus.FILLED
    # the dry-run fill was recorded by the order step itself: no monitor run needed before the next decision
    result = run(fixed, broker, stored(SignalAction.BUY))  # 50 held + 50 more would be within max position 200
    assert result.status is OrderStatus.RISK_REJECTED and not result.sent
    assert result.reasons == ("pyramiding: already long 50: no pyramiding",)
    assert [o.order_ref for o in broker.completed_orders()] == [first.key]
    # what still works at the broker is the first entry's protective stop (the signal carried no target)
    assert [(o.order_ref, o.quantity, o.stop_price) for o in broker.open_orders()] == [(f"{first.key}:SL", 50, 125)]


def test_the_position_rule_counts_the_strategy_s_own_fills(
    runtime: Runtime, definition: StrategyDefinition, broker: SyncBroker
) -> None:
    small = fixed_quantity(definition, 10)
    assert run(small, broker, stored(SignalAction.BUY, days=28)).status is OrderStatus.FILLED
    other = small.model_copy(update={"name": "spy-other"})
    # the account is long 10 SPY, but not this strategy: its BUY opens its own position
    second = run(other, broker, stored(SignalAction.BUY, strategy="spy-other"))
    assert second.status is OrderStatus.FILLED and second.sent
    # and a SELL of the first strategy closes its 10, not the account's 20
    close = run(small, broker, stored(SignalAction.SELL, entry="128.5", stop="135", days=29))
    with session_scope(runtime.database_url) as s:
        row = orders_repo.get(s, close.order_id)
        assert row is not None and row.quantity == 10 and close.status is OrderStatus.FILLED


def test_fixed_quantity_buy_then_rerun_is_idempotent(
    runtime: Runtime, definition: StrategyDefinition, broker: SyncBroker
) -> None:
    sizing = definition.risk.sizing.model_copy(update={"method": SizingMethod.FIXED_QUANTITY, "quantity": D(10)})
    small = definition.model_copy(update={"risk": definition.risk.model_copy(update={"sizing": sizing})})
    first = run(small, broker, stored(SignalAction.BUY))
    assert first.status is OrderStatus.FILLED and first.sent  # limit 129.50 above the last close 129
    second = run(small, broker, stored(SignalAction.BUY))
    assert second.reused and second.order_id == first.order_id
    assert [o.order_ref for o in broker.completed_orders()] == [first.key]
    assert [(o.order_ref, o.quantity) for o in broker.open_orders()] == [(f"{first.key}:SL", 10)]  # sent once


def test_kill_switch_and_closed_market_refuse(
    runtime: Runtime, definition: StrategyDefinition, broker: SyncBroker
) -> None:
    with session_scope(runtime.database_url) as s:
        trading_state.set_kill_switch(s, True, "halted by test")
    saturday = dt.datetime(2024, 6, 1, 15, 0, tzinfo=dt.UTC)
    result = run(definition, broker, stored(SignalAction.BUY, days=27), now=saturday)
    assert result.status is OrderStatus.RISK_REJECTED
    failed = {r.split(":")[0] for r in result.reasons}
    assert failed == {"kill_switch", "market_open"}


def test_a_signal_older_than_its_validity_expires_unsent(
    runtime: Runtime, definition: StrategyDefinition, broker: SyncBroker
) -> None:
    one_bar = definition.model_copy(update={"risk": definition.risk.model_copy(update={"order_expiry_bars": 1})})
    # the daily bar of Thursday 2024-05-30, one bar of validity: until the close of the next session (Friday
    # 05-31, 16:00 New York = 20:00 UTC); NOW is Monday 06-03
    result = run(one_bar, broker, stored(SignalAction.BUY, days=29))
    assert result.status is OrderStatus.EXPIRED and not result.sent
    assert [r.split(":")[0] for r in result.reasons] == ["signal_valid"]
    assert "2024-05-31T20:00:00+00:00" in result.reasons[0]
    assert not broker.open_orders() and not broker.completed_orders()
    # Friday's bar (05-31) is still valid on Monday: a weekend is no bar
    fresh = run(one_bar, broker, stored(SignalAction.BUY, days=30), now=dt.datetime(2024, 6, 3, 15, tzinfo=dt.UTC))
    assert fresh.status is OrderStatus.FILLED and fresh.sent


def test_unsizeable_order_is_stored_as_refusal(
    runtime: Runtime, definition: StrategyDefinition, broker: SyncBroker
) -> None:
    result = run(definition, broker, stored(SignalAction.BUY, stop="130"))  # stop above a BUY entry
    assert result.status is OrderStatus.RISK_REJECTED
    assert result.reasons and result.reasons[0].startswith("sizing: ")
    with session_scope(runtime.database_url) as s:
        row = orders_repo.get(s, result.order_id)
        assert row is not None and row.quantity == 0


def test_hold_has_no_order(runtime: Runtime, definition: StrategyDefinition, broker: SyncBroker) -> None:
    with pytest.raises(ValueError, match="no order"):
        run(definition, broker, stored(SignalAction.HOLD))


def fresh_broker() -> SyncBroker:
    memory = MemoryBroker([SPY], {"SPY": daily()})
    memory.clock.set(NOW)
    sync = SyncBroker(lambda: memory)
    sync.connect()
    return sync


def fixed_quantity(definition: StrategyDefinition, quantity: int) -> StrategyDefinition:
    sizing = definition.risk.sizing.model_copy(update={"method": SizingMethod.FIXED_QUANTITY, "quantity": D(quantity)})
    return definition.model_copy(update={"risk": definition.risk.model_copy(update={"sizing": sizing})})


def test_dry_run_fills_update_positions_at_once_across_runs(runtime: Runtime, definition: StrategyDefinition) -> None:
    small = fixed_quantity(definition, 10)
    # each run has its own in-memory broker, whose execution ids start over: both fills must still be stored
    first_broker, second_broker = fresh_broker(), fresh_broker()
    try:
        first = run(small, first_broker, stored(SignalAction.BUY, days=27))
        second = run(small, second_broker, stored(SignalAction.SELL, entry="128.5", stop="135", days=28))
        assert first.status is OrderStatus.FILLED and second.status is OrderStatus.FILLED
        assert first_broker.executions()[0].exec_id == second_broker.executions()[0].exec_id
    finally:
        first_broker.close()
        second_broker.close()
    with session_scope(runtime.database_url) as s:
        fills = fills_repo.effective(s)
        assert sorted(f.order_id for f in fills) == [first.order_id, second.order_id]  # type: ignore[type-var]
        assert all(f.ib_perm_id is None and f.exec_id.startswith("dry.") for f in fills)
        [position] = rebuild(s).values()
        assert position.quantity == D(0) and position.symbol == "SPY"  # the second run saw the first's long


def test_working_dry_run_order_is_not_looked_up_at_the_real_broker(
    runtime: Runtime, definition: StrategyDefinition, broker: SyncBroker
) -> None:
    small = fixed_quantity(definition, 10)
    # flat while the first is working (the plan counts filled positions; the gate adds working orders)
    working = run(small, broker, stored(SignalAction.BUY, entry="100", stop="95", days=27))  # limit 100 << 129
    filled = run(small, broker, stored(SignalAction.BUY))
    assert filled.status is OrderStatus.FILLED and working.status is OrderStatus.SUBMITTED
    real = fresh_broker()  # the "real" broker never saw either order and holds no position
    try:
        wall = dt.datetime.now(dt.UTC)  # submitted_at is wall-clock time
        report = sync_orders(runtime.database_url, real, wall, {"spy-sma-cross": 60})
        # the working entry and both entries' stops (protective children wait for their price, no timeout)
        assert report.skipped_dry_run == 3 and report.updated == 0 and report.cancelled_for_timeout == []
        checked = reconcile(runtime.database_url, real, NOW)
        assert checked.ok, checked  # the dry-run position (10) is not a difference with the broker's 0
        assert checked.adopted_external == [] and checked.reset_to_created == []
        with session_scope(runtime.database_url) as s:
            row = orders_repo.get(s, working.order_id)
            assert row is not None and row.status is OrderStatus.SUBMITTED
        # past the strategy's limit timeout the dry-run order is cancelled in the DB, without a broker call
        later = sync_orders(runtime.database_url, real, wall + dt.timedelta(minutes=61), {"spy-sma-cross": 60})
        assert later.cancelled_for_timeout == [working.key]
        assert real.open_orders() == [] and real.completed_orders() == []
    finally:
        real.close()
    with session_scope(runtime.database_url) as s:
        row = orders_repo.get(s, working.order_id)
        assert row is not None and row.status is OrderStatus.CANCELLED
        # the unfilled entry took its stop with it; the filled entry's stop still protects its 10 shares
        assert [(c.idempotency_key, c.status) for c in orders_repo.children(s, working.order_id)] == [
            (f"{working.key}:SL", OrderStatus.CANCELLED)
        ]
        assert [c.status for c in orders_repo.children(s, filled.order_id)] == [OrderStatus.SUBMITTED]


def test_real_executions_never_link_to_a_dry_run_order_by_perm_id(
    runtime: Runtime, definition: StrategyDefinition, broker: SyncBroker
) -> None:
    filled = run(fixed_quantity(definition, 10), broker, stored(SignalAction.BUY))
    with session_scope(runtime.database_url) as s:
        row = orders_repo.get(s, filled.order_id)
        assert row is not None and row.ib_perm_id is not None
        perm_id = row.ib_perm_id  # the in-memory broker's permId, which a real broker may also hand out
    [dry_fill] = broker.executions()
    real = dataclasses.replace(dry_fill, exec_id="0000real.00000001.01.01", order_ref="", perm_id=perm_id)
    assert record_executions(runtime.database_url, [real]) == 1
    with session_scope(runtime.database_url) as s:
        stored_fill = fills_repo.get(s, real.exec_id)
        assert stored_fill is not None and stored_fill.order_id is None
        assert orders_repo.get_by_perm_id(s, perm_id) is None
        assert orders_repo.get_by_perm_id(s, perm_id, include_dry_run=True) is not None


def test_entry_is_a_bracket_and_a_sell_on_the_long_closes_it_and_its_protection(
    runtime: Runtime, definition: StrategyDefinition, broker: SyncBroker
) -> None:
    small = fixed_quantity(definition, 10)
    buy = stored(SignalAction.BUY, days=28)
    buy = StoredSignal(buy.id, dataclasses.replace(buy.signal, target=D("140.004")))
    entry = run(small, broker, buy)
    assert entry.status is OrderStatus.FILLED
    assert sorted((o.order_ref, o.quantity, o.limit_price, o.stop_price) for o in broker.open_orders()) == [
        (f"{entry.key}:SL", 10, None, D(125)),
        (f"{entry.key}:TP", 10, D("140.01"), None),  # a SELL exit rounded up to the tick
    ]
    # a SELL signal on the long position: the whole position is sold (not the sizing rule's 10 by chance: the
    # sizing is changed to 3), and what protected it is cancelled
    close = run(fixed_quantity(definition, 3), broker, stored(SignalAction.SELL, entry="128.5", stop="135"))
    assert close.status is OrderStatus.FILLED and close.sent
    with session_scope(runtime.database_url) as s:
        row = orders_repo.get(s, close.order_id)
        assert row is not None and (row.quantity, row.parent_id) == (10, None)
        assert orders_repo.children(s, close.order_id) == []  # a close carries no bracket
        assert [(c.idempotency_key, c.status) for c in orders_repo.children(s, entry.order_id)] == [
            (f"{entry.key}:TP", OrderStatus.CANCELLED),
            (f"{entry.key}:SL", OrderStatus.CANCELLED),
        ]
        [position] = rebuild(s).values()
        assert position.quantity == 0
    assert broker.open_orders() == []  # the close's OCA group cancelled them at the broker too


def test_a_dry_run_stop_left_working_fills_on_a_later_run_and_cancels_the_target(
    runtime: Runtime, definition: StrategyDefinition
) -> None:
    """Each dry run has its own in-memory broker, gone after the run: the next run works the protection the
    earlier one left (from the entry's fill on), so a stop hit in between closes the position, as in the replay."""
    small = fixed_quantity(definition, 10)
    store_strategy(runtime.database_url, small)

    def fresh(frame: pd.DataFrame, now: dt.datetime) -> SyncBroker:  # what the order step builds for each run
        memory = MemoryBroker([SPY], {"SPY": frame})
        memory.clock.set(now)
        sync = SyncBroker(lambda: memory)
        sync.connect()
        return sync

    first = fresh(daily(), NOW)
    buy = stored(SignalAction.BUY, days=28)
    buy = StoredSignal(buy.id, dataclasses.replace(buy.signal, target=D("140")))
    entry = order_for_signal(small, SPY, market_data(daily()), buy, broker=first, dry_run=True, now=NOW)
    first.close()
    assert entry.status is OrderStatus.FILLED
    later = pd.concat(
        [
            daily(),
            pd.DataFrame(
                {  # Mon 06-03: stop 125 and target 140 untouched; Tue 06-04: opens 128, trades down to 120
                    "timestamp": pd.DatetimeIndex(
                        [dt.datetime(2024, 6, 3, tzinfo=dt.UTC), dt.datetime(2024, 6, 4, tzinfo=dt.UTC)]
                    ),
                    "open": [129.0, 128.0],
                    "high": [131.0, 129.0],
                    "low": [127.0, 120.0],
                    "close": [130.0, 121.0],
                    "volume": [1e6, 1e6],
                }
            ),
        ],
        ignore_index=True,
    )
    then = dt.datetime(2024, 6, 5, 15, 0, tzinfo=dt.UTC)
    second = fresh(later, then)
    again = stored(SignalAction.BUY, entry="121.5", stop="118", days=34)
    rebuy = order_for_signal(small, SPY, market_data(later), again, broker=second, dry_run=True, now=then)
    second.close()
    with session_scope(runtime.database_url) as s:
        tp, sl = orders_repo.children(s, entry.order_id)
        assert (tp.idempotency_key, tp.status) == (f"{entry.key}:TP", OrderStatus.CANCELLED)
        assert (sl.idempotency_key, sl.status, sl.filled_quantity) == (f"{entry.key}:SL", OrderStatus.FILLED, 10)
        [exit_fill] = fills_repo.for_orders(s, [sl.id])
        assert (exit_fill.price, exit_fill.quantity) == (D(125), D(10))  # min(open 128, stop 125)
        assert exit_fill.executed_at == dt.datetime(2024, 6, 4, 20, 0, tzinfo=dt.UTC)  # the bar's close, 16:00 NY
    # the stop closed the position, so the new BUY is an entry again (not refused as pyramiding on a long)
    assert rebuy.status is OrderStatus.FILLED, rebuy.reasons
    with session_scope(runtime.database_url) as s:
        [position] = rebuild(s).values()
        assert position.quantity == 10


def _dry_run_entry(definition: StrategyDefinition) -> tuple[int, str]:
    """A dry-run BUY of the stored ``definition`` at NOW: 10 @ 129 (the last close), stop 125, target 140."""
    store_strategy(get_runtime().database_url, definition)
    first = fresh_broker()
    buy = stored(SignalAction.BUY, days=28)
    buy = StoredSignal(buy.id, dataclasses.replace(buy.signal, target=D("140")))
    entry = order_for_signal(definition, SPY, market_data(daily()), buy, broker=first, dry_run=True, now=NOW)
    first.close()
    assert entry.status is OrderStatus.FILLED
    return entry.order_id, entry.key


def _later(bars: list[tuple[str, float, float, float, float]]) -> tuple[pd.DataFrame, dt.datetime, SyncBroker]:
    """The bars after NOW's (date, OHLC), a time on the session after the last, and that run's in-memory broker."""
    stamps = [dt.datetime.fromisoformat(d).replace(tzinfo=dt.UTC) for d, *_ in bars]
    extra = pd.DataFrame(
        {
            "timestamp": pd.DatetimeIndex(stamps),
            **{col: [b[k + 1] for b in bars] for k, col in enumerate(("open", "high", "low", "close"))},
            "volume": [1e6] * len(bars),
        }
    )
    frame = pd.concat([daily(), extra], ignore_index=True)
    now = stamps[-1] + dt.timedelta(days=1, hours=15)  # 11:00 New York the next day
    memory = MemoryBroker([SPY], {"SPY": frame})
    memory.clock.set(now)
    sync = SyncBroker(lambda: memory)
    sync.connect()
    return frame, now, sync


def _children(entry_id: int) -> list[tuple[str, OrderStatus, D, D | None]]:
    with session_scope(get_runtime().database_url) as s:
        return [
            (c.idempotency_key.rsplit(":", 1)[1], c.status, c.filled_quantity, c.avg_fill_price)
            for c in orders_repo.children(s, entry_id)
        ]


def test_a_dry_run_time_exit_closes_the_position_on_a_hold_run_and_cancels_its_bracket(
    runtime: Runtime, definition: StrategyDefinition
) -> None:
    """max_holding_bars 3: the entry filled during Monday's session (NOW); after Wednesday's bar it has been held 3
    bars, so the HOLD run's time-exit step sells the 10 at market (key ``...:SELL:time``); the stop and target go."""
    from tasks.orders import time_exit_for

    timed = fixed_quantity(definition, 10)
    timed = timed.model_copy(update={"risk": timed.risk.model_copy(update={"max_holding_bars": 3})})
    entry_id, _key = _dry_run_entry(timed)
    bars = [("2024-06-03", 129, 131, 128.5, 130), ("2024-06-04", 130, 132, 129, 131)]
    frame, now, broker = _later(bars)  # held 2 bars: nothing due
    assert time_exit_for(timed, SPY, market_data(frame), broker=broker, dry_run=True, now=now) is None
    broker.close()
    frame, now, broker = _later([*bars, ("2024-06-05", 131, 133, 130.5, 132)])
    result = time_exit_for(timed, SPY, market_data(frame), broker=broker, dry_run=True, now=now)
    broker.close()
    assert result is not None and result.key == "spy-sma-cross:SPY:20240605T0000:SELL:time"
    assert result.status is OrderStatus.FILLED and result.sent
    with session_scope(runtime.database_url) as s:
        row = orders_repo.get(s, result.order_id)
        assert row is not None and (row.side.value, row.quantity, row.order_type) == ("SELL", 10, OrderType.MARKET)
        [position] = rebuild(s).values()
        assert position.quantity == 0
    assert _children(entry_id) == [("TP", OrderStatus.CANCELLED, 0, None), ("SL", OrderStatus.CANCELLED, 0, None)]


def test_a_dry_run_trailing_stop_follows_the_bars_and_fills_above_its_start(
    runtime: Runtime, definition: StrategyDefinition
) -> None:
    """TRAIL 5 from the signal's stop 125: Monday's high 131 moves it to 126, Tuesday's 135 to 130; Wednesday trades
    down to 129.5 and the next run's protection step fills it at 130 (a fixed stop at 125 would still be working)."""
    from models.strategy import TrailingStop
    from tasks.orders import time_exit_for

    trailing = fixed_quantity(definition, 10)
    trailing = trailing.model_copy(
        update={
            "risk": trailing.risk.model_copy(
                update={"trailing_stop": TrailingStop(amount=D(5)), "max_holding_bars": 50}
            )
        }
    )
    entry_id, _key = _dry_run_entry(trailing)
    with session_scope(runtime.database_url) as s:
        sl = orders_repo.children(s, entry_id)[1]
        assert (sl.order_type, sl.stop_price, sl.trail_amount) == (OrderType.TRAIL, D(125), D(5))
    frame, now, broker = _later(
        [("2024-06-03", 129, 131, 128.5, 130), ("2024-06-04", 130, 135, 129, 134), ("2024-06-05", 131, 132, 129.5, 131)]
    )
    assert time_exit_for(trailing, SPY, market_data(frame), broker=broker, dry_run=True, now=now) is None
    broker.close()
    assert _children(entry_id) == [("TP", OrderStatus.CANCELLED, 0, None), ("SL", OrderStatus.FILLED, 10, D(130))]
