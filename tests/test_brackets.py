"""Brackets as real broker orders: our send path -> IBBroker -> the real ib_async client -> the simulator.

An entry with a target and a stop goes out as one IB bracket (parent LMT, take-profit LMT, protective STP; the
children with ``parentId``, one OCA group, ``transmit`` False on all but the last). Market data: the 5-minute SPY
bars of 2012-06-27; the clock starts at 15:00 UTC (11:00 New York), the last completed bar closed at 133.00.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal as D

import pytest

from models.enums import OrderSide, OrderStatus, OrderType, RunMode, SecType
from services.broker.ib_adapter import IBBroker
from services.broker.loop_owner import SyncBroker
from services.broker.pacing import Backoff
from services.broker.types import Bracket, ContractInfo, ContractSpec, OrderRequest
from services.db import session_scope
from services.market import Trail
from services.orders import kill_switch
from services.orders.monitor import cancel_all, cancel_by_id, cancel_protective, reconcile, sync_orders
from services.orders.submit import OrderIntent, SubmitResult, submit_order
from services.repositories import fills as fills_repo
from services.repositories import orders as orders_repo
from services.settings import IBSettings
from simulator import SimConfig, SimOrderStatus, SimServer
from tests.orders_support import send_ctx, store_strategy, strategy
from tests.waiting import eventually

START = dt.datetime(2012, 6, 27, 15, 0, tzinfo=dt.UTC)
ACCOUNT = "DU1234567"
SPY_CONID = 756733
S = OrderStatus


@pytest.fixture
def participation() -> float | None:
    return None


@pytest.fixture
def sim(participation: float | None) -> Iterator[SimServer]:
    config = SimConfig(port=0, partial_fill_participation=participation, now=START)
    with SimServer.in_thread(config) as server:
        yield server


def _ib_broker(sim: SimServer) -> SyncBroker:
    return SyncBroker(
        lambda: IBBroker.from_settings(
            IBSettings(port=sim.port, client_id=17, connect_timeout_s=5, request_timeout_s=3),
            order_ack_timeout_s=5,
            reconnect=Backoff(attempts=60, base_s=0.05, max_s=0.2),
        )
    )


@pytest.fixture
def broker(sim: SimServer) -> Iterator[SyncBroker]:
    sync = _ib_broker(sim)
    sync.connect()
    yield sync
    sync.close()


@pytest.fixture
def spy(broker: SyncBroker) -> ContractInfo:
    return broker.qualify(ContractSpec("SPY", SecType.STK))


def _bracket(
    db_url: str,
    broker: SyncBroker,
    spy: ContractInfo,
    *,
    qty: int = 100,
    entry: str = "132.90",
    target: str | None = "133.10",
    stop: str | None = "132.70",
    name: str = "brk",
    trail: Trail | None = None,
) -> SubmitResult:
    store_strategy(db_url, strategy(name))
    intent = OrderIntent(
        name, "SPY", OrderSide.BUY, D(qty), START, limit_price=D(entry), conid=spy.conid,
        expires_at=START + dt.timedelta(hours=6), reference_price=D(entry),
        take_profit=D(target) if target else None, stop_loss=D(stop) if stop else None, trail=trail,
    )  # fmt: skip
    return submit_order(db_url, broker, spy, intent, send_ctx(START, dry_run=False))


def _rows(db_url: str, key: str) -> dict[str, tuple[OrderStatus, D, D]]:
    """(status, quantity, filled) of the entry ``key`` and its children, by key suffix ("" for the entry)."""
    with session_scope(db_url) as s:
        entry = orders_repo.get_by_key(s, key)
        assert entry is not None
        out = {"": (entry.status, entry.quantity, entry.filled_quantity)}
        for child in orders_repo.children(s, entry.id):
            out[child.idempotency_key.removeprefix(key)] = (child.status, child.quantity, child.filled_quantity)
        return out


def _synced(db_url: str, broker: SyncBroker, key: str, want: dict[str, tuple[OrderStatus, D, D]]) -> None:
    def check() -> bool:
        sync_orders(db_url, broker, dt.datetime.now(dt.UTC))
        return _rows(db_url, key) == want

    try:
        eventually(check)
    except AssertionError:
        assert _rows(db_url, key) == want  # show the difference
        raise


def _reconnected(broker: SyncBroker) -> None:
    """Wait until the adapter noticed the drop and healed it (ib_async reports the drop asynchronously)."""

    def healed() -> bool:
        status = broker.status()
        return status is not None and status.reconnects >= 1 and status.state.value == "connected"

    eventually(healed)


def _at_sim(sim: SimServer, ref: str):  # type: ignore[no-untyped-def]
    [order] = sim.state.orders_by_ref(ref)
    return order


def test_bracket_goes_out_as_tws_expects_then_the_target_fills_and_the_stop_is_cancelled(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    placed = _bracket(db_url, broker, spy)
    key = placed.key
    assert placed.sent and placed.status is S.SUBMITTED
    # the frames as TWS expects a bracket: parent, then children with parentId, transmit only on the last
    frames = [(p.order_ref, p.transmit, p.parent_id, p.action, p.quantity) for p in sim.state.placed]
    parent, tp, sl = (_at_sim(sim, r) for r in (key, f"{key}:TP", f"{key}:SL"))
    assert frames == [
        (key, False, 0, "BUY", "100.0"),
        (f"{key}:TP", False, parent.order_id, "SELL", "100.0"),
        (f"{key}:SL", True, parent.order_id, "SELL", "100.0"),
    ]
    assert (tp.order_type, tp.lmt_price, tp.tif) == ("LMT", D("133.10"), "GTC")
    assert (sl.order_type, sl.aux_price, sl.tif) == ("STP", D("132.70"), "GTC")
    assert tp.oca_group == sl.oca_group == key and tp.oca_type == sl.oca_type == 2
    assert tp.status is sl.status is SimOrderStatus.PRE_SUBMITTED  # held until the parent fills
    assert _rows(db_url, key) == {"": (S.SUBMITTED, 100, 0), ":TP": (S.SUBMITTED, 100, 0), ":SL": (S.SUBMITTED, 100, 0)}
    with session_scope(db_url) as s:  # one gate decision, on the entry
        entry = orders_repo.get_by_key(s, key)
        assert entry is not None and entry.risk_decision is not None and entry.risk_decision["approved"] is True
        assert entry.run_mode is RunMode.PAPER and not orders_repo.is_dry_run(entry)  # a socket, paper mode
        assert {c.run_mode for c in orders_repo.children(s, entry.id)} == {RunMode.PAPER}
        assert all("checks" not in c.risk_decision for c in orders_repo.children(s, entry.id))  # type: ignore[operator]

    sim.clock.advance(3, symbol="SPY")  # 15:10 bar: low 132.78 fills the parent at 132.90
    _synced(db_url, broker, key, {"": (S.FILLED, 100, 100), ":TP": (S.SUBMITTED, 100, 0), ":SL": (S.SUBMITTED, 100, 0)})
    assert tp.status is SimOrderStatus.SUBMITTED and sl.status is SimOrderStatus.PRE_SUBMITTED  # stop: untriggered
    sim.clock.advance(6, symbol="SPY")  # 15:35 bar: high 133.12 reaches the take-profit
    _synced(db_url, broker, key, {"": (S.FILLED, 100, 100), ":TP": (S.FILLED, 100, 100), ":SL": (S.CANCELLED, 100, 0)})
    assert (tp.avg_fill_price, sl.status) == (D("133.10"), SimOrderStatus.CANCELLED)
    assert sim.state.positions[(ACCOUNT, SPY_CONID)].quantity == 0
    with session_scope(db_url) as s:
        assert sorted((f.side, f.quantity, f.price) for f in fills_repo.effective(s)) == [
            (OrderSide.BUY, 100, D("132.90")),
            (OrderSide.SELL, 100, D("133.10")),
        ]
    assert reconcile(db_url, broker, dt.datetime.now(dt.UTC)).ok


def test_the_stop_fills_and_the_target_is_cancelled(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    key = _bracket(db_url, broker, spy, target="133.50", stop="132.75").key
    sim.clock.advance(6, symbol="SPY")  # parent fills on 15:10; 15:25 bar: low 132.71 triggers the stop at 132.75
    _synced(db_url, broker, key, {"": (S.FILLED, 100, 100), ":TP": (S.CANCELLED, 100, 0), ":SL": (S.FILLED, 100, 100)})
    assert _at_sim(sim, f"{key}:SL").avg_fill_price == D("132.75")
    assert _at_sim(sim, f"{key}:TP").completed_status == "Cancelled (OCA)"
    assert sim.state.positions[(ACCOUNT, SPY_CONID)].quantity == 0


def test_cancelling_the_unfilled_parent_cancels_its_children(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    placed = _bracket(db_url, broker, spy, entry="132.00", target="133.00", stop="131.50")
    outcome = cancel_by_id(db_url, lambda: broker, placed.order_id, "test: cancel the entry")
    assert outcome.after is S.CANCELLED
    assert _rows(db_url, placed.key) == {
        "": (S.CANCELLED, 100, 0),
        ":TP": (S.CANCELLED, 100, 0),
        ":SL": (S.CANCELLED, 100, 0),
    }
    assert [o.status for o in sim.state.orders.values()] == [SimOrderStatus.CANCELLED] * 3
    sim.clock.advance(12, symbol="SPY")  # nothing left to fill
    assert sim.state.executions == [] and not sim.state.open_orders()


@pytest.mark.parametrize("participation", [0.01])
def test_a_partial_parent_fill_protects_only_the_filled_quantity(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    key = _bracket(db_url, broker, spy, qty=300, target="133.50", stop="132.75").key
    sim.clock.advance(3, symbol="SPY")  # 15:10 bar, volume 17215: 1% -> 172 of 300 filled at 132.90
    _synced(db_url, broker, key, {"": (S.PARTIALLY_FILLED, 300, 172), ":TP": (S.SUBMITTED, 172, 0),
                                  ":SL": (S.SUBMITTED, 172, 0)})  # fmt: skip
    sl = _at_sim(sim, f"{key}:SL")
    assert (sl.quantity, sl.status) == (172, SimOrderStatus.PRE_SUBMITTED)
    # the rest of the entry is cancelled: the 172 shares held stay protected
    with session_scope(db_url) as s:
        entry_id = orders_repo.get_by_key(s, key).id  # type: ignore[union-attr]
    assert cancel_by_id(db_url, lambda: broker, entry_id, "test: enough").after is S.CANCELLED
    _synced(db_url, broker, key, {"": (S.CANCELLED, 300, 172), ":TP": (S.SUBMITTED, 172, 0),
                                  ":SL": (S.SUBMITTED, 172, 0)})  # fmt: skip
    sim.clock.advance(3, symbol="SPY")  # 15:25 bar: low 132.71 triggers the stop; 1% of 14375 -> 143 of 172
    _synced(db_url, broker, key, {"": (S.CANCELLED, 300, 172), ":TP": (S.SUBMITTED, 29, 0),
                                  ":SL": (S.PARTIALLY_FILLED, 172, 143)})  # fmt: skip
    assert sim.state.positions[(ACCOUNT, SPY_CONID)].quantity == 172 - 143


def test_after_a_disconnect_the_bracket_is_matched_again_by_order_ref(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    key = _bracket(db_url, broker, spy).key
    sim.clock.advance(3, symbol="SPY")  # the parent fills
    parent_perm = _at_sim(sim, key).perm_id
    sim.drop_connections()
    sim.clock.advance(6, symbol="SPY")  # while the client is away the take-profit fills, the stop is cancelled
    _reconnected(broker)
    found = {r: broker.find_order(r) for r in (key, f"{key}:TP", f"{key}:SL")}
    # completed orders (message 101) carry the parent's permId, not its orderId
    assert {r: (o.status, o.filled, o.parent_perm_id, o.oca_group) for r, o in found.items() if o} == {
        key: (S.FILLED, 100, None, ""),
        f"{key}:TP": (S.FILLED, 100, parent_perm, key),
        f"{key}:SL": (S.CANCELLED, 0, parent_perm, key),
    }
    _synced(db_url, broker, key, {"": (S.FILLED, 100, 100), ":TP": (S.FILLED, 100, 100), ":SL": (S.CANCELLED, 100, 0)})
    report = reconcile(db_url, broker, dt.datetime.now(dt.UTC))
    assert report.ok and report.adopted_external == [], report
    assert len(sim.state.placed) == 3  # nothing re-sent


def test_a_working_bracket_survives_a_reconnect_and_keeps_protecting(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    key = _bracket(db_url, broker, spy, target="133.50", stop="132.75").key
    sim.clock.advance(3, symbol="SPY")  # the parent fills; both children work
    sim.drop_connections()
    _reconnected(broker)
    again = broker.find_order(f"{key}:SL")
    assert again is not None  # an open order (message 5) carries the parent's orderId
    assert (again.status, again.quantity, again.oca_group) == (S.SUBMITTED, 100, key)
    assert again.parent_order_id == _at_sim(sim, key).order_id
    sim.clock.advance(3, symbol="SPY")  # 15:25: the stop fills after the reconnect; ib_async knows the trade
    _synced(db_url, broker, key, {"": (S.FILLED, 100, 100), ":TP": (S.CANCELLED, 100, 0), ":SL": (S.FILLED, 100, 100)})


def test_a_duplicate_send_of_the_same_bracket_places_nothing_twice(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    first = _bracket(db_url, broker, spy)
    second = _bracket(db_url, broker, spy)
    assert second.reused and not second.sent and second.order_id == first.order_id
    key = first.key
    # the adapter on its own: every part known to IB by orderRef is not sent again
    bracket = Bracket(
        OrderRequest(key, OrderSide.BUY, D(100), OrderType.LIMIT, limit_price=D("132.90")),
        OrderRequest(f"{key}:TP", OrderSide.SELL, D(100), OrderType.LIMIT, limit_price=D("133.10")),
        OrderRequest(f"{key}:SL", OrderSide.SELL, D(100), OrderType.STOP, stop_price=D("132.70")),
    )
    states = broker.place_bracket(spy, bracket)
    assert [s.order_ref for s in states] == [key, f"{key}:TP", f"{key}:SL"]
    assert len(sim.state.placed) == 3 and len(sim.state.orders) == 3
    with session_scope(db_url) as s:
        assert len(orders_repo.list_orders(s, limit=None)) == 3


def test_a_close_of_the_long_position_cancels_its_protective_orders(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    key = _bracket(db_url, broker, spy, target="133.50", stop="132.50").key
    sim.clock.advance(3, symbol="SPY")
    _synced(db_url, broker, key, {"": (S.FILLED, 100, 100), ":TP": (S.SUBMITTED, 100, 0), ":SL": (S.SUBMITTED, 100, 0)})
    close = OrderIntent("brk", "SPY", OrderSide.SELL, D(100), START + dt.timedelta(minutes=15),
                        order_type=OrderType.MARKET, conid=spy.conid, expires_at=START + dt.timedelta(hours=6),
                        reference_price=D("132.79"))  # fmt: skip
    closed = submit_order(db_url, broker, spy, close, send_ctx(START, dry_run=False))
    assert closed.sent and closed.status in (S.SUBMITTED, S.FILLED), closed
    _synced(db_url, broker, closed.key, {"": (S.FILLED, 100, 100)})  # at the last close, 132.79
    assert _at_sim(sim, closed.key).oca_group == key  # the close joined the protective orders' OCA group
    # its fill cancelled them at the broker (OCA), which the monitor recorded
    _synced(db_url, broker, key, {"": (S.FILLED, 100, 100), ":TP": (S.CANCELLED, 100, 0), ":SL": (S.CANCELLED, 100, 0)})
    assert [_at_sim(sim, f"{key}:{r}").completed_status for r in ("TP", "SL")] == ["Cancelled (OCA)"] * 2
    assert cancel_protective(db_url, broker, "SPY", "brk", f"position closed by {closed.key}") == []
    assert sim.state.positions[(ACCOUNT, SPY_CONID)].quantity == 0
    sim.clock.advance(12, symbol="SPY")  # nothing fires later
    assert len(sim.state.executions) == 2


def test_halt_with_cancel_all_cancels_parents_and_children(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    filled = _bracket(db_url, broker, spy, name="brk-a", target="133.50", stop="132.50").key
    sim.clock.advance(3, symbol="SPY")  # the first entry fills: its children work
    working = _bracket(db_url, broker, spy, name="brk-b", entry="132.00", target="133.00", stop="131.50").key
    _synced(db_url, broker, filled, {"": (S.FILLED, 100, 100), ":TP": (S.SUBMITTED, 100, 0),
                                     ":SL": (S.SUBMITTED, 100, 0)})  # fmt: skip
    kill_switch.engage(db_url, "test halt", changed_by="test")
    report = cancel_all(db_url, lambda: broker, "halt: test halt")
    assert report.errors == [] and report.still_working == [] and report.broker_only == []
    assert _rows(db_url, filled) == {"": (S.FILLED, 100, 100), ":TP": (S.CANCELLED, 100, 0),
                                     ":SL": (S.CANCELLED, 100, 0)}  # fmt: skip
    assert _rows(db_url, working) == {"": (S.CANCELLED, 100, 0), ":TP": (S.CANCELLED, 100, 0),
                                      ":SL": (S.CANCELLED, 100, 0)}  # fmt: skip
    assert not sim.state.open_orders()


def test_a_trailing_stop_follows_the_price_up_then_fills_and_the_target_is_cancelled(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    """TRAIL 0.35 below the high, starting at 132.50: the bars' highs move it up to 133.00 (never back), the 17:35
    bar's low 132.96 reaches it, it fills at 133.00 and the target at 133.50 (never reached) is cancelled."""
    key = _bracket(db_url, broker, spy, target="133.50", stop="132.50", trail=Trail(amount=D("0.35"))).key
    sl = _at_sim(sim, f"{key}:SL")  # what ib_async put on the wire: orderType TRAIL, auxPrice, trailStopPrice
    assert (sl.order_type, sl.aux_price, sl.trail_stop_price, sl.trailing_percent) == (
        "TRAIL",
        D("0.35"),
        D("132.50"),
        None,
    )
    assert sl.status is SimOrderStatus.PRE_SUBMITTED and sl.oca_group == key
    seen = broker.find_order(f"{key}:SL")  # and what it read back from openOrder
    assert seen is not None and (seen.order_type, seen.stop_price) == (OrderType.TRAIL, D("132.50"))
    with session_scope(db_url) as s:
        row = orders_repo.get_by_key(s, f"{key}:SL")
        assert row is not None
        assert (row.order_type, row.stop_price, row.trail_amount, row.trail_percent) == (
            OrderType.TRAIL, D("132.50"), D("0.35"), None)  # fmt: skip
    stops = []
    for _ in range(32):  # 15:00 .. 17:35, one bar at a time
        sim.clock.advance(1, symbol="SPY")
        stops.append(sl.trail_stop_price)
    # 15:10 (the entry's bar) high 133.02 -> 132.67; 15:35 133.12 -> 132.77; 15:40 133.22 -> 132.87;
    # 16:05 133.33 -> 132.98; 16:25 133.35 -> 133.00; lower highs leave it there
    assert sorted(set(stops)) == [D("132.50"), D("132.67"), D("132.77"), D("132.87"), D("132.98"), D("133.00")]
    assert stops == sorted(stops)  # never back
    _synced(db_url, broker, key, {"": (S.FILLED, 100, 100), ":TP": (S.CANCELLED, 100, 0), ":SL": (S.FILLED, 100, 100)})
    assert (sl.avg_fill_price, _at_sim(sim, f"{key}:TP").completed_status) == (D("133.00"), "Cancelled (OCA)")
    assert sim.state.positions[(ACCOUNT, SPY_CONID)].quantity == 0


