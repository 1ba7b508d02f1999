"""Benchmark the order path against the TWS-protocol simulator (real ib_async client, SQLite file DB).

1. **signal -> order acknowledged**: ``tasks.orders.order_for_signal`` for one stored BUY signal: account values,
   sizing, the risk gate (its DB reads), the order row committed, placeOrder, the broker's acknowledgement, the
   row updated. One strategy per signal (``bench-<i>``), fixed quantity 1, a resting LMT order (acknowledged,
   not filled). Signals are spaced ``--gap-ms`` apart (back to back they would measure ib_async's 45 msg/s
   throttle). Goal: p50 < 50 ms.
2. **monitor with 1,000 active orders**: 1,000 resting LMT orders at the simulator and in the DB, then
   ``services.orders.monitor.sync_orders`` (one order-monitor round: broker orders and executions, every active
   order's status, fills). Goal: < 2 s.

Usage: ``uv run python benchmarks/bench_orders.py [--signals 200] [--active 1000] [--rounds 5] [--json]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _stats import ms_summary  # noqa: E402

from models.enums import (  # noqa: E402
    AnalystKind,
    BadRowPolicy,
    BarSize,
    OrderSide,
    OrderStatus,
    OrderType,
    SecType,
    SignalAction,
    SizingMethod,
)
from services.bars.validation import ValidationResult  # noqa: E402
from services.broker.ib_adapter import IBBroker  # noqa: E402
from services.broker.loop_owner import SyncBroker  # noqa: E402
from services.broker.types import ContractSpec  # noqa: E402
from services.db import dispose_engines, session_scope, upgrade_schema  # noqa: E402
from services.orders.monitor import sync_orders  # noqa: E402
from services.orders.submit import OrderIntent, SendContext, submit_order  # noqa: E402
from services.repositories import orders as orders_repo  # noqa: E402
from services.repositories import signals  # noqa: E402
from services.runtime import Runtime, use_runtime  # noqa: E402
from services.settings import load_settings  # noqa: E402
from services.signals import Signal  # noqa: E402
from services.strategies import load_strategy_file, save_definition  # noqa: E402
from simulator import SimConfig, SimServer  # noqa: E402
from simulator.server import cached_catalog  # noqa: E402
from tasks.market_data import MarketData  # noqa: E402
from tasks.orders import order_for_signal  # noqa: E402
from tasks.signal import StoredSignal  # noqa: E402

BAR_TIME = dt.datetime(2017, 12, 29, tzinfo=dt.UTC)
NOW = dt.datetime(2018, 1, 2, 15, 0, tzinfo=dt.UTC)  # the next session (the orders' runtime clock)


def run(n_signals: int, n_active: int, rounds: int, gap_s: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    catalog = {inst.symbol: inst for inst in cached_catalog(ROOT / "data" / "samples")}
    daily = next(s for size, s in catalog["SPY"].series.items() if size is BarSize.DAY_1).frame
    frame = daily.tail(60).reset_index(drop=True)
    validation = ValidationResult(frame, [], BadRowPolicy.FLAG, BarSize.DAY_1, len(frame), 0, 0, 0, 0.0, 0.0)
    data = MarketData(frame=frame, validation=validation)
    base = load_strategy_file(ROOT / "examples" / "strategies" / "spy-sma-cross.yaml")
    sizing = base.risk.sizing.model_copy(update={"method": SizingMethod.FIXED_QUANTITY, "quantity": Decimal(1)})
    risk = base.risk.model_copy(
        update={"sizing": sizing, "order_type": OrderType.LIMIT, "order_expiry_bars": 5, "max_position": Decimal(10**6)}
    )
    low = Decimal("100.00")  # far below SPY's ~267: the LMT rests (acknowledged, not filled)
    with (
        tempfile.TemporaryDirectory(prefix="bench-orders-") as tmp,
        SimServer.in_thread(SimConfig(port=0, farm_notices=False)) as sim,
    ):
        db_url = f"sqlite:///{tmp}/bench.db"
        upgrade_schema(db_url)
        settings = load_settings(
            {}, data_dir=Path(tmp), database={"url": db_url}, trading={"dry_run": False, "max_open_orders": 1_000_000}
        )
        broker = SyncBroker(lambda: IBBroker.from_settings(settings.ib, port=sim.port, client_id=17))
        broker.connect()
        with use_runtime(Runtime(settings)):
            spy = broker.qualify(ContractSpec("SPY", SecType.STK))
            now = NOW
            ctx = SendContext(trading=settings.trading, now=now, dry_run=False)

            # 1. signal -> order acknowledged
            latencies: list[float] = []
            for i in range(n_signals):
                definition = base.model_copy(update={"name": f"bench-{i:05d}", "risk": risk})
                with session_scope(db_url) as s:
                    save_definition(s, definition)  # the send-time gate judges by the stored strategy
                    row = signals.record(
                        s,
                        strategy_name=definition.name,
                        symbol="SPY",
                        bar_time=BAR_TIME,
                        action=SignalAction.BUY,
                        analyst=AnalystKind.OFFLINE,
                        reason="bench",
                    )
                    stored = StoredSignal(
                        row.id, Signal(SignalAction.BUY, "bench", AnalystKind.OFFLINE, BAR_TIME, entry=low)
                    )
                t = time.perf_counter()
                placed = order_for_signal(definition, spy, data, stored, broker=broker, dry_run=False, now=now)
                latencies.append(time.perf_counter() - t)
                if placed.status is not OrderStatus.SUBMITTED:
                    raise SystemExit(f"signal {i}: order {placed.status.value}: {placed.reasons or placed.error}")
                time.sleep(gap_s)
            results["signal_to_ack"] = ms_summary(latencies)

            # 2. the monitor with n_active active orders
            t = time.perf_counter()
            with session_scope(db_url) as s:
                have = orders_repo.count_open(s)
            owner = base.model_copy(
                update={"name": "bench-active", "risk": risk.model_copy(update={"max_orders_per_day": 10**6})}
            )
            with session_scope(db_url) as s:
                save_definition(s, owner)
            for i in range(have, n_active):
                bar = BAR_TIME + dt.timedelta(minutes=i)
                valid = NOW + dt.timedelta(days=1)
                intent = OrderIntent("bench-active", "SPY", OrderSide.BUY, Decimal(1), bar, order_type=OrderType.LIMIT,
                                     limit_price=low, conid=spy.conid, expires_at=valid)  # fmt: skip
                submit_order(db_url, broker, spy, intent, ctx)
            results["setup_active_s"] = round(time.perf_counter() - t, 1)
            with session_scope(db_url) as s:
                results["active_orders"] = orders_repo.count_open(s)
            monitor: list[float] = []
            for _ in range(rounds):
                t = time.perf_counter()
                report = sync_orders(db_url, broker, dt.datetime.now(dt.UTC))
                monitor.append(time.perf_counter() - t)
            results["monitor_round"] = ms_summary(monitor)
            results["monitor_updates_last_round"] = report.updated
        broker.close()
        dispose_engines()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="signal -> ack latency and monitor time against the simulator")
    parser.add_argument("--signals", type=int, default=200)
    parser.add_argument("--active", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gap-ms", type=float, default=25.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if min(args.signals, args.active, args.rounds) <= 0:
        parser.error("--signals, --active and --rounds must be positive")
    results = run(args.signals, args.active, args.rounds, args.gap_ms / 1000)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    ack, mon = results["signal_to_ack"], results["monitor_round"]
    print(f"signal -> order acknowledged (n={ack['n']}): p50 {ack['p50_ms']} ms, p95 {ack['p95_ms']} ms, "
          f"max {ack['max_ms']} ms  (goal p50 < 50 ms)")  # fmt: skip
    print(f"monitor round with {results['active_orders']} active orders (n={mon['n']}): p50 {mon['p50_ms']} ms, "
          f"p95 {mon['p95_ms']} ms, max {mon['max_ms']} ms  (goal < 2000 ms)")  # fmt: skip
    print(f"(setting up the active orders took {results['setup_active_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
