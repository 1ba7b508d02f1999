"""Randomized safety test: nothing reaches the broker unless the risk gate passed it at that moment.

Each run starts a fresh database (SQLite, or PostgreSQL with ``--postgres``) and a fresh TWS-protocol simulator,
stores three strategies, then performs ``--steps`` random actions. Trading actions run in child processes with
the real ib_async client (clientId 17, one at a time, as the order-owning service): signals (the strategy flow's
order step), retries, the order monitor, reconcile, ``halt --cancel-all``; a child may be SIGKILLed at a random
moment. Meanwhile the parent interleaves: halt / resume, deactivate / activate / delete / re-create a strategy,
dropped connections, outages (refused connections), simulator restarts (the gateway goes away and comes back with
IB's state kept) and market-clock moves (which fill resting orders and expire signals). At the end a recovery
child reconciles and monitors until nothing is working.

The broker side is audited from the simulator's own log of every placeOrder it received (``SimState.placed``:
wall time and market time of arrival). Invariants per order that arrived:

* ``kill_switch``: it did not arrive while the kill switch was engaged (the switch's history in the DB);
* ``inactive_strategy``: it did not arrive while its strategy was inactive or deleted (the parent's log, taken
  inside the exclusive send lock);
* ``expired``: it did not arrive at or after its signal's expiry (market time; a bracket child: its entry's);
* ``no_gate_decision``: its order row (for a bracket's take-profit or stop: its entry's row, as they go out
  together) holds an approved gate decision taken at the market time it arrived;
* ``duplicate``: no orderRef arrived twice;
* ``fill_lost``: every execution the simulator made for our orders is in our fills table after recovery.
* ``state_lost``: after recovery every order of ours at the broker has the broker's state in our DB (filled,
  cancelled, or working: submitted / partially filled, with the broker's filled quantity).

Prints the runs, the actions done, the orders sent and refused, and the violations per invariant; exits 1 on
any violation. ``python scripts/safety_test.py --runs 200 --seed 1 [--postgres]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.crash_test import CLIENT_ID, _wait_client_gone  # noqa: E402  (the one order-owning clientId)

STRATEGIES = ("safe-a", "safe-b", "safe-c")
START = dt.datetime(2017, 6, 5, 14, 0, tzinfo=dt.UTC)  # Monday 10:00 New York, inside the SPY daily samples
SESSION_END = dt.time(19, 30)  # UTC: 15:30 New York, the last market time a step may use
PRELOAD = ["services.broker.ib_adapter", "services.orders.monitor", "tasks.orders", "services.strategies"]
INVARIANTS = (
    "kill_switch", "inactive_strategy", "expired", "no_gate_decision", "duplicate", "fill_lost", "state_lost"
)  # fmt: skip
CHILD_ACTIONS = ("signal", "retry", "monitor", "reconcile", "cancel_all")
CHILD_TIMEOUT_S = 30.0  # an action not answered by then counts as a hung trader (killed)


# ---------------------------------------------------------------------------------------------------------------------
# The child (forked from a preloaded server process)


def _definition(name: str) -> Any:
    from models.enums import OrderType, SizingMethod
    from services.strategies import load_strategy_file

    base = load_strategy_file(ROOT / "examples" / "strategies" / "spy-sma-cross.yaml")
    sizing = base.risk.sizing.model_copy(update={"method": SizingMethod.FIXED_QUANTITY, "quantity": Decimal(1)})
    order_type = OrderType.MARKET if name == "safe-a" else OrderType.LIMIT
    risk = base.risk.model_copy(
        update={
            "sizing": sizing,
            "order_type": order_type,
            "max_position": Decimal(3),
            "max_orders_per_day": 6,
            "order_expiry_bars": 1,
        }
    )
    return base.model_copy(update={"name": name, "risk": risk})


def trader_main(conn: Any, params: dict[str, Any]) -> None:
    """The trading process: one broker session (real ib_async, clientId 17, reconnecting by itself), actions
    received over ``conn`` one at a time, each answered with a small dict. SIGKILLed at random by the parent."""
    from models.enums import AnalystKind, BadRowPolicy, BarSize, SecType, SignalAction
    from services.bars.validation import ValidationResult
    from services.broker.ib_adapter import IBBroker
    from services.broker.loop_owner import SyncBroker
    from services.broker.pacing import Backoff
    from services.broker.types import ContractSpec
    from services.db import session_scope
    from services.errors import TraderError
    from services.orders.monitor import cancel_all, reconcile, retry_orders, sync_orders
    from services.orders.submit import SendContext
    from services.repositories import signals
    from services.runtime import Runtime, use_runtime
    from services.settings import load_settings
    from services.signals import Signal
    from tasks.market_data import MarketData
    from tasks.orders import order_for_signal
    from tasks.signal import StoredSignal

    db_url: str = params["db_url"]
    settings = load_settings({}, data_dir=Path(params["data_dir"]), database={"url": db_url},
                             trading={"dry_run": False})  # fmt: skip
    broker = SyncBroker(
        lambda: IBBroker.from_settings(
            settings.ib, port=params["port"], client_id=CLIENT_ID, connect_timeout_s=3, request_timeout_s=5,
            order_ack_timeout_s=3, reconnect=Backoff(attempts=1000, base_s=0.05, max_s=0.5),
        )
    )  # fmt: skip
    clock = {"now": dt.datetime.fromisoformat(params["now"])}
    contract = None
    with use_runtime(Runtime(settings, clock=lambda: clock["now"])):
        while True:
            try:
                action, args = conn.recv()
            except EOFError:
                break
            now = clock["now"] = dt.datetime.fromisoformat(args["now"])
            result: dict[str, Any] = {"action": action}
            try:
                if contract is None:
                    broker.connect()
                    contract = broker.qualify(ContractSpec("SPY", SecType.STK))
                ctx = SendContext(trading=settings.trading, now=now, dry_run=False)
                if action == "signal":
                    definition = _definition(args["strategy"])
                    bar_time = dt.datetime.fromisoformat(args["bar_time"])
                    side = SignalAction(args["side"])
                    frame = _frame(args["closes"], bar_time)
                    checked = ValidationResult(frame, [], BadRowPolicy.FLAG, BarSize.DAY_1, len(frame), 0, 0, 0, 0, 0)
                    entry = Decimal(str(args["closes"][-1]))
                    with session_scope(db_url) as session:
                        row = signals.record(session, strategy_name=definition.name, symbol="SPY",
                                             bar_time=bar_time, action=side, analyst=AnalystKind.OFFLINE,
                                             reason="safety test")  # fmt: skip
                        # as every real BUY/SELL signal: a stop and a target, so the entry goes out as a bracket
                        sign = Decimal(1) if side is SignalAction.BUY else Decimal(-1)
                        stop, target = (entry * (1 - sign * Decimal(p)) for p in ("0.02", "-0.03"))
                        signal_ = Signal(side, "safety", AnalystKind.OFFLINE, bar_time, entry=entry,
                                         stop=stop.quantize(Decimal("0.01")),
                                         target=target.quantize(Decimal("0.01")))  # fmt: skip
                        stored = StoredSignal(row.id, signal_)
                    placed = order_for_signal(definition, contract, MarketData(frame, checked), stored,
                                              broker=broker, dry_run=False, now=now)  # fmt: skip
                    result["status"] = placed.status.value
                    result["reasons"] = list(placed.reasons)
                elif action == "retry":
                    retried = retry_orders(db_url, broker, lambda _w, c=contract: c, 3, ctx)  # type: ignore[misc]
                    result["retried"] = [r.status.value for r in retried]
                elif action == "monitor":
                    result["fills"] = sync_orders(db_url, broker, now).new_fills
                elif action == "reconcile":
                    report = reconcile(db_url, broker, now)
                    result["ok"], result["problem"] = report.ok, report.error or report.differences
                elif action == "cancel_all":
                    result["errors"] = cancel_all(db_url, lambda: broker, "safety test: halt --cancel-all").errors
                elif action == "recover":
                    # what the scheduled reconcile + monitor do after an outage: retried until they run clean
                    # (the connection the parent dropped last may not be seen as dropped yet)
                    deadline = time.monotonic() + 30
                    while True:
                        try:
                            recon = reconcile(db_url, broker, now)
                            if recon.error is None:
                                sync_orders(db_url, broker, now)
                                result["ok"], result["problem"] = recon.ok, recon.differences
                                break
                        except TraderError:
                            pass
                        if time.monotonic() > deadline:
                            raise TimeoutError("reconcile and monitor did not run clean within 30 s")
                        time.sleep(0.1)
            except Exception as exc:  # a refused connection, a timeout: the action failed, the run goes on
                result["error"] = f"{type(exc).__name__}: {exc}"[:200]
            conn.send(result)
    broker.close()


def _frame(closes: list[float], last: dt.datetime) -> Any:
    import pandas as pd

    n = len(closes)
    times = pd.DatetimeIndex([last - dt.timedelta(days=n - 1 - i) for i in range(n)])
    return pd.DataFrame({"timestamp": times, "open": closes, "high": [c + 1 for c in closes],
                         "low": [c - 1 for c in closes], "close": closes, "volume": [1e6] * n})  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# The parent


@dataclass
class Totals:
    runs: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    violations: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    kills: int = 0
    run_s: list[float] = field(default_factory=list)

    @property
    def broken(self) -> int:
        return sum(self.violations.values())


@dataclass
class RunState:
    db_url: str
    data_dir: Path
    now: dt.datetime
    inactive_since: dict[str, float | None] = field(default_factory=dict)  # strategy -> wall time it stopped
    inactive: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # closed inactive intervals


def _advance(now: dt.datetime, rng: random.Random) -> dt.datetime:
    """The next market time: minutes later in the session, or the next weekday's morning."""
    from services import calendar

    if rng.random() < 0.7:
        later = now + dt.timedelta(minutes=rng.randint(1, 90))
        if later.time() <= SESSION_END:
            return later
    day = now.date() + dt.timedelta(days=1)
    while not calendar.is_session(day):
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(14, rng.randint(0, 59)), dt.UTC)


