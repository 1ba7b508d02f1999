"""Parity test: one strategy over the same bars, in replay and in paper mode against the simulator.

**(a) replay**: :func:`services.replay.engine.replay` with the offline analyst over the bars.

**(b) paper**: a :class:`simulator.SimServer` (in a thread) serving the same bars, its market clock stepped bar by
bar, and a trader that talks to it only through the real ib_async client (``IBBroker`` behind ``SyncBroker``)
and a database (SQLite), like the strategy flow: at each daily bar's close it reads the bars from the broker
(``reqHistoricalData``), validates them, computes the indicators, runs the analyst (``services.llm.analyst.
analyze``; without an API key that is the offline analyst), makes the signal (``generate_signal``) and stores
it; a BUY/SELL goes through :func:`tasks.orders.order_for_signal` (the one order decision,
``services.orders.planning.plan_order``, then the send-time gate and ``send``). The order goes out at the next
session's open (the clock is moved there first: no bar completes on the way, and the gate sees the market
open); the clock then advances to the bar's end, which fills it, and the order monitor
(:func:`services.orders.monitor.sync_orders`) records what the broker reports.

Compared: orders (decision bar, side, quantity, type, limit, bracket stop and target), fills (bar, side,
quantity, price, commission), exits (bar, kind: stop / target / signal / time, quantity, price) and end equity (the
replay's equity at the last close vs the account's net liquidation). Printed: both sides' counts and the first
difference of each list, if any; exit status 1 on any difference.

**The same conditions on both sides** (stated, not hidden):

* Bars: the shipped SPY daily sample (``data/samples/yahoofinance-SPY-20080101-20180101.csv``), the window plus
  ``--warmup`` earlier bars, OHLC rounded to the cent (the simulator trades on the 0.01 tick; the replay's 4-place
  prices then round to the same values), no price adjustment (the simulator serves raw prices), written to one
  file both sides read.
* Strategy: ``examples/strategies/spy-sma-cross.yaml`` (DAY limit orders at the decision's close, risk-based
  sizing, the analyst's ATR stop and target as a bracket) with one change: ``lookback: 10 Y`` (the paper trader
  asks for every bar of the file, so its Wilder-smoothed RSI/ATR start on the same first bar as the replay's).
  ``--order-type MKT`` runs it with market orders; ``--max-holding-bars N`` adds a time exit (the paper
  trader then runs the time-exit step, ``tasks.orders.time_exit_for``, on every bar whose signal orders nothing);
  ``--trailing-percent P`` makes the bracket's stop a TRAIL of P % (both sides follow the same rule,
  ``services.market.matching.trail_stop``).
* Fills: decision on bar ``i``'s close, sent at the next session's open, worked on bar ``i + 1``: a market order
  at its open, a limit when the bar reaches it at ``min(open, limit)`` (a BUY), a DAY limit ending with that
  session (the replay's rules; the simulator with ``placement_fill=False``, so nothing fills against the day-old
  close at placement, and ``mkt_fill="next_open"``); slippage 0 on both (the replay counts bps, the simulator an
  amount per share); commissions IB fixed on both; protective stop and target work from the entry bar on, the
  stop winning a bar that touches both.
* Cash: 100,000 on both (``SimConfig.initial_cash``, ``replay(initial_cash=...)``); tick 0.01 (``min_tick``).

``uv run python scripts/parity_test.py [--from 2017-01-03] [--bars 120] [--warmup 300]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from models.bars import TIMESTAMP  # noqa: E402
from models.enums import ExitKind, OrderSide, OrderType, SecType, SignalAction  # noqa: E402
from models.strategy import StrategyDefinition  # noqa: E402

SAMPLE: Final = ROOT / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"
STRATEGY: Final = ROOT / "examples" / "strategies" / "spy-sma-cross.yaml"
ACCOUNT: Final = "DU1234567"
CASH: Final = Decimal(100_000)
TICK: Final = Decimal("0.01")
CENT: Final = Decimal("0.01")

OrderRow = tuple[dt.date, OrderSide, Decimal, OrderType, Decimal | None, Decimal | None, Decimal | None]
FillRow = tuple[dt.date, OrderSide, Decimal, Decimal, Decimal]
ExitRow = tuple[dt.date, ExitKind, Decimal, Decimal]


@dataclass(frozen=True)
class Outcome:
    """What one side did, in comparable rows (dates are the bars' New York session dates)."""

    orders: list[OrderRow]
    fills: list[FillRow]
    exits: list[ExitRow]
    end_equity: Decimal


@dataclass(frozen=True)
class Parity:
    replay: Outcome
    paper: Outcome

    def differences(self) -> list[str]:
        """The first difference of each compared list (and of the end equity); empty when identical."""
        out = []
        for name in ("orders", "fills", "exits"):
            first = _first_difference(getattr(self.replay, name), getattr(self.paper, name))
            if first is not None:
                out.append(f"{name}: {first}")
        if self.replay.end_equity != self.paper.end_equity:
            out.append(f"end equity: replay {self.replay.end_equity} vs paper {self.paper.end_equity}")
        return out

    def report(self) -> str:
        lines = []
        for label, side in (("replay", self.replay), ("paper", self.paper)):
            counts = {k.value: sum(1 for e in side.exits if e[1] is k) for k in ExitKind}
            lines.append(
                f"{label:6}: {len(side.orders)} orders, {len(side.fills)} fills, {len(side.exits)} exits "
                f"({', '.join(f'{k} {n}' for k, n in counts.items())}), end equity {side.end_equity}"
            )
        diffs = self.differences()
        lines.append("identical" if not diffs else "DIFFERENT: " + "; ".join(diffs))
        return "\n".join(lines)


def _first_difference(a: Sequence[Any], b: Sequence[Any]) -> str | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"#{i + 1}: replay {x} vs paper {y}"
    if len(a) != len(b):
        longer, label = (a, "replay") if len(a) > len(b) else (b, "paper")
        return f"#{min(len(a), len(b)) + 1}: only {label} has {longer[min(len(a), len(b))]}"
    return None


def _day(when: dt.datetime | pd.Timestamp) -> dt.date:
    """The session date of a daily bar: its UTC label (00:00 UTC of the date), or a time during / at the end of
    its session (the simulator stamps a fill with the end of the bar it filled on, 20:00 or 21:00 UTC)."""
    return pd.Timestamp(when).tz_convert("UTC").date()


# ---------------------------------------------------------------------------------------------------------------------
# Inputs


def parity_strategy(
    order_type: OrderType | None = None, max_holding_bars: int | None = None, trailing_percent: Decimal | None = None
) -> StrategyDefinition:
    """The shipped strategy with ``lookback: 10 Y`` (and ``order_type`` when given; as shipped: LMT DAY; a time
    exit after ``max_holding_bars`` and a trailing stop of ``trailing_percent`` when given: as shipped none)."""
    from models.strategy import TrailingStop
    from services.strategies import load_strategy_file

    base = load_strategy_file(STRATEGY)
    risk = base.risk if order_type is None else base.risk.model_copy(update={"order_type": order_type})
    trail = TrailingStop(percent=trailing_percent) if trailing_percent is not None else None
    risk = risk.model_copy(update={"max_holding_bars": max_holding_bars, "trailing_stop": trail})
    return base.model_copy(update={"name": "parity", "lookback": "10 Y", "risk": risk})


def write_bars(directory: Path, start: dt.date, bars: int, warmup: int) -> tuple[Path, list[pd.Timestamp]]:
    """Write the window (``bars`` daily bars from ``start``) plus ``warmup`` earlier bars, OHLC in cents, as a
    Yahoo CSV both sides read; return its path and the window's bar times."""
    raw = pd.read_csv(SAMPLE)
    dates = pd.to_datetime(raw["Date"])
    first = int((dates >= pd.Timestamp(start)).to_numpy().argmax())
    if first + bars > len(raw) or first < warmup:
        raise SystemExit(f"window {start} + {bars} bars (warmup {warmup}) is outside {SAMPLE.name}")
    part = raw.iloc[first - warmup : first + bars].copy()
    for col in ("Open", "High", "Low", "Close", "Adj Close"):
        part[col] = part[col].round(2)
    part["Adj Close"] = part["Close"]
    path = directory / "yahoofinance-SPY-parity.csv"
    part.to_csv(path, index=False)
    from services.bars.loader import load_bars

    times = list(pd.DatetimeIndex(load_bars(path).frame[TIMESTAMP]))[warmup:]
    return path, times


# ---------------------------------------------------------------------------------------------------------------------
# (a) replay


def run_replay(definition: StrategyDefinition, bars: Path, window: list[pd.Timestamp]) -> Outcome:
    from services.bars.loader import load_bars
    from services.llm.store import InMemoryLlmCallStore
    from services.replay.engine import replay
    from services.settings import load_settings

    result = replay(
        definition,
        load_bars(bars).frame,
        start=window[0],
        end=window[-1],
        settings=load_settings({}),
        store=InMemoryLlmCallStore(),
        initial_cash=CASH,
        adjust=False,
        min_tick=TICK,
    )
    orders = [(_day(o.bar_time), o.side, o.quantity, o.order_type, o.limit, o.stop, o.target) for o in result.orders]
    fills = [(_day(f.bar_time), f.side, f.quantity, f.price, f.commission) for f in result.fills]
    exits: list[ExitRow] = []
    for t in result.trades:
        assert t.exit_time is not None and t.exit_price is not None and t.exit_kind is not None
        exits.append((_day(t.exit_time), t.exit_kind, t.quantity, t.exit_price))
    end = Decimal(repr(float(result.equity.iloc[-1]))).quantize(CENT)
    return Outcome(orders, fills, exits, end)


# ---------------------------------------------------------------------------------------------------------------------
# (b) paper mode against the simulator


def eventually(check: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def run_paper(definition: StrategyDefinition, bars: Path, window: list[pd.Timestamp], work: Path) -> Outcome:
    from services.bars.validation import validate_bars
    from services.broker.ib_adapter import IBBroker
    from services.broker.loop_owner import SyncBroker
    from services.broker.pacing import Backoff, HistoricalLimiter, ManualClock
    from services.broker.types import BarRequest, ContractSpec
    from services.db import session_scope, upgrade_schema
    from services.indicators import compute_indicators
    from services.llm.analyst import analyze, build_request
    from services.llm.prompts import load_template
    from services.llm.store import InMemoryLlmCallStore
    from services.prompt_library import SHIPPED_DIR
    from services.repositories import signals as signals_repo
    from services.runtime import Runtime, use_runtime
    from services.settings import IBSettings, load_settings
    from services.signals import generate_signal
    from services.strategies import save_definition
    from simulator import SimConfig, SimServer
    from tasks.market_data import MarketData
    from tasks.orders import order_for_signal, time_exit_for
    from tasks.signal import StoredSignal

    db_url = f"sqlite:///{work / 'parity.db'}"
    upgrade_schema(db_url)
    with session_scope(db_url) as session:
        save_definition(session, definition)
    settings = load_settings({}, data_dir=work, database={"url": db_url}, trading={"dry_run": False})
    template_name, body = load_template(SHIPPED_DIR, definition.prompt)
    store = InMemoryLlmCallStore()
    pace = ManualClock(1_000.0)  # historical pacing on simulated seconds, shared by the client and the server
    bar_end = _bar_ends(window)
    config = SimConfig(
        data_dir=bars.parent,
        accounts=(ACCOUNT,),
        initial_cash=CASH,
        mkt_fill="next_open",
        placement_fill=False,
        slippage=Decimal(0),
        now=bar_end[0] - dt.timedelta(days=1),  # before the window: the first advance completes its first bar
        pacing_time=pace.now,
        farm_notices=False,
    )
    clock = {"now": bar_end[0]}
    with SimServer.in_thread(config) as sim, use_runtime(Runtime(settings, clock=lambda: clock["now"])):
        broker = SyncBroker(
            lambda: IBBroker.from_settings(
                IBSettings(port=sim.port, client_id=17, connect_timeout_s=5, request_timeout_s=10),
                order_ack_timeout_s=5,
                reconnect=Backoff(attempts=60, base_s=0.05, max_s=0.2),
                hist_limiter=HistoricalLimiter(clock=pace),
            )
        )
        broker.connect()
        try:
            contract = broker.qualify(ContractSpec(definition.symbol, SecType.STK))
            request = BarRequest(definition.bar_size, definition.lookback, use_rth=definition.use_rth)
            sim.clock.set(bar_end[0] - dt.timedelta(hours=1))
            for i, end in enumerate(bar_end):
                sim.clock.advance_to(end)  # bar i completes: resting orders match against it
                clock["now"] = end
                _settle(sim, broker, db_url, end)
                pace.advance(20.0)
                frame = broker.historical_bars(contract, request)
                checked = validate_bars(frame, bar_size=definition.bar_size, policy=settings.trading.bad_row_policy)
                data = MarketData(checked.frame, checked)
                assert data.last_bar_time == window[i], (data.last_bar_time, window[i])
                indicators = compute_indicators(data.frame, definition.indicators)
                outcome = analyze(
                    build_request(definition, indicators, body, template_name=template_name),
                    settings=settings.llm,
                    store=store,
                    chart_png=None,
                    now=end,
                    backend=None,
                )
                bar_time = data.last_bar_time.to_pydatetime()
                signal = generate_signal(
                    outcome, definition, last_bar_time=bar_time, now=end, flagged_latest=data.latest_flagged
                )
                if signal.action not in (SignalAction.BUY, SignalAction.SELL):
                    if definition.risk.max_holding_bars is not None:  # the strategy run's time-exit step
                        opening = _next_open(_day(end))
                        sim.clock.advance_to(opening)
                        clock["now"] = opening
                        time_exit_for(definition, contract, data, broker=broker, dry_run=False, now=opening)
                    continue
                with session_scope(db_url) as session:
                    row = signals_repo.record(
                        session,
                        strategy_name=definition.name,
                        symbol=definition.symbol,
                        bar_time=bar_time,
                        action=signal.action,
                        analyst=signal.analyst,
                        reason=signal.reason,
                        entry=signal.entry,
                        stop=signal.stop,
                        target=signal.target,
                    )
                    stored = StoredSignal(row.id, signal)
                opening = _next_open(_day(end))
                sim.clock.advance_to(opening)  # the next session opens: no bar completes on the way
                clock["now"] = opening
                _account_current(sim, broker)
                order_for_signal(definition, contract, data, stored, broker=broker, dry_run=False, now=opening)
            _settle(sim, broker, db_url, clock["now"])
            return _paper_outcome(db_url, sim, broker)
        finally:
            broker.close()


def _next_open(day: dt.date) -> dt.datetime:
    """The open of the first session after ``day`` (in the window or after it: an order decided on the last bar
    is placed too, as the replay places it, and stays unfilled)."""
    from services.market.sessions import session_hours

    while True:
        day += dt.timedelta(days=1)
        hours = session_hours(day)
        if hours is not None:
            return hours[0]


def _bar_ends(window: list[pd.Timestamp]) -> list[dt.datetime]:
    from services.market.sessions import session_hours

    ends = []
    for ts in window:
        hours = session_hours(_day(ts))
        assert hours is not None, f"{ts} is not a session"
        ends.append(hours[1])
    return ends


def _account_current(sim: Any, broker: Any) -> None:
    """Wait until the client's account values are the simulator's (they arrive asynchronously)."""

    def same() -> bool:
        want = {t: v for t, v, _c in sim.desk.account_values(ACCOUNT)}.get("NetLiquidation")
        values = broker.account_values()
        return want is not None and values.net_liquidation == Decimal(want)

    eventually(same, "the account values")


def _settle(sim: Any, broker: Any, db_url: str, now: dt.datetime) -> None:
    """Let every execution the simulator made reach the client, then run the order monitor."""
    from services.orders.monitor import sync_orders

    eventually(lambda: len(broker.executions()) >= len(sim.state.executions), "the executions")
    sync_orders(db_url, broker, now)
    _account_current(sim, broker)


def _paper_outcome(db_url: str, sim: Any, broker: Any) -> Outcome:
    from models.tables import Signal as SignalRow
    from services.db import session_scope
    from services.orders.submit import TIME_EXIT
    from services.repositories import fills as fills_repo
    from services.repositories import orders as orders_repo

    orders: list[OrderRow] = []
    fills: list[FillRow] = []
    exits: list[ExitRow] = []
    with session_scope(db_url) as session:
        rows = {o.id: o for o in orders_repo.list_orders(session, limit=None)}
        for o in sorted(rows.values(), key=lambda r: r.id):
            if o.parent_id is not None or o.quantity == 0 or o.ib_perm_id is None:
                continue  # children are listed with their entry; refusals never reached the broker
            kids = {c.idempotency_key.rsplit(":", 1)[-1]: c for c in orders_repo.children(session, o.id)}
            signal = session.get(SignalRow, o.signal_id) if o.signal_id is not None else None
            if signal is not None:
                decided = _day(signal.bar_time)
            else:  # a time exit on a HOLD / ABSTAIN bar: its key names the bar (strategy:SYMBOL:bar:side:time)
                assert o.idempotency_key.endswith(TIME_EXIT), o.idempotency_key
                decided = dt.date.fromisoformat(o.idempotency_key.split(":")[2][:8])
            orders.append(
                (
                    decided,
                    o.side,
                    o.quantity,
                    o.order_type,
                    o.limit_price,
                    kids["SL"].stop_price if "SL" in kids else None,
                    kids["TP"].limit_price if "TP" in kids else None,
                )
            )
        position = Decimal(0)
        for f in sorted(fills_repo.effective(session), key=lambda f: (f.executed_at, f.id)):
            assert f.commission is not None
            fills.append((_day(f.executed_at), f.side, f.quantity, f.price, f.commission))
            signed = f.quantity if f.side is OrderSide.BUY else -f.quantity
            if position != 0 and (position > 0) != (signed > 0):
                order = rows.get(f.order_id) if f.order_id is not None else None
                key = order.idempotency_key if order is not None else ""
                kind = (
                    ExitKind.STOP
                    if key.endswith(":SL")
                    else ExitKind.TARGET
                    if key.endswith(":TP")
                    else ExitKind.TIME
                    if key.endswith(TIME_EXIT)
                    else ExitKind.SIGNAL
                )
                exits.append((_day(f.executed_at), kind, min(abs(position), f.quantity), f.price))
            position += signed
    account = broker.account_values()
    return Outcome(orders, fills, exits, Decimal(account.net_liquidation).quantize(CENT))


# ---------------------------------------------------------------------------------------------------------------------


def run(
    start: dt.date,
    bars: int,
    warmup: int,
    order_type: OrderType | None = None,
    max_holding_bars: int | None = None,
    trailing_percent: Decimal | None = None,
) -> Parity:
    definition = parity_strategy(order_type, max_holding_bars, trailing_percent)
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        work = Path(tmp)
        data_dir = work / "bars"
        data_dir.mkdir()
        path, window = write_bars(data_dir, start, bars, warmup)
        replayed = run_replay(definition, path, window)
        paper = run_paper(definition, path, window, work)
    return Parity(replayed, paper)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--from", dest="start", default="2017-01-03", help="first bar of the window")
    parser.add_argument("--bars", type=int, default=120, help="daily bars in the window")
    parser.add_argument("--warmup", type=int, default=300, help="bars before the window (indicator warm-up)")
    parser.add_argument("--order-type", choices=["LMT", "MKT"], help="override the strategy's (LMT as shipped)")
    parser.add_argument("--max-holding-bars", type=int, help="add a time exit after this many bars (none as shipped)")
    parser.add_argument("--trailing-percent", type=Decimal, help="make the bracket's stop a trailing stop (% of price)")
    args = parser.parse_args(argv)
    order_type = OrderType(args.order_type) if args.order_type else None
    start = dt.date.fromisoformat(args.start)
    parity = run(start, args.bars, args.warmup, order_type, args.max_holding_bars, args.trailing_percent)
    kind = (order_type or parity_strategy().risk.order_type).value
    timed = f", time exit after {args.max_holding_bars} bars" if args.max_holding_bars else ""
    trailing = f", trailing stop {args.trailing_percent}%" if args.trailing_percent else ""
    print(f"{STRATEGY.name} ({kind}{timed}{trailing}), {args.bars} bars from {args.start}")
    print(parity.report())
    return 0 if not parity.differences() else 1


if __name__ == "__main__":
    sys.exit(main())
