"""The one send path (``services.orders.submit.send``): the full risk gate re-runs at every send, with fresh
context, under the send lock; halt, deactivation, expiry and limits hold on the retry path too.

Each test sets up the hole it closes (issue 12) against a MemoryBroker standing in for a real broker (not a dry
run) and a real database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterator
from decimal import Decimal as D
from typing import Any

import pytest

from models.enums import OrderSide, OrderStatus, OrderType, SecType
from models.tables import Order
from services.broker.loop_owner import SyncBroker
from services.broker.memory import MemoryBroker, stock
from services.broker.types import ContractInfo, OrderRequest, Quote
from services.db import session_scope
from services.errors import BrokerConnectionError, InputError, StopError
from services.orders import kill_switch
from services.orders.monitor import (
    OrderInstrument,
    cancel_by_id,
    record_executions,
    retry_contract,
    retry_orders,
    sync_orders,
)
from services.orders.send_lock import send_lock
from services.orders.submit import OrderIntent, SubmitResult, submit_order
from services.repositories import orders as orders_repo
from services.repositories import strategies as strategies_repo
from services.repositories import trading_state
from services.settings import TradingSettings
from services.symbols import store as store_contract
from tests.orders_support import BAR0, NOW, SPY, bars, memory_broker, send_ctx, store_strategy, strategy

CTX = send_ctx(NOW, dry_run=False)  # the MemoryBroker stands in for a real broker
AAPL = stock("AAPL", 265598, primary_exchange="NASDAQ")


@pytest.fixture
def world() -> Iterator[tuple[MemoryBroker, SyncBroker]]:
    yield from memory_broker(also=[(AAPL, bars(price=190.0))])


def order(
    minute: int = 45,
    *,
    name: str = "spy-test",
    side: OrderSide = OrderSide.BUY,
    qty: int = 10,
    limit: str | None = "50.00",
    valid_for: dt.timedelta = dt.timedelta(hours=6),
    symbol: str = "SPY",
) -> OrderIntent:
    bar = BAR0 + dt.timedelta(minutes=minute)
    return OrderIntent(name, symbol, side, D(qty), bar, order_type=OrderType.LIMIT if limit else OrderType.MARKET,
                       limit_price=D(limit) if limit else None, conid=SPY.conid if symbol == "SPY" else AAPL.conid,
                       expires_at=bar + valid_for, reference_price=D("101"))  # fmt: skip


def left_unsent(db_url: str, mb: MemoryBroker, broker: SyncBroker, it: OrderIntent) -> SubmitResult:
    """Submit while the broker is down: the order stays ``created`` (retry-pending); then reconnect."""
    mb.drop_connection()
    result = submit_order(db_url, broker, SPY, it, CTX)
    assert result.status is OrderStatus.CREATED and not result.sent
    broker.connect()
    return result


def row(db_url: str, order_id: int) -> Order:
    with session_scope(db_url) as s:
        found = orders_repo.get(s, order_id)
        assert found is not None
        s.expunge(found)
        return found


def at_broker(broker: SyncBroker) -> list[str]:
    return sorted(o.order_ref for o in [*broker.open_orders(), *broker.completed_orders()])


@pytest.fixture(autouse=True)
def _owner(db_url: str) -> None:
    store_strategy(db_url)


def test_retry_while_halted_sends_nothing_and_halt_ends_unsent_orders(
    db_url: str, world: tuple[MemoryBroker, SyncBroker]
) -> None:
    mb, broker = world
    pending = left_unsent(db_url, mb, broker, order())
    halted = kill_switch.engage(db_url, "operator stop", changed_by="test", now=NOW)
    assert halted.ended == (pending.key,)
    assert row(db_url, pending.order_id).status is OrderStatus.CANCELLED
    assert retry_orders(db_url, broker, lambda _w: SPY, 3, CTX) == []
    assert at_broker(broker) == []


def test_a_retry_reruns_the_gate_and_refuses_while_the_switch_is_engaged(
    db_url: str, world: tuple[MemoryBroker, SyncBroker]
) -> None:
    """The switch set without ``halt`` (e.g. by another tool writing the state): the retry's own gate stops it."""
    mb, broker = world
    pending = left_unsent(db_url, mb, broker, order())
    with session_scope(db_url) as s:
        trading_state.set_kill_switch(s, True, "set elsewhere")
    [result] = retry_orders(db_url, broker, lambda _w: SPY, 3, CTX)
    assert result.status is OrderStatus.RISK_REJECTED and not result.sent
    assert [r.split(":")[0] for r in result.reasons] == ["kill_switch"]
    assert at_broker(broker) == []
    decision = row(db_url, pending.order_id).risk_decision
    assert decision is not None and decision["attempt"] == 2 and decision["at"] == NOW.isoformat()