def _previous_session(now: dt.datetime) -> dt.datetime:
    from services import calendar

    day = now.date() - dt.timedelta(days=1)
    while not calendar.is_session(day):
        day -= dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(0), dt.UTC)


def _set_active(state: RunState, name: str, active: bool, *, delete: bool = False) -> None:
    """Deactivate / activate / delete / re-create under the exclusive send lock; log the wall time inside it."""
    from services.db import session_scope
    from services.orders.send_lock import send_lock
    from services.repositories import strategies as repo
    from services.strategies import save_definition

    with send_lock(state.db_url, exclusive=True):
        with session_scope(state.db_url) as session:
            if delete:
                repo.delete(session, name)
            elif repo.get_by_name(session, name) is None:
                save_definition(session, _definition(name).model_copy(update={"active": active}))
            else:
                repo.set_active(session, name, active)
        at = time.time()  # committed; still inside the lock: no send of this strategy is past its gate now
        since = state.inactive_since.get(name)
        if not active and since is None:
            state.inactive_since[name] = at
        elif active and since is not None:
            state.inactive.setdefault(name, []).append((since, at))
            state.inactive_since[name] = None


class Trader:
    """The parent's handle on the trading process: start, send an action, wait for its answer, SIGKILL."""

    def __init__(self, mp: Any, params: dict[str, Any], totals: Totals) -> None:
        self.mp, self.params, self.totals = mp, params, totals
        self.proc: Any = None
        self.conn: Any = None

    def start(self) -> None:
        parent, child = self.mp.Pipe()
        self.proc = self.mp.Process(target=trader_main, args=(child, self.params))
        self.proc.start()
        child.close()
        self.conn = parent

    def send(self, action: str, args: dict[str, Any]) -> None:
        if self.proc is None or not self.proc.is_alive():
            self.start()
        self.conn.send((action, args))

    def answer(self, timeout_s: float = CHILD_TIMEOUT_S) -> dict[str, Any] | None:
        if self.conn.poll(timeout_s):
            try:
                result: dict[str, Any] = self.conn.recv()
                return result
            except EOFError:
                return None
        self.totals.outcomes["trader hung (killed)"] += 1
        self.kill()
        return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.join()
            self.totals.kills += 1
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.conn.close()
            self.proc.join(10)
            if self.proc.is_alive():
                self.kill()
        self.proc = None


