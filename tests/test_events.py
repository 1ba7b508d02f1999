"""Each place that tells a trader something publishes the right event (``services.events``), on the real code
paths, to a recording sink; an event about a database change goes out only once it is committed.

Prefect's side (the sink, the automations, the delivery) is in ``tests/test_notifications_flow.py``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import pytest

from models.enums import OrderSide, OrderStatus, OrderType, SignalAction
from models.strategy import StrategyDefinition
from services.broker.loop_owner import SyncBroker
from services.broker.memory import MemoryBroker
from services.broker.types import Connectivity, ContractSpec
from services.db import session_scope
from services.events import (
    EVENT_NAMES,
    EventKind,
    Resource,
    TraderEvent,
    publish,
    strategy_resource,
    use_sink,
)
from services.orders import kill_switch
from services.orders.monitor import expire_unsent, reconcile, record_dry_run_fills
from services.orders.submit import OrderIntent, submit_order
from services.repositories import orders as orders_repo
from services.runtime import Runtime, use_runtime
from services.settings import TradingSettings, load_settings
from services.signals import abstain_streak_event
from simulator import SimConfig, SimServer
from tasks.events import PrefectSink, prefect_related, prefect_resource
from tests.orders_support import BAR0, NOW, SPY, memory_broker, send_ctx, store_strategy, strategy
from tests.test_approval import held
from tests.waiting import eventually


class Recorder:
    def __init__(self) -> None:
        self.events: list[TraderEvent] = []

    def publish(self, event: TraderEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.events]

    def of(self, kind: EventKind) -> list[TraderEvent]:
        return [e for e in self.events if e.kind is kind]


@pytest.fixture
def told() -> Iterator[Recorder]:
    with use_sink(Recorder()) as sink:
        assert isinstance(sink, Recorder)
        yield sink


@pytest.fixture
def memory(db_url: str) -> Iterator[tuple[MemoryBroker, SyncBroker]]:
    """The in-memory broker, and the stored strategy the orders belong to."""
    store_strategy(db_url, strategy("spy-test"))
    yield from memory_broker()


CTX = send_ctx(NOW, marks={"SPY": D("101")})


def intent(
    minute: int = 45, *, side: OrderSide = OrderSide.BUY, valid_h: float = 6, bracket: bool = False
) -> OrderIntent:
    bar_time = BAR0 + dt.timedelta(minutes=minute)
    exits = {"take_profit": D("104"), "stop_loss": D("98")} if bracket else {}
    return OrderIntent(
        "spy-test", "SPY", side, D(10), bar_time, order_type=OrderType.MARKET, conid=SPY.conid,
        expires_at=bar_time + dt.timedelta(hours=valid_h), reference_price=D("101"), **exits,
    )  # fmt: skip


# ---- the port itself ---------------------------------------------------------------------------------------------


def test_an_event_with_a_session_goes_out_on_commit_and_never_on_rollback(db_url: str, told: Recorder) -> None:
    event = TraderEvent(EventKind.RECONCILE_FAILED, Resource("trader.test"), "x")
    with session_scope(db_url) as session:
        publish(event, session=session)
        assert told.events == []  # not before the commit
    assert told.events == [event]
    with pytest.raises(RuntimeError), session_scope(db_url) as session:
        publish(TraderEvent(EventKind.DAILY_LOSS, Resource("trader.test"), "rolled back"), session=session)
        raise RuntimeError("the change is not stored")
    with session_scope(db_url):
        pass  # the next session of the same engine starts clean
    assert told.events == [event]


def test_a_failing_sink_is_logged_and_never_breaks_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def publish(self, event: TraderEvent) -> None:
            raise ConnectionError("events endpoint down")

    with use_sink(Broken()), caplog.at_level(logging.ERROR, logger="services.events"):
        publish(TraderEvent(EventKind.LLM_BUDGET, Resource("trader.llm.budget"), "x"))
    assert any("could not be published" in r.getMessage() for r in caplog.records)


RUN = "0b6f1f7e-0000-4000-8000-000000000001"


def test_every_kind_has_a_prefect_event_name_and_the_sink_maps_resources() -> None:
    assert set(EVENT_NAMES) == set(EventKind) and all(n.startswith("trader.") for n in EVENT_NAMES.values())
    event = TraderEvent(
        EventKind.ORDER_FILLED,
        Resource("trader.order.7", "k:SPY:BUY", role="order"),
        "filled",
        related=(strategy_resource("spy-test"),),
        flow_run_id=RUN,
    )
    assert prefect_resource(event) == {"prefect.resource.id": "trader.order.7", "prefect.resource.name": "k:SPY:BUY"}
    assert prefect_related(event) == [
        {"prefect.resource.id": f"prefect.flow-run.{RUN}", "prefect.resource.role": "flow-run"},
        {"prefect.resource.id": "trader.strategy.spy-test", "prefect.resource.role": "strategy",
         "prefect.resource.name": "spy-test"},
    ]  # fmt: skip


def test_the_prefect_sink_without_an_api_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: None}), caplog.at_level(logging.INFO, logger="services.events"):
        PrefectSink().publish(TraderEvent(EventKind.KILL_SWITCH_RELEASED, Resource("trader.kill-switch"), "off"))
    assert any("trader.kill-switch.released on trader.kill-switch: off" in r.getMessage() for r in caplog.records)


# ---- orders ------------------------------------------------------------------------------------------------------


def test_a_fill_is_told_once_with_its_order_strategy_and_run(
    db_url: str, memory: tuple[MemoryBroker, SyncBroker], told: Recorder
) -> None:
    _, broker = memory
    result = submit_order(db_url, broker, SPY, intent(), CTX)
    assert result.status is OrderStatus.FILLED
    submit_order(db_url, broker, SPY, intent(), CTX)  # a rerun is reused: nothing new to tell
    (filled,) = told.events
    assert filled.kind is EventKind.ORDER_FILLED and filled.name == "trader.order.filled"
    assert filled.resource == Resource(f"trader.order.{result.order_id}", result.key, role="order")
    assert filled.related == (strategy_resource("spy-test"),)
    assert filled.payload["filled"] == "10" and filled.payload["status"] == "filled"
    assert filled.message.startswith(f"order {result.key} (BUY 10 SPY, dry_run): filled")


def test_a_broker_rejection_and_a_gate_refusal_are_told_as_rejected(
    db_url: str, memory: tuple[MemoryBroker, SyncBroker], told: Recorder
) -> None:
    mb, broker = memory
    mb.reject_next_order("margin", code=201)
    by_broker = submit_order(db_url, broker, SPY, intent(45), CTX)
    refusing = send_ctx(NOW, trading=TradingSettings(dry_run=False))
    by_gate = submit_order(db_url, broker, SPY, intent(46, bracket=True), refusing)  # entry and its two exits
    assert (by_broker.status, by_gate.status) == (OrderStatus.REJECTED, OrderStatus.RISK_REJECTED)
    with session_scope(db_url) as session:
        exits = orders_repo.children(session, by_gate.order_id)
        assert [c.status for c in exits] == [OrderStatus.RISK_REJECTED] * 2
    rejected = told.of(EventKind.ORDER_REJECTED)  # the bracket's refusal is told once, by its entry
    assert [e.payload["order_id"] for e in rejected] == [by_broker.order_id, by_gate.order_id]
    assert "IB 201" in rejected[0].message and "trading_mode" in rejected[1].message
    assert told.kinds() == [EventKind.ORDER_REJECTED, EventKind.ORDER_REJECTED]


def test_an_expired_signal_is_told_at_the_gate_and_by_the_monitor(
    db_url: str, memory: tuple[MemoryBroker, SyncBroker], told: Recorder
) -> None:
    _, broker = memory
    stale = submit_order(db_url, broker, SPY, intent(45, valid_h=0.01), CTX)  # valid until 09:45:36 New York
    assert stale.status is OrderStatus.EXPIRED
    mb_down, down = next(memory_broker())
    mb_down.drop_connection()
    unsent = submit_order(db_url, down, SPY, intent(46, valid_h=0.5), CTX)  # never sent: the broker is down
    assert unsent.status is OrderStatus.CREATED
    assert expire_unsent(db_url, NOW + dt.timedelta(hours=1), max_attempts=3) == [unsent.key]
    assert [e.payload["order_id"] for e in told.of(EventKind.ORDER_EXPIRED)] == [stale.order_id, unsent.order_id]
    assert told.kinds() == [EventKind.ORDER_EXPIRED, EventKind.ORDER_EXPIRED]


def test_an_order_held_for_approval_is_told_once_the_gate_passed(
    db_url: str, memory: tuple[MemoryBroker, SyncBroker], told: Recorder
) -> None:
    _, broker = memory
    from tests.test_send_gate import CTX as REAL_BROKER_CTX

    result = held(db_url, broker, intent(), REAL_BROKER_CTX)
    assert result.status is OrderStatus.CREATED
    (pending,) = told.events
    assert pending.kind is EventKind.APPROVAL_PENDING and pending.resource.id == f"trader.order.{result.order_id}"
    assert "awaiting approval until" in pending.message and pending.message.endswith(": approval rule: always")


# ---- kill switch, daily loss, reconciliation --------------------------------------------------------------------


def test_the_kill_switch_is_told_when_engaged_and_released(db_url: str, told: Recorder) -> None:
    kill_switch.engage(db_url, "news", changed_by="cli")
    kill_switch.release(db_url, changed_by="ui", reason="calm again")
    engaged, released = told.events
    assert (engaged.kind, released.kind) == (EventKind.KILL_SWITCH_ENGAGED, EventKind.KILL_SWITCH_RELEASED)
    assert engaged.message == "kill switch engaged by cli: news (0 unsent orders ended)"
    assert released.message == "kill switch released by ui: calm again"
    with pytest.raises(Exception, match="needs a reason"):
        kill_switch.engage(db_url, " ", changed_by="cli")
    assert len(told.events) == 2  # refused: nothing engaged, nothing told


def test_the_daily_loss_limit_is_told_on_its_first_trip_only(
    db_url: str, memory: tuple[MemoryBroker, SyncBroker], told: Recorder
) -> None:
    _, broker = memory
    bought = submit_order(db_url, broker, SPY, intent(45), CTX)
    assert bought.status is OrderStatus.FILLED
    assert record_dry_run_fills(db_url, bought.order_id, bought.key, broker.executions()) == 1  # 10 SPY at ~101
    crash = send_ctx(NOW, marks={"SPY": D("50")}, trading=TradingSettings(max_daily_loss_usd=D(100)))
    first = submit_order(db_url, broker, SPY, intent(46, side=OrderSide.SELL), crash)
    second = submit_order(db_url, broker, SPY, intent(47, side=OrderSide.SELL), crash)
    assert first.status is second.status is OrderStatus.RISK_REJECTED
    assert [r.split(":")[0] for r in first.reasons] == ["kill_switch", "max_daily_loss"]
    (trip,) = told.of(EventKind.DAILY_LOSS)
    assert trip.payload["limit"] == "100" and D(trip.payload["loss"]) >= 500
    assert trip.message.startswith("daily loss limit hit: loss ")


def test_a_failed_reconciliation_is_told_each_time_and_a_clean_one_is_not(
    db_url: str, memory: tuple[MemoryBroker, SyncBroker], told: Recorder
) -> None:
    mb, broker = memory
    assert reconcile(db_url, broker, NOW).ok
    mb._update_position(SPY.conid, D(4), D("100.00"), D(0))  # a position the DB has no fill for
    assert not reconcile(db_url, broker, NOW).ok
    (failed,) = told.events
    assert failed.kind is EventKind.RECONCILE_FAILED and failed.payload["differences"][0].startswith("SPY: ")
    assert "new orders are refused" in failed.message


# ---- signals -----------------------------------------------------------------------------------------------------

A, B = SignalAction.ABSTAIN, SignalAction.BUY


@pytest.mark.parametrize(
    ("recent", "streak", "tells"),
    [
        ([A, A, A], 3, True),  # the first three signals
        ([A, A, A, B], 3, True),
        ([A, A, A, A], 3, False),  # the fourth in a row: already told on the third
        ([A, A, B, A], 3, False),
        ([A], 1, True),
        ([A, A, A], 0, False),  # 0: off
    ],
)
def test_an_abstain_streak_is_told_once_per_streak(recent: list[SignalAction], streak: int, tells: bool) -> None:
    event = abstain_streak_event("spy-test", "SPY", recent, streak, "stale data")
    assert (event is not None) is tells


def test_the_signal_task_tells_the_nth_abstain_in_a_row(db_url: str, told: Recorder, tmp_path: Path) -> None:
    from tasks.signal import decide

    definition: StrategyDefinition = strategy("spy-test")
    settings = load_settings({"TRADER_DATABASE__URL": db_url, "TRADER_NOTIFICATIONS__ABSTAIN_STREAK": "2"})
    with use_runtime(Runtime(settings, clock=lambda: NOW)):
        decide.fn(definition, None, None, failure="no bars")
        assert told.events == []
        decide.fn(definition, None, None, failure="still no bars")
        decide.fn(definition, None, None, failure="and again")
    (streak,) = told.events
    assert streak.kind is EventKind.ABSTAIN_STREAK and streak.resource == strategy_resource("spy-test")
    assert streak.message == "spy-test (SPY): 2 ABSTAIN signals in a row; last: still no bars"


# ---- IB (the LLM budget: tests/test_llm_analyst.py) ------------------------------------------------------------------


def test_an_ib_outage_of_at_least_m_minutes_is_told_when_it_heals(told: Recorder) -> None:
    """The composition root builds the broker with TRADER_NOTIFICATIONS__IB_OUTAGE_MINUTES: one session with a
    threshold shorter than the outage tells, one with a longer threshold only logs."""
    from services.broker.pacing import Backoff

    fast = Backoff(attempts=3, base_s=0.01, max_s=0.05, jitter=0.2)
    with SimServer.in_thread(SimConfig(port=0)) as sim:
        runtimes = []
        for client_id, minutes in ((71, "0.005"), (72, "60")):  # 0.3 s, an hour
            env = {"TRADER_IB__PORT": str(sim.port), "TRADER_IB__CLIENT_ID": str(client_id),
                   "TRADER_NOTIFICATIONS__IB_OUTAGE_MINUTES": minutes}  # fmt: skip
            runtime = Runtime(load_settings(env))
            runtime.broker().broker.reconnect_backoff = fast  # type: ignore[attr-defined]
            runtime.broker().qualify(ContractSpec("SPY"))
            runtimes.append(runtime)
        try:
            sim.refuse_connections(2.0)  # well past the 0.3 s threshold, even when the drop is seen late
            eventually(lambda: all(r.broker().connectivity is not Connectivity.CONNECTED for r in runtimes))
            eventually(lambda: all(r.broker().connectivity is Connectivity.CONNECTED for r in runtimes), 20)
        finally:
            for runtime in runtimes:
                runtime.close()
    assert len(told.events) == 1, [(e.kind, e.message) for e in told.events]  # says what came when it fails
    (back,) = told.events
    assert back.kind is EventKind.IB_RECONNECTED and back.resource.id == f"trader.broker.127.0.0.1:{sim.port}"
    assert "clientId 71" in back.message and back.payload["down_minutes"] >= 0.005
