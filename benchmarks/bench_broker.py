"""Benchmark the ib_async broker adapter against the TWS-protocol simulator on loopback.

Measures: connect (handshake + ib_async startup sync; goal < 1 s, the figure ``tests/simulator`` no longer
times; baselines from the same run: a bare TCP connect to the simulator, and ib_async's ``connectAsync`` on its
own), historical round trips (1 year of daily bars; 5 days of 1-minute bars = five paced one-day requests), and
order latency: placeOrder -> acknowledged (permId, Submitted) for a resting LMT order, and placeOrder -> filled for
a MKT order. Goal: acknowledgement p50 < 50 ms. Orders are spaced ``--gap-ms`` apart: back to back they exceed
ib_async's 45 msg/s throttle and measure queueing instead.

Historical pacing runs on a simulated clock shared with the simulator, so the limiter never sleeps in real time
and every request is distinct (no 15-second cache hits): the figures are pure round trips.

Usage: ``uv run python benchmarks/bench_broker.py [--orders 200] [--history 20] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from _stats import ms_summary
from ib_async import IB

from models.enums import BarSize, OrderSide, OrderType
from services.broker.ib_adapter import IBBroker
from services.broker.pacing import HistoricalLimiter, ManualClock
from services.broker.types import BarRequest, ContractSpec, OrderRequest
from services.settings import IBSettings
from simulator import SimConfig, SimServer

SPY_DAILY_CLOSE = datetime(2017, 12, 29, 21, 0, tzinfo=UTC)
SPY_MINUTE_END = datetime(2011, 1, 31, 22, 0, tzinfo=UTC)


async def run(orders: int, history: int, gap_s: float) -> dict[str, Any]:
    clock = ManualClock(start=1_000.0)
    async with SimServer(SimConfig(port=0, pacing_time=clock.now, farm_notices=False)) as sim:
        tcp: list[float] = []
        for _ in range(5):
            t = time.perf_counter()
            _, writer = await asyncio.open_connection("127.0.0.1", sim.port)
            tcp.append(time.perf_counter() - t)
            writer.close()
            await writer.wait_closed()
        raw: list[float] = []
        for i in range(5):
            ib = IB()
            t = time.perf_counter()
            await ib.connectAsync("127.0.0.1", sim.port, clientId=40 + i, timeout=10, raiseSyncErrors=True)
            raw.append(time.perf_counter() - t)
            ib.disconnect()
        connects: list[float] = []
        for i in range(5):
            probe = IBBroker.from_settings(IBSettings(port=sim.port, client_id=50 + i, connect_timeout_s=5))
            t = time.perf_counter()
            await probe.connect()
            connects.append(time.perf_counter() - t)
            await probe.close()

        broker = IBBroker.from_settings(
            IBSettings(port=sim.port, client_id=7), clock=clock, hist_limiter=HistoricalLimiter(clock=clock)
        )
        await broker.connect()
        sim.clock.set(datetime(2020, 1, 1, tzinfo=UTC))
        spy = await broker.qualify(ContractSpec("SPY"))

        daily: list[float] = []
        daily_rows = 0
        for i in range(history):
            req = BarRequest(BarSize.DAY_1, "1 Y", end=SPY_DAILY_CLOSE - timedelta(days=i))
            t = time.perf_counter()
            frame = await broker.historical_bars(spy, req)
            daily.append(time.perf_counter() - t)
            daily_rows = len(frame)
            clock.advance(20.0)

        minute: list[float] = []
        minute_rows = 0
        for i in range(history):
            req = BarRequest(BarSize.MIN_1, "5 D", end=SPY_MINUTE_END - timedelta(minutes=i), use_rth=False)
            t = time.perf_counter()
            frame = await broker.historical_bars(spy, req)
            minute.append(time.perf_counter() - t)
            minute_rows = len(frame)
            clock.advance(20.0)

        sim.clock.set(SPY_DAILY_CLOSE)
        acks: list[float] = []
        for i in range(orders):
            req = OrderRequest(
                f"bench-lmt-{i}", OrderSide.BUY, Decimal(1), OrderType.LIMIT, limit_price=Decimal("1.00")
            )
            t = time.perf_counter()
            await broker.place_order(spy, req)
            acks.append(time.perf_counter() - t)
            await asyncio.sleep(gap_s)

        fills: list[float] = []
        for i in range(orders):
            req = OrderRequest(f"bench-mkt-{i}", OrderSide.BUY if i % 2 == 0 else OrderSide.SELL, Decimal(1))
            t = time.perf_counter()
            placed = await broker.place_order(spy, req)
            while placed.status.value != "filled":
                found = await broker.find_order(req.order_ref)
                assert found is not None
                placed = found
                if placed.status.value != "filled":
                    await asyncio.sleep(0)
            fills.append(time.perf_counter() - t)
            await asyncio.sleep(gap_s)

        await broker.close()
        return {
            "server_version": broker.server_version,
            "baseline_tcp_connect": ms_summary(tcp),
            "ib_async_connect": ms_summary(raw),
            "connect": ms_summary(connects),
            "history_1y_daily": {**ms_summary(daily), "rows": daily_rows},
            "history_5d_1min": {**ms_summary(minute), "rows": minute_rows, "requests_each": 5},
            "order_ack": ms_summary(acks),
            "order_filled": ms_summary(fills),
            "pacing_violations_at_sim": sim.stats.pacing_violations,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--gap-ms", type=float, default=25.0, help="pause between orders (IB allows < 50 msg/s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.orders, args.history, args.gap_ms / 1000))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"server version {result['server_version']}, pacing violations {result['pacing_violations_at_sim']}")
    for name in (
        "baseline_tcp_connect",
        "ib_async_connect",
        "connect",
        "history_1y_daily",
        "history_5d_1min",
        "order_ack",
        "order_filled",
    ):
        r = result[name]
        extra = f"  rows={r['rows']}" if "rows" in r else ""
        figures = f"p50={r['p50_ms']:8.2f} ms  p95={r['p95_ms']:8.2f} ms  max={r['max_ms']:8.2f} ms"
        print(f"{name:18} n={r['n']:4}  {figures}{extra}")
    goal = "met" if result["order_ack"]["p50_ms"] < 50 else "MISSED"
    print(f"goal ack p50 < 50 ms: {goal}")
    slowest = max(result["ib_async_connect"]["max_ms"], result["connect"]["max_ms"])
    print(f"goal connect max < 1000 ms: {'met' if slowest < 1000 else 'MISSED'} ({slowest:.0f} ms)")


if __name__ == "__main__":
    main()