def one_run(index: int, seed: int, steps: int, db_url: str, tmp: Path, mp: Any, totals: Totals) -> None:
    from services.db import dispose_engines, session_scope, upgrade_schema
    from services.orders import kill_switch
    from services.strategies import save_definition
    from simulator import SimConfig, SimServer
    from simulator.server import cached_catalog

    rng = random.Random(seed)
    begun = time.perf_counter()
    upgrade_schema(db_url)
    state = RunState(db_url=db_url, data_dir=tmp, now=START + dt.timedelta(days=rng.randint(0, 60)))
    while not _is_weekday(state.now):
        state.now += dt.timedelta(days=1)
    with session_scope(db_url) as session:
        for name in STRATEGIES:
            save_definition(session, _definition(name))
    dispose_engines()
    catalog = {inst.symbol: inst for inst in cached_catalog(ROOT / "data" / "samples")}
    daily = next(s for size, s in catalog["SPY"].series.items() if size.value == "1 day").frame
    trader = Trader(mp, {"db_url": db_url, "port": 0, "now": state.now.isoformat(), "data_dir": str(tmp)}, totals)
    engaged = False
    with SimServer.in_thread(SimConfig(port=0, data_dir=ROOT / "data" / "samples", now=state.now)) as sim:
        trader.params["port"] = sim.port
        for _ in range(steps):
            roll = rng.random()
            action = (
                "signal" if roll < 0.40 else "retry" if roll < 0.52 else "monitor" if roll < 0.60
                else "reconcile" if roll < 0.65 else "cancel_all" if roll < 0.68 else "parent"
            )  # fmt: skip
            sent = False
            if action in CHILD_ACTIONS:
                args: dict[str, Any] = {"now": state.now.isoformat()}
                if action == "signal":
                    bar = _previous_session(state.now)
                    upto = daily[daily["timestamp"] <= bar].tail(30)
                    args |= {"strategy": rng.choice(STRATEGIES), "side": rng.choice(["BUY", "BUY", "SELL"]),
                             "bar_time": bar.isoformat(), "closes": [float(c) for c in upto["close"]]}  # fmt: skip
                totals.actions[action] += 1
                trader.send(action, args)
                sent = True
            # the parent acts meanwhile (concurrently with the trader's action, when there is one)
            if action == "parent" or rng.random() < 0.35:
                engaged = _parent_action(rng, sim, state, totals, engaged, kill_switch)
            if sent:
                if rng.random() < 0.12:  # a crash somewhere in the action (or just after it)
                    time.sleep(rng.uniform(0.0, 0.05))
                    totals.actions["crash (SIGKILL)"] += 1
                    trader.kill()
                    _wait_client_gone(sim, timeout_s=15.0)
                else:
                    result = trader.answer()
                    if result is not None:
                        key = result.get("status") or ("error" if "error" in result else "done")
                        totals.outcomes[f"{action}: {key}"] += 1
                        if os.environ.get("SAFETY_DEBUG"):
                            print(f"  {time.strftime('%X')} {action}: {result}", flush=True)
            if rng.random() < 0.3:  # the market moves between actions (never while the trader acts)
                state.now = _advance(state.now, rng)
                sim.clock.advance_to(state.now)
        if engaged and rng.random() < 0.5:
            kill_switch.release(db_url, changed_by="safety test")
        totals.actions["recover"] += 1
        trader.send("recover", {"now": state.now.isoformat()})
        recovered = trader.answer(timeout_s=45.0) or {"error": "no answer"}
        totals.outcomes[
            "recover: " + ("error" if "error" in recovered else "ok" if recovered["ok"] else "differences")
        ] += 1
        if os.environ.get("SAFETY_DEBUG"):
            print(f"  {time.strftime('%X')} recover: {recovered}", flush=True)
        trader.stop()
        _wait_client_gone(sim, timeout_s=15.0)
        check(sim, state, totals, index)
    dispose_engines()
    totals.run_s.append(time.perf_counter() - begun)