def test_an_expired_signal_is_never_retried(db_url: str, world: tuple[MemoryBroker, SyncBroker]) -> None:
    mb, broker = world
    pending = left_unsent(db_url, mb, broker, order(valid_for=dt.timedelta(minutes=10)))  # expires 10:25 NY
    later = dataclasses.replace(CTX, now=NOW + dt.timedelta(minutes=30))
    assert retry_orders(db_url, broker, lambda _w: SPY, 3, later) == []  # ended before any send
    after = row(db_url, pending.order_id)
    assert after.status is OrderStatus.EXPIRED and at_broker(broker) == []
    with session_scope(db_url) as s:
        assert "signal expired" in (orders_repo.events(s, pending.order_id)[-1].detail or "")


def test_a_deactivated_or_deleted_strategy_never_orders(db_url: str, world: tuple[MemoryBroker, SyncBroker]) -> None:
    mb, broker = world
    first = left_unsent(db_url, mb, broker, order(40))
    with session_scope(db_url) as s:
        strategies_repo.set_active(s, "spy-test", False)
    [refused] = retry_orders(db_url, broker, lambda _w: SPY, 3, CTX)
    assert refused.order_id == first.order_id and refused.status is OrderStatus.RISK_REJECTED
    assert refused.reasons == ("strategy_active: strategy 'spy-test' inactive",)
    new = submit_order(db_url, broker, SPY, order(45), CTX)
    assert new.status is OrderStatus.RISK_REJECTED and "inactive" in new.reasons[0]
    with session_scope(db_url) as s:
        strategies_repo.delete(s, "spy-test")
    gone = submit_order(db_url, broker, SPY, order(35), CTX)
    assert gone.status is OrderStatus.RISK_REJECTED and gone.reasons == (
        "strategy_active: strategy 'spy-test' deleted",
    )
    assert at_broker(broker) == []


def test_an_unsent_order_counts_against_the_position_limit(db_url: str, world: tuple[MemoryBroker, SyncBroker]) -> None:
    """max_position 10: order A stays unsent, order B for the next bar is refused; the retry then sends A only."""
    mb, broker = world
    store_strategy(db_url, strategy(max_position=D(10)))
    a = left_unsent(db_url, mb, broker, order(40, limit=None))
    b = submit_order(db_url, broker, SPY, order(45, limit=None), CTX)
    assert b.status is OrderStatus.RISK_REJECTED
    assert [r.split(":")[0] for r in b.reasons] == ["max_position"]
    [sent] = retry_orders(db_url, broker, lambda _w: SPY, 3, CTX)
    assert sent.order_id == a.order_id and sent.status is OrderStatus.FILLED
    record_executions(db_url, broker.executions())
    assert at_broker(broker) == [a.key]


def test_the_daily_loss_counts_every_open_position(db_url: str, world: tuple[MemoryBroker, SyncBroker]) -> None:
    """An AAPL position down 1,000+ today blocks a SPY order (the old gate marked only the ordered symbol)."""
    _mb, broker = world
    store_strategy(db_url, strategy("aapl-test", symbol="AAPL", conid=AAPL.conid))
    bought = submit_order(db_url, broker, AAPL, order(40, name="aapl-test", symbol="AAPL", limit=None, qty=100), CTX)
    assert bought.status is OrderStatus.FILLED
    record_executions(db_url, broker.executions())
    ctx = send_ctx(NOW, dry_run=False, trading=TradingSettings(dry_run=False, max_daily_loss_usd=D(500)))
    marked = dataclasses.replace(ctx, marks={"SPY": D("101"), "AAPL": D("170")})  # AAPL ~191 -> 170: -2,100
    spy = submit_order(db_url, broker, SPY, order(45), marked)
    assert spy.status is OrderStatus.RISK_REJECTED
    assert {r.split(":")[0] for r in spy.reasons} == {"kill_switch", "max_daily_loss"}  # and the breaker tripped


class _QuotedBroker:
    """Delegates to a SyncBroker; ``snapshot`` answers the given last prices (None: the broker cannot quote)."""

    def __init__(self, inner: SyncBroker, last: dict[str, D] | None) -> None:
        self.inner = inner
        self.last = last

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def connectivity(self) -> Any:
        return self.inner.connectivity

    def snapshot(self, contract: ContractInfo) -> Quote:
        if self.last is None or contract.symbol not in self.last:
            raise BrokerConnectionError(f"no quote for {contract.symbol}")
        return Quote(NOW, last=self.last[contract.symbol])


