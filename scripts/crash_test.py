"""Crash test of the signal -> order path: kill the process at a random point, recover, check the invariants.

The TWS-protocol simulator runs in THIS process (``SimServer.in_thread``), so the broker's state survives every
crash. Each iteration:

1. a child process (forked from a pre-imported fork server, so it starts in milliseconds) records a BUY signal of
   strategy ``crash-<i>`` and runs the order path (``tasks.orders.order_for_signal``: sizing, risk gate,
   idempotent submit through the real ib_async client) and then the monitor (``sync_orders``); it SIGKILLs
   itself at the iteration's kill point (hooks live in this script's broker proxy, not in product code):

   ``before_row``   before the order path starts (nothing stored)
   ``after_row``    the order row is committed (``submitting``), placeOrder not sent
   ``after_send``   placeOrder handed to the client, killed 0-1.5 ms later (sent or not, acknowledged or not)
   ``after_ack``    the broker acknowledged (and filled) it, the DB does not know yet
   ``no_ack``       the simulator drops the socket right after processing placeOrder (no ack); then killed
   ``during_fill``  while the monitor records the fill (killed 0-20 ms after it read the executions)
   ``none``         no kill (control)

2. a fresh child process runs reconcile, the monitor, the same order path again (same bar and action, so the
   same idempotency key), the retry flow and the monitor again (until no order is active, at most 3 s).

3. this process compares the simulator's orders / executions / positions with the DB.

Printed: duplicate orders at the broker, broker orders the DB does not know, fills recorded more than once, fills
lost, orders not terminal after recovery, position mismatches (all must be 0), and timings. Exit 1 when an
invariant is broken. One fresh SQLite DB per run (it accumulates every iteration, as the simulator does).

    uv run python scripts/crash_test.py [-n 100] [--seed 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KILL_POINTS = ("before_row", "after_row", "after_send", "after_ack", "no_ack", "during_fill", "none")
CLIENT_ID = 17
BAR_TIME = dt.datetime(2017, 12, 29, tzinfo=dt.UTC)  # the last daily SPY bar of the samples
NOW = dt.datetime(2018, 1, 2, 15, 0, tzinfo=dt.UTC)  # the next session, 10:00 New York: the orders' runtime clock
PRELOAD = ["services.broker.ib_adapter", "services.orders.monitor", "tasks.orders", "services.strategies"]


def order_key(i: int) -> str:
    return f"crash-{i:04d}:SPY:{BAR_TIME:%Y%m%dT%H%M}:BUY"


# ---------------------------------------------------------------------------------------------------------------------
# The child (runs in a forked process)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillingBroker:
    """Delegates to the real broker; SIGKILLs this process at the configured point."""

    def __init__(self, inner: Any, kill: str, rng: random.Random) -> None:
        self._inner, self._kill, self._rng = inner, kill, rng

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def connectivity(self) -> Any:
        return self._inner.connectivity

    def place_order(self, contract: Any, request: Any) -> Any:
        if self._kill == "after_row":
            _die()
        if self._kill == "after_send":
            threading.Thread(target=self._inner.place_order, args=(contract, request), daemon=True).start()
            time.sleep(self._rng.uniform(0, 0.0015))
            _die()
        answer = self._inner.place_order(contract, request)
        if self._kill == "after_ack":
            _die()
        return answer

    def executions(self) -> Any:
        found = self._inner.executions()
        if self._kill == "during_fill":
            threading.Timer(self._rng.uniform(0, 0.02), _die).start()
        return found


def child_main(mode: str, i: int, kill: str, seed: int, db_url: str, port: int, frame: Any, out: str) -> None:
    """``mode`` "run" (with a kill point) or "recover"; writes a small JSON result to ``out`` when it survives."""
    from models.enums import AnalystKind, BadRowPolicy, BarSize, OrderType, SecType, SignalAction, SizingMethod
    from services.bars.validation import ValidationResult
    from services.broker.ib_adapter import IBBroker
    from services.broker.loop_owner import SyncBroker
    from services.broker.types import ContractSpec
    from services.db import session_scope
    from services.orders.monitor import reconcile, retry_orders, sync_orders
    from services.orders.submit import SendContext
    from services.repositories import orders as orders_repo
    from services.repositories import signals
    from services.runtime import Runtime, use_runtime
    from services.settings import load_settings
    from services.signals import Signal
    from services.strategies import load_strategy_file, save_definition
    from tasks.market_data import MarketData
    from tasks.orders import order_for_signal
    from tasks.signal import StoredSignal

    started = time.perf_counter()
    rng = random.Random(seed)
    settings = load_settings(
        {},
        data_dir=Path(db_url.removeprefix("sqlite:///")).parent,
        database={"url": db_url},
        trading={"dry_run": False},
    )
    base = load_strategy_file(ROOT / "examples" / "strategies" / "spy-sma-cross.yaml")
    sizing = base.risk.sizing.model_copy(update={"method": SizingMethod.FIXED_QUANTITY, "quantity": Decimal(1)})
    risk = base.risk.model_copy(
        update={
            "sizing": sizing,
            "order_type": OrderType.MARKET,
            "max_position": Decimal(1_000_000),
            "max_notional_per_order": Decimal(1_000_000),
            "order_expiry_bars": 5,  # the signal of Friday's bar is still valid on Tuesday (NOW)
        }
    )
    definition = base.model_copy(update={"name": f"crash-{i:04d}", "risk": risk})
    validation = ValidationResult(frame, [], BadRowPolicy.FLAG, BarSize.DAY_1, len(frame), 0, 0, 0, 0.0, 0.0)
    data = MarketData(frame=frame, validation=validation)
    broker = SyncBroker(
        lambda: IBBroker.from_settings(
            settings.ib,
            port=port,
            client_id=CLIENT_ID,
            connect_timeout_s=10,
            request_timeout_s=10,
            order_ack_timeout_s=5,
        )
    )
    with use_runtime(Runtime(settings)):
        broker.connect()
        contract = broker.qualify(ContractSpec("SPY", SecType.STK))
        now = NOW
        with session_scope(db_url) as session:
            save_definition(session, definition)  # the send-time gate judges by the stored strategy
        with session_scope(db_url) as session:
            row = signals.record(session, strategy_name=definition.name, symbol="SPY", bar_time=BAR_TIME,
                                 action=SignalAction.BUY, analyst=AnalystKind.OFFLINE, reason="crash test")  # fmt: skip
            stored = StoredSignal(row.id, Signal(SignalAction.BUY, "crash test", AnalystKind.OFFLINE, BAR_TIME))
        result: dict[str, Any] = {"mode": mode}
        if mode == "run":
            if kill == "before_row":
                _die()
            proxy = KillingBroker(broker, kill, rng)
            placed = order_for_signal(definition, contract, data, stored, broker=proxy, dry_run=False, now=now)
            result["placed"] = placed.status.value
            if kill == "no_ack":
                _die()
            sync_orders(db_url, proxy, now)
            if kill == "during_fill":
                time.sleep(0.05)  # the kill timer fires after the fill was (maybe) written
        else:
            checked = reconcile(db_url, broker, now)
            result["reconcile"] = {"ok": checked.ok, "differences": checked.differences, "error": checked.error,
                                   "reset": checked.reset_to_created, "adopted": checked.adopted_external}  # fmt: skip
            sync_orders(db_url, broker, now)
            again = order_for_signal(definition, contract, data, stored, broker=broker, dry_run=False, now=now)
            result["again"] = {"status": again.status.value, "reused": again.reused, "sent": again.sent,
                               "reasons": list(again.reasons)}  # fmt: skip

            ctx = SendContext(trading=settings.trading, now=now, dry_run=False)
            retried = retry_orders(db_url, broker, lambda _what: contract, 3, ctx)
            result["retried"] = [r.status.value for r in retried]
            # the monitor again, as its next scheduled runs would, until nothing is active (at most 3 s)
            deadline = time.monotonic() + 3
            while True:
                sync_orders(db_url, broker, now)
                with session_scope(db_url) as session:
                    if not orders_repo.count_open(session) or time.monotonic() > deadline:
                        break
                time.sleep(0.05)
        broker.close()
    result["elapsed_s"] = time.perf_counter() - started
    Path(out).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------------
# The parent


@dataclass
class Totals:
    duplicates: int = 0
    unknown_at_broker: int = 0
    fills_twice: int = 0
    fills_lost: int = 0
    not_terminal: int = 0
    position_mismatches: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    killed: Counter[str] = field(default_factory=Counter)  # the child really died by SIGKILL
    reached: Counter[str] = field(default_factory=Counter)  # the order was at the broker when the child ended
    outcomes: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    run_s: list[float] = field(default_factory=list)
    recover_s: list[float] = field(default_factory=list)
    iteration_s: list[float] = field(default_factory=list)

    @property
    def broken(self) -> int:
        return (
            self.duplicates
            + self.unknown_at_broker
            + self.fills_twice
            + self.fills_lost
            + self.not_terminal
            + self.position_mismatches
        )


def _wait_client_gone(sim: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while CLIENT_ID in sim.active_clients:
        if time.monotonic() > deadline:
            raise RuntimeError(f"clientId {CLIENT_ID} still connected after {timeout_s}s")
        time.sleep(0.005)


def _spawn(ctx: Any, args: tuple[Any, ...], timeout_s: float = 60.0) -> tuple[int | None, float]:
    started = time.perf_counter()
    proc = ctx.Process(target=child_main, args=args)
    proc.start()
    proc.join(timeout_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return proc.exitcode, time.perf_counter() - started


def check(sim: Any, db_url: str, i: int, totals: Totals) -> None:
    """Compare the simulator with the DB after iteration ``i`` (cumulative for orders and fills)."""
    from models.order_states import TERMINAL
    from models.tables import Fill, Order
    from services.db import session_scope
    from services.positions import build_positions
    from services.repositories import fills as fills_repo
    from services.repositories.fills import ExecId

    key = order_key(i)
    at_broker = sim.state.orders_by_ref(key)
    totals.duplicates += max(0, len(at_broker) - 1)
    with session_scope(db_url) as session:
        orders = list(session.query(Order))
        fills = list(session.query(Fill))
        effective = fills_repo.effective(session)
        ours = build_positions(effective)
        row = next((o for o in orders if o.idempotency_key == key), None)
        keys = {o.idempotency_key for o in orders}
        perms = {o.ib_perm_id for o in orders if o.ib_perm_id}
        if row is None:
            totals.outcomes["no order row"] += 1
            totals.notes.append(f"{i}: no order row")
        else:
            totals.outcomes[row.status.value] += 1
            if row.status not in TERMINAL:
                totals.not_terminal += 1
                totals.notes.append(f"{i}: {key} left {row.status.value}")
    unknown = [o for o in sim.state.orders.values() if o.order_ref not in keys and o.perm_id not in perms]
    totals.unknown_at_broker = len(unknown)
    prefixes = Counter(ExecId.parse(f.exec_id).prefix for f in effective)
    broker_execs = {e.exec_id for e in sim.state.executions}
    ours_execs = {f.exec_id for f in fills}
    totals.fills_twice = sum(n - 1 for n in prefixes.values() if n > 1) + len(ours_execs - broker_execs)
    totals.fills_lost = len(broker_execs - ours_execs)
    broker_qty = sum((p.quantity for p in sim.state.positions.values()), Decimal(0))
    our_qty = sum((s.quantity for s in ours.values()), Decimal(0))
    if broker_qty != our_qty:
        totals.position_mismatches += 1
        totals.notes.append(f"{i}: position DB {our_qty} vs broker {broker_qty}")


def run(n: int = 100, seed: int = 1, *, quiet: bool = False) -> Totals:
    from services.db import dispose_engines, upgrade_schema
    from simulator import SimConfig, SimServer
    from simulator.server import cached_catalog

    rng = random.Random(seed)
    totals = Totals()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    with tempfile.TemporaryDirectory(prefix="crash-test-") as tmp:
        db_url = f"sqlite:///{tmp}/crash.db"
        upgrade_schema(db_url)
        dispose_engines()
        out = f"{tmp}/result.json"
        catalog = {inst.symbol: inst for inst in cached_catalog(ROOT / "data" / "samples")}
        daily = next(s for size, s in catalog["SPY"].series.items() if size.value == "1 day").frame
        frame = daily.tail(60).reset_index(drop=True)
        with SimServer.in_thread(SimConfig(port=0, data_dir=ROOT / "data" / "samples")) as sim:
            for i in range(n):
                kill = KILL_POINTS[i % len(KILL_POINTS)] if n >= len(KILL_POINTS) else rng.choice(KILL_POINTS)
                totals.kills[kill] += 1
                begun = time.perf_counter()
                if kill == "no_ack":
                    sim.close_after_place_order = True
                code, took = _spawn(ctx, ("run", i, kill, rng.randrange(1 << 30), db_url, sim.port, frame, out))
                sim.close_after_place_order = False
                totals.run_s.append(took)
                if code == -signal.SIGKILL:
                    totals.killed[kill] += 1
                elif code != 0:
                    totals.notes.append(f"{i}: run child exit {code} ({kill})")
                _wait_client_gone(sim)
                totals.reached[kill] += bool(sim.state.orders_by_ref(order_key(i)))
                code, took = _spawn(ctx, ("recover", i, "none", 0, db_url, sim.port, frame, out))
                totals.recover_s.append(took)
                if code != 0:
                    totals.notes.append(f"{i}: recovery child exit {code} ({kill})")
                else:
                    result = json.loads(Path(out).read_text())
                    if not result["reconcile"]["ok"]:
                        totals.notes.append(f"{i}: reconcile {result['reconcile']}")
                _wait_client_gone(sim)
                check(sim, db_url, i, totals)
                totals.iteration_s.append(time.perf_counter() - begun)
                if not quiet and (i + 1) % 10 == 0:
                    print(f"  {i + 1}/{n} iterations, {totals.broken} invariant violations so far", flush=True)
    return totals


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"


def report(totals: Totals, n: int, wall_s: float) -> str:
    lines = [
        f"crash test: {n} iterations in {wall_s:.1f} s",
        "kill points (planned / really killed): "
        + ", ".join(f"{k} {totals.kills[k]}/{totals.killed[k]}" for k in KILL_POINTS if totals.kills[k]),
        "order at the broker when the child ended: "
        + ", ".join(f"{k} {totals.reached[k]}/{totals.kills[k]}" for k in KILL_POINTS if totals.kills[k]),
        f"duplicate orders at the broker:        {totals.duplicates}",
        f"broker orders the DB does not know:    {totals.unknown_at_broker}",
        f"fills recorded more than once:         {totals.fills_twice}",
        f"fills lost (broker has, DB has not):   {totals.fills_lost}",
        f"orders not terminal after recovery:    {totals.not_terminal}",
        f"position mismatches (DB vs broker):    {totals.position_mismatches}",
        "order outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.outcomes.items())),
        f"timings: killed run child {_ms(totals.run_s)}",
        f"         recovery child   {_ms(totals.recover_s)}",
        f"         iteration        {_ms(totals.iteration_s)}",
    ]
    lines += [f"note: {note}" for note in totals.notes[:20]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("-n", "--iterations", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.iterations <= 0:
        parser.error("--iterations must be positive")
    started = time.perf_counter()
    totals = run(args.iterations, args.seed)
    print(report(totals, args.iterations, time.perf_counter() - started))
    return 1 if totals.broken else 0


if __name__ == "__main__":
    sys.exit(main())