def _is_weekday(ts: dt.datetime) -> bool:
    from services import calendar

    return calendar.is_session(ts.date())


def _parent_action(rng: random.Random, sim: Any, state: RunState, totals: Totals, engaged: bool, ks: Any) -> bool:
    roll = rng.random()
    if roll < 0.10:
        totals.actions["halt"] += 1
        ks.engage(state.db_url, "safety test halt", changed_by="safety test")
        return True
    if roll < 0.30:
        totals.actions["resume"] += 1
        ks.release(state.db_url, changed_by="safety test")
        return False
    if roll < 0.58:
        name = rng.choice(STRATEGIES)
        kind = rng.choice(["deactivate", "activate", "delete", "activate"])
        totals.actions[kind] += 1
        _set_active(state, name, kind == "activate", delete=kind == "delete")
        return engaged
    if roll < 0.75:
        totals.actions["disconnect"] += 1
        sim.drop_connections()
    elif roll < 0.88:
        totals.actions["outage"] += 1
        sim.refuse_connections(rng.uniform(0.1, 0.8))
    else:
        totals.actions["gateway restart"] += 1
        sim.refuse_connections(rng.uniform(0.8, 2.0))
    return engaged


def _engaged_intervals(db_url: str) -> list[tuple[float, float]]:
    from services.orders import kill_switch

    intervals: list[tuple[float, float]] = []
    opened: float | None = None
    for h in reversed(kill_switch.history(db_url, limit=10_000)):
        if h.engaged and opened is None:
            opened = h.at.timestamp()
        elif not h.engaged and opened is not None:
            intervals.append((opened, h.at.timestamp()))
            opened = None
    if opened is not None:
        intervals.append((opened, float("inf")))
    return intervals