def test_the_daily_loss_marks_positions_the_caller_did_not_price(
    db_url: str, world: tuple[MemoryBroker, SyncBroker]
) -> None:
    """As the order step calls it (marks: only the ordered symbol's close), an AAPL position is marked from the
    broker's quote, else at its last fill (said in the decision's notes): a SPY order sees AAPL's loss."""
    _mb, broker = world
    store_strategy(db_url, strategy("aapl-test", symbol="AAPL", conid=AAPL.conid))
    bought = submit_order(db_url, broker, AAPL, order(40, name="aapl-test", symbol="AAPL", limit=None, qty=100), CTX)
    assert bought.status is OrderStatus.FILLED
    record_executions(db_url, broker.executions())
    ctx = send_ctx(NOW, dry_run=False, trading=TradingSettings(dry_run=False, max_daily_loss_usd=D(500)))
    only_spy = dataclasses.replace(ctx, marks={"SPY": D("101")})
    unquoted = submit_order(db_url, _QuotedBroker(broker, None), SPY, order(30), only_spy)
    assert unquoted.status is OrderStatus.SUBMITTED  # at its last fill AAPL is flat: no loss yet
    assert unquoted.risk_decision is not None
    assert [n for n in unquoted.risk_decision["notes"] if n.startswith("AAPL marked at its last fill")]
    quoted = submit_order(db_url, _QuotedBroker(broker, {"AAPL": D("170")}), SPY, order(45), only_spy)
    assert quoted.status is OrderStatus.RISK_REJECTED  # AAPL ~191 -> 170 at the broker's quote: -2,100
    assert {r.split(":")[0] for r in quoted.reasons} == {"kill_switch", "max_daily_loss"}


def test_market_open_uses_the_instruments_own_calendar(db_url: str, world: tuple[MemoryBroker, SyncBroker]) -> None:
    """09:00 London on a Monday: the LSE is open, New York is not."""
    _mb, broker = world
    london = dt.datetime(2024, 6, 3, 8, 0, tzinfo=dt.UTC)
    lse = strategy("vod-test").model_copy(update={"primary_exchange": "LSE", "currency": "GBP"})
    store_strategy(db_url, lse)
    ctx = send_ctx(london, dry_run=False)
    ny = submit_order(db_url, broker, SPY, order(40, valid_for=dt.timedelta(days=1)), ctx)
    uk = submit_order(db_url, broker, SPY, order(40, name="vod-test", valid_for=dt.timedelta(days=1)), ctx)
    assert [r.split(":")[0] for r in ny.reasons] == ["market_open"]
    assert "market_open" not in {r.split(":")[0] for r in uk.reasons}


def test_orders_per_day_count_on_the_runtime_clock(db_url: str, world: tuple[MemoryBroker, SyncBroker]) -> None:
    """created_at is the runtime clock: yesterday's (runtime) order does not count today, today's does."""
    _mb, broker = world
    store_strategy(db_url, strategy(max_orders_per_day=1))
    yesterday = dataclasses.replace(CTX, now=NOW - dt.timedelta(days=3))  # the Friday before, 10:20 New York
    old = submit_order(db_url, broker, SPY, order(40, valid_for=dt.timedelta(days=5)), yesterday)
    assert old.status is OrderStatus.SUBMITTED
    assert row(db_url, old.order_id).created_at == yesterday.now
    today = submit_order(db_url, broker, SPY, order(45), CTX)
    assert today.status is OrderStatus.SUBMITTED
    again = submit_order(db_url, broker, SPY, order(35), CTX)
    assert [r.split(":")[0] for r in again.reasons] == ["max_orders_per_day"]


def test_retry_uses_the_orders_own_instrument(db_url: str, world: tuple[MemoryBroker, SyncBroker]) -> None:
    """The strategy's stored contract (here a future, via the cache) is what a retry sends, not an STK guess."""
    _mb, broker = world
    future = ContractInfo(495512563, "ES", SecType.FUT, "CME", "CME", "USD", D("0.25"), local_symbol="ESZ4")
    with session_scope(db_url) as s:
        store_contract(s, future, now=NOW)
    es = strategy("es-test", symbol="ES", conid=future.conid).model_copy(
        update={"sec_type": SecType.FUT, "exchange": "CME", "primary_exchange": None}
    )
    store_strategy(db_url, es)
    got = retry_contract(db_url, broker, OrderInstrument("es-test", "ES", future.conid),
                         ttl=dt.timedelta(days=7), now=NOW)  # fmt: skip
    assert got == future
    deleted = retry_contract(db_url, broker, OrderInstrument("gone", "ES", future.conid),
                             ttl=dt.timedelta(days=7), now=NOW)  # fmt: skip
    assert deleted.sec_type is SecType.FUT