def test_a_percent_trailing_stop_goes_out_as_trailing_percent(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    key = _bracket(db_url, broker, spy, stop="132.00", trail=Trail(percent=D("0.5"))).key
    sl = _at_sim(sim, f"{key}:SL")
    assert (sl.order_type, sl.aux_price, sl.trailing_percent, sl.trail_stop_price) == (
        "TRAIL",
        None,
        D("0.5"),
        D("132.00"),
    )


def test_a_stop_the_broker_lost_is_re_attached_by_the_retry_flow_through_the_gate(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    """The entry filled, then TWS lost its stop (gone from its orders after a restart): the monitor finds it missing
    (not among the open or completed orders, not by orderRef or permId) and puts it back to ``created``; the retry
    flow sends it through ``send``: refused while reconciliation is unclean (nothing sent, it stays created), then
    re-placed as a STP in the entry's OCA group; it then protects: the 15:25 stop fills, the target is cancelled."""
    from services.orders.context import set_reconciliation
    from services.orders.monitor import retry_orders

    key = _bracket(db_url, broker, spy, target="133.50", stop="132.75").key
    sim.clock.advance(3, symbol="SPY")  # the parent fills on 15:10
    _synced(db_url, broker, key, {"": (S.FILLED, 100, 100), ":TP": (S.SUBMITTED, 100, 0), ":SL": (S.SUBMITTED, 100, 0)})
    assert sync_orders(db_url, broker, START).lost_children == []  # both children known: nothing lost
    del sim.state.orders[_at_sim(sim, f"{key}:SL").perm_id]  # TWS lost it
    sim.drop_connections()
    _reconnected(broker)
    assert broker.find_order(f"{key}:SL") is None and broker.find_order(f"{key}:TP") is not None
    report = sync_orders(db_url, broker, START)
    assert report.lost_children == [f"{key}:SL"]
    assert _rows(db_url, key)[":SL"] == (S.CREATED, 100, 0)
    assert sync_orders(db_url, broker, START).lost_children == []  # marked once
    ctx = send_ctx(START + dt.timedelta(minutes=15), dry_run=False)
    frames = len(sim.state.placed)
    with session_scope(db_url) as s:
        set_reconciliation(s, "test: a position difference")
    [refused] = retry_orders(db_url, broker, lambda _what: spy, 5, ctx)
    assert (refused.key, refused.status, refused.sent) == (f"{key}:SL", S.CREATED, False)
    assert len(sim.state.placed) == frames  # the gate ran: nothing went out
    with session_scope(db_url) as s:
        row = orders_repo.get_by_key(s, f"{key}:SL")
        # lost: its attempts count from 0 again; a refusal sent nothing and used none
        assert row is not None and row.risk_decision is not None and row.submit_attempts == 0
        assert (
            row.last_submit_error is not None and "reconciliation: test: a position difference" in row.last_submit_error
        )
        failed = {c["name"] for c in row.risk_decision["checks"] if not c["passed"]}
        assert failed == {"reconciliation"}  # the entry's signal expiry and the order-count limits do not apply
        set_reconciliation(s, None)
    [sent] = retry_orders(db_url, broker, lambda _what: spy, 5, ctx)
    assert (sent.key, sent.status, sent.sent) == (f"{key}:SL", S.SUBMITTED, True)
    [again] = sim.state.orders_by_ref(f"{key}:SL")
    assert (again.order_type, again.aux_price, again.quantity, again.parent_id) == ("STP", D("132.75"), 100, 0)
    assert (again.oca_group, again.oca_type) == (key, 2)  # a plain order in the entry's OCA group: the entry is done
    assert [(p.order_ref, p.transmit) for p in sim.state.placed[frames:]] == [(f"{key}:SL", True)]
    sim.clock.advance(3, symbol="SPY")  # 15:25: low 132.71 triggers the stop at 132.75
    _synced(db_url, broker, key, {"": (S.FILLED, 100, 100), ":TP": (S.CANCELLED, 100, 0), ":SL": (S.FILLED, 100, 100)})
    assert (again.avg_fill_price, _at_sim(sim, f"{key}:TP").completed_status) == (D("132.75"), "Cancelled (OCA)")
    assert sim.state.positions[(ACCOUNT, SPY_CONID)].quantity == 0


def _filled_with_lost_stop(db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo) -> str:
    """A bracket whose entry filled (15:10) and whose stop TWS then lost (gone after its restart), found lost by
    the monitor: the stop is back to ``created``, to be re-attached. Returns the bracket's key."""
    key = _bracket(db_url, broker, spy, target="133.50", stop="132.75").key
    sim.clock.advance(3, symbol="SPY")
    _synced(db_url, broker, key, {"": (S.FILLED, 100, 100), ":TP": (S.SUBMITTED, 100, 0), ":SL": (S.SUBMITTED, 100, 0)})
    del sim.state.orders[_at_sim(sim, f"{key}:SL").perm_id]
    sim.drop_connections()
    _reconnected(broker)
    assert sync_orders(db_url, broker, START).lost_children == [f"{key}:SL"]
    return key


def test_a_halt_keeps_a_lost_stop_to_re_attach_and_the_release_re_attaches_it(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    """A halt ends the unsent orders but not a protective stop the broker lost (its position stays, like the working
    target): refused by the gate on every retry while halted, without using its attempts, and past the retry
    limit, it is re-attached after the release and protects. With --cancel-all it ends with the working orders."""
    from services.orders.monitor import expire_unsent, retry_orders

    key = _filled_with_lost_stop(db_url, sim, broker, spy)
    halt = kill_switch.engage(db_url, "test halt", changed_by="test", now=START)
    assert (halt.ended, halt.kept) == ((), (f"{key}:SL",))
    ctx = send_ctx(START + dt.timedelta(minutes=15), dry_run=False)
    frames = len(sim.state.placed)
    for _ in range(8):  # more retries than the 3 attempts allowed
        [refused] = retry_orders(db_url, broker, lambda _what: spy, 3, ctx)
        assert (refused.key, refused.status, refused.sent) == (f"{key}:SL", S.CREATED, False)
        assert expire_unsent(db_url, ctx.now, 3) == []
    assert len(sim.state.placed) == frames  # nothing went out while halted
    with session_scope(db_url) as s:
        row = orders_repo.get_by_key(s, f"{key}:SL")
        assert (
            row is not None
            and row.submit_attempts == 0
            and "kill_switch: engaged: test halt" in (row.last_submit_error or "")
        )
    kill_switch.release(db_url, changed_by="test", now=START)
    [sent] = retry_orders(db_url, broker, lambda _what: spy, 3, ctx)
    assert (sent.key, sent.status, sent.sent) == (f"{key}:SL", S.SUBMITTED, True)
    sim.clock.advance(3, symbol="SPY")  # 15:25: low 132.71 triggers the stop at 132.75
    _synced(db_url, broker, key, {"": (S.FILLED, 100, 100), ":TP": (S.CANCELLED, 100, 0), ":SL": (S.FILLED, 100, 100)})
    assert sim.state.positions[(ACCOUNT, SPY_CONID)].quantity == 0


def test_a_lost_stop_waits_out_a_broker_outage_without_using_its_attempts(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the broker session is down the retry flow cannot send the lost stop: it stays created, its attempts
    unused, however many retries pass; once the session is back it is re-attached."""
    from services.broker.types import Connectivity
    from services.orders.monitor import expire_unsent, retry_orders

    key = _filled_with_lost_stop(db_url, sim, broker, spy)
    ctx = send_ctx(START + dt.timedelta(minutes=15), dry_run=False)
    with monkeypatch.context() as m:  # the outage, held (no race with the adapter's reconnect)
        m.setattr(SyncBroker, "connectivity", property(lambda _self: Connectivity.DISCONNECTED))
        for _ in range(5):  # more retries than the 3 attempts allowed
            [waiting] = retry_orders(db_url, broker, lambda _what: spy, 3, ctx)
            assert (waiting.key, waiting.status, waiting.sent) == (f"{key}:SL", S.CREATED, False)
            assert expire_unsent(db_url, ctx.now, 3) == []
    with session_scope(db_url) as s:
        row = orders_repo.get_by_key(s, f"{key}:SL")
        assert row is not None and row.submit_attempts == 0 and "not sent" in (row.last_submit_error or "")
    [sent] = retry_orders(db_url, broker, lambda _what: spy, 3, ctx)
    assert (sent.key, sent.status, sent.sent) == (f"{key}:SL", S.SUBMITTED, True)


def test_a_halt_ends_the_children_of_an_entry_never_sent(
    db_url: str, broker: SyncBroker, spy: ContractInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a lost child of an entry at the broker is kept by a halt: a bracket whose entry never went out (broker
    down) ends whole, entry and children."""
    from services.broker.types import Connectivity

    with monkeypatch.context() as m:
        m.setattr(SyncBroker, "connectivity", property(lambda _self: Connectivity.DISCONNECTED))
        key = _bracket(db_url, broker, spy).key
    assert _rows(db_url, key) == {"": (S.CREATED, 100, 0), ":TP": (S.CREATED, 100, 0), ":SL": (S.CREATED, 100, 0)}
    halt = kill_switch.engage(db_url, "test halt", changed_by="test", now=START)
    assert halt.kept == () and sorted(halt.ended) == sorted([key, f"{key}:TP", f"{key}:SL"])
    assert _rows(db_url, key) == {"": (S.CANCELLED, 100, 0), ":TP": (S.CANCELLED, 100, 0), ":SL": (S.CANCELLED, 100, 0)}


def test_a_halt_with_cancel_all_ends_a_lost_stop_to_re_attach_too(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    key = _filled_with_lost_stop(db_url, sim, broker, spy)
    assert kill_switch.engage(db_url, "test halt", changed_by="test", now=START).kept == (f"{key}:SL",)
    cancel_all(db_url, lambda: broker, "halt: test halt")
    assert _rows(db_url, key) == {"": (S.FILLED, 100, 100), ":TP": (S.CANCELLED, 100, 0), ":SL": (S.CANCELLED, 100, 0)}


def test_a_child_lost_while_its_entry_works_is_attached_to_the_entry_again(
    db_url: str, sim: SimServer, broker: SyncBroker, spy: ContractInfo
) -> None:
    """The entry (132.00, below the market) is still working when TWS loses its take-profit: the retry flow
    attaches it to the entry again (parentId, the OCA group, held until the entry fills); the entry is not re-sent."""
    from services.orders.monitor import retry_orders

    key = _bracket(db_url, broker, spy, entry="132.00", target="133.00", stop="131.50").key
    entry = _at_sim(sim, key)
    del sim.state.orders[_at_sim(sim, f"{key}:TP").perm_id]
    sim.drop_connections()
    _reconnected(broker)
    assert sync_orders(db_url, broker, START).lost_children == [f"{key}:TP"]
    frames = len(sim.state.placed)
    [sent] = retry_orders(db_url, broker, lambda _what: spy, 5, send_ctx(START, dry_run=False))
    assert (sent.key, sent.status, sent.sent) == (f"{key}:TP", S.SUBMITTED, True)
    assert [p.order_ref for p in sim.state.placed[frames:]] == [f"{key}:TP"]  # only the child went out
    [tp] = sim.state.orders_by_ref(f"{key}:TP")
    assert (tp.parent_id, tp.oca_group, tp.lmt_price, tp.status) == (
        entry.order_id, key, D("133.00"), SimOrderStatus.PRE_SUBMITTED)  # fmt: skip
    assert _rows(db_url, key) == {"": (S.SUBMITTED, 100, 0), ":TP": (S.SUBMITTED, 100, 0), ":SL": (S.SUBMITTED, 100, 0)}