def check(sim: Any, state: RunState, totals: Totals, index: int) -> None:
    from services.db import session_scope
    from services.repositories import fills as fills_repo
    from services.repositories import orders as orders_repo

    def violate(name: str, what: str) -> None:
        totals.violations[name] += 1
        if len(totals.examples) < 20:
            totals.examples.append(f"run {index}: {name}: {what}")

    totals.runs += 1
    engaged = _engaged_intervals(state.db_url)
    inactive = {name: list(spans) for name, spans in state.inactive.items()}
    for name, since in state.inactive_since.items():
        if since is not None:
            inactive.setdefault(name, []).append((since, float("inf")))
    ours = [p for p in sim.state.placed if p.client_id == CLIENT_ID]
    for ref, count in Counter(p.order_ref for p in ours).items():
        if count > 1:
            violate("duplicate", f"{ref} arrived {count} times")
    totals.sent += len(ours)
    with session_scope(state.db_url) as session:
        for p in ours:
            if any(a <= p.wall_time < b for a, b in engaged):
                violate("kill_switch", f"{p.order_ref} arrived while engaged")
            strategy = p.order_ref.split(":")[0]
            if any(a <= p.wall_time < b for a, b in inactive.get(strategy, [])):
                violate("inactive_strategy", f"{p.order_ref} arrived while {strategy} was inactive or deleted")
            row = orders_repo.get_by_key(session, p.order_ref)
            if row is not None and row.parent_id is not None:  # a bracket child goes out with its entry
                row = orders_repo.get(session, row.parent_id)
            decision = (row.risk_decision or {}) if row is not None else {}
            if row is None or not decision.get("approved") or decision.get("at") != p.market_time.isoformat():
                violate("no_gate_decision", f"{p.order_ref}: {decision.get('approved')} at {decision.get('at')}")
            if row is not None and (row.expires_at is None or p.market_time >= row.expires_at):
                violate("expired", f"{p.order_ref} arrived {p.market_time} after expiry {row.expires_at}")
        known = {f.exec_id for f in fills_repo.effective(session)}
        refs = {p.order_ref for p in ours}
        for ex in sim.state.executions:
            order = sim.state.orders.get(ex.perm_id)
            if order is not None and order.order_ref in refs and ex.exec_id not in known:
                violate("fill_lost", f"{ex.exec_id} of {order.order_ref}")
        expected = {"Filled": {"filled"}, "Cancelled": {"cancelled"}, "Inactive": {"inactive", "rejected"}}
        working = {"submitted", "partially_filled"}
        for order in sim.state.orders.values():
            if order.client_id != CLIENT_ID or order.order_ref not in refs:
                continue
            row = orders_repo.get_by_key(session, order.order_ref)
            at_broker = order.status.value
            ours = row.status.value if row is not None else "missing"
            if ours not in expected.get(at_broker, working) or (
                row is not None and row.filled_quantity != order.filled
            ):
                violate("state_lost", f"{order.order_ref}: {at_broker} {order.filled} at the broker, {ours} here")
        for row in orders_repo.list_orders(session, limit=None):
            totals.outcomes[f"order ended {row.status.value}"] += 1