def test_cancel_works_in_every_non_terminal_state(db_url: str, world: tuple[MemoryBroker, SyncBroker]) -> None:
    mb, broker = world
    unsent = left_unsent(db_url, mb, broker, order(40))
    out = cancel_by_id(db_url, lambda: broker, unsent.order_id, "by hand")
    assert (out.before, out.after) == (OrderStatus.CREATED, OrderStatus.CANCELLED)
    assert at_broker(broker) == []
    working = submit_order(db_url, broker, SPY, order(45), CTX)
    with session_scope(db_url) as s:  # a crash right after the send: our row still says submitting
        r = orders_repo.get(s, working.order_id)
        assert r is not None
        r.status = OrderStatus.SUBMITTING
    out = cancel_by_id(db_url, lambda: broker, working.order_id, "by hand")
    assert (out.before, out.after) == (OrderStatus.SUBMITTING, OrderStatus.CANCELLED)
    assert broker.open_orders() == []
    with pytest.raises(InputError, match="already final"):
        cancel_by_id(db_url, lambda: broker, working.order_id, "twice")


def test_a_partially_filled_limit_times_out_and_its_rest_is_cancelled(
    db_url: str, world: tuple[MemoryBroker, SyncBroker]
) -> None:
    _mb, broker = world
    placed = submit_order(db_url, broker, SPY, order(45, limit="50.00"), CTX)
    with session_scope(db_url) as s:  # 4 of 10 filled (as the broker would report it)
        r = orders_repo.get(s, placed.order_id)
        assert r is not None
        r.filled_quantity = D(4)
        orders_repo.set_status(s, r, OrderStatus.PARTIALLY_FILLED, "test: 4 filled")
        submitted_at = r.submitted_at
    assert submitted_at is not None
    early = sync_orders(db_url, broker, submitted_at + dt.timedelta(minutes=29), {"spy-test": 30})
    assert early.cancelled_for_timeout == []
    late = sync_orders(db_url, broker, submitted_at + dt.timedelta(minutes=31), {"spy-test": 30})
    assert late.cancelled_for_timeout == [placed.key]
    assert broker.open_orders() == []
    with session_scope(db_url) as s:
        events = orders_repo.events(s, placed.order_id)
        assert "6 of 10 unfilled after 30 min" in (events[-2].detail or "")


def test_halt_history_records_engage_and_release(db_url: str) -> None:
    kill_switch.engage(db_url, "fat finger", changed_by="alice", now=NOW)
    kill_switch.release(db_url, changed_by="bob", reason="checked", now=NOW + dt.timedelta(minutes=5))
    newest, oldest = kill_switch.history(db_url)
    assert (oldest.engaged, oldest.reason, oldest.changed_by, oldest.at) == (True, "fat finger", "alice", NOW)
    assert (newest.engaged, newest.changed_by, newest.reason) == (False, "bob", "checked")
    with pytest.raises(InputError, match="needs a reason"):
        kill_switch.engage(db_url, "  ", changed_by="alice")


class _HeldBroker:
    """Delegates to a SyncBroker; ``place_order`` waits until released (a slow acknowledgement)."""

    def __init__(self, inner: SyncBroker) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def connectivity(self) -> Any:
        return self.inner.connectivity

    def place_order(self, contract: ContractInfo, request: OrderRequest) -> Any:
        self.entered.set()
        assert self.release.wait(30), "test never released the broker"
        return self.inner.place_order(contract, request)


def test_a_halt_waits_for_a_send_in_flight_and_no_send_passes_after_it(
    db_url: str, world: tuple[MemoryBroker, SyncBroker]
) -> None:
    _mb, broker = world
    held = _HeldBroker(broker)
    outcome: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: outcome.update(r=submit_order(db_url, held, SPY, order(45), CTX)))
    sender.start()
    assert held.entered.wait(30)
    # the send holds the lock shared while at the broker: a halt cannot take it exclusively now
    with pytest.raises(StopError, match="not acquired"), send_lock(db_url, exclusive=True, wait_s=0.3):
        pass
    halter = threading.Thread(target=lambda: outcome.update(h=kill_switch.engage(db_url, "stop", changed_by="t")))
    halter.start()
    held.release.set()
    sender.join(30)
    halter.join(30)
    assert not sender.is_alive() and not halter.is_alive()
    assert outcome["r"].status is OrderStatus.SUBMITTED  # reached the broker before the halt committed
    assert at_broker(broker) == [outcome["r"].key]
    after = submit_order(db_url, broker, SPY, order(40), CTX)
    assert after.status is OrderStatus.RISK_REJECTED and "kill_switch" in after.reasons[0]
    assert at_broker(broker) == [outcome["r"].key]