def run(
    runs: int,
    seed: int,
    steps: int,
    *,
    postgres: bool = False,
    quiet: bool = False,
    make_db: Callable[[int, Path], str] | None = None,
) -> Totals:
    """``make_db(run index, temp dir)`` gives each run's database URL (default: a SQLite file, or a database in a
    throwaway PostgreSQL cluster with ``postgres``)."""
    totals = Totals()
    mp = multiprocessing.get_context("forkserver")
    mp.set_forkserver_preload(PRELOAD)
    cluster = None
    if postgres and make_db is None:
        from tests.pg import PgCluster

        cluster = PgCluster().start()
    try:
        for i in range(runs):
            with tempfile.TemporaryDirectory(prefix="safety-test-") as tmp:
                if make_db is not None:
                    db_url = make_db(i, Path(tmp))
                elif cluster is not None:
                    db_url, _ = cluster.create_database(f"safety_{i}")
                else:
                    db_url = f"sqlite:///{tmp}/safety.db"
                one_run(i, seed * 100_003 + i, steps, db_url, Path(tmp), mp, totals)
            if not quiet and (i + 1) % 10 == 0:
                print(f"  {i + 1}/{runs} runs, {totals.sent} orders sent, {totals.broken} violations", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    return totals


def report(totals: Totals, wall_s: float, backend: str) -> str:
    lines = [
        f"safety test ({backend}): {totals.runs} runs in {wall_s:.0f} s, {totals.sent} orders reached the broker, "
        f"{totals.kills} trader processes SIGKILLed, "
        f"run p50 {sorted(totals.run_s)[len(totals.run_s) // 2] if totals.run_s else 0:.1f} s",
        "actions: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.actions.items())),
        "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.outcomes.items())),
        "violations per invariant: " + ", ".join(f"{name} {totals.violations[name]}" for name in INVARIANTS),
    ]
    lines += [f"  {example}" for example in totals.examples]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=30, help="random actions per run")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL instead of SQLite")
    args = parser.parse_args(argv)
    if args.runs <= 0 or args.steps <= 0:
        parser.error("--runs and --steps must be positive")
    started = time.perf_counter()
    totals = run(args.runs, args.seed, args.steps, postgres=args.postgres)
    print(report(totals, time.perf_counter() - started, "PostgreSQL" if args.postgres else "SQLite"))
    unrecovered = totals.outcomes.get("recover: error", 0)
    if unrecovered:
        print(f"{unrecovered} runs did not recover (reconcile never ran clean): their fills were not all checked")
    return 1 if totals.broken or unrecovered else 0


if __name__ == "__main__":
    sys.exit(main())
