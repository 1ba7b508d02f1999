"""P&L snapshots over time and the ``pnl-history`` chart (order-monitor)."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import pytest

from models.enums import OrderSide, OrderType
from models.tables import PnlSnapshot
from services.broker.loop_owner import SyncBroker
from services.broker.memory import MemoryBroker
from services.charts import ChartRenderError, render_png
from services.db import session_scope
from services.orders.monitor import record_executions
from services.orders.pnl import CHART_HEIGHT, CHART_WIDTH, pnl_markdown
from services.orders.submit import OrderIntent, submit_order
from services.repositories import fills as fills_repo
from services.repositories import pnl as pnl_repo
from services.runtime import Runtime, use_runtime
from services.settings import load_settings
from tests.orders_support import BAR0, SPY, bars, send_ctx, store_strategy

NOW = BAR0 + dt.timedelta(minutes=50)


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[tuple[MemoryBroker, SyncBroker, Runtime]]:
    mb = MemoryBroker([SPY], {"SPY": bars()})
    mb.clock.set(NOW)
    sync = SyncBroker(lambda: mb)
    sync.connect()
    clock = {"now": NOW}
    settings = load_settings({}, data_dir=tmp_path, database={"url": db_url})
    with use_runtime(Runtime(settings, broker_factory=lambda: mb, clock=lambda: clock["now"])) as rt:
        yield mb, sync, rt
        rt.close()
    sync.close()


def test_monitor_snapshot_rows_follow_fills_and_marks(world: tuple[MemoryBroker, SyncBroker, Runtime]) -> None:
    from tasks.order_flows import snapshot_pnl

    mb, sync, rt = world
    first = snapshot_pnl.fn(False)  # nothing traded yet
    assert first.rows == ()
    intent = OrderIntent("spy-test", "SPY", OrderSide.BUY, D(10), BAR0 + dt.timedelta(minutes=45),
                         order_type=OrderType.MARKET, conid=SPY.conid, expires_at=NOW + dt.timedelta(hours=6),
                         reference_price=D("101"))  # fmt: skip
    store_strategy(rt.database_url)
    submit_order(rt.database_url, sync, SPY, intent, send_ctx(NOW, dry_run=False))
    record_executions(rt.database_url, sync.executions())
    mb.clock.advance(5)  # the price moves on: the mark is the broker's last price
    quote = sync.snapshot(SPY)
    account = sync.account_values()
    rt.close()  # the task opens the runtime's own session on the same broker
    second = snapshot_pnl.fn(False)
    with session_scope(rt.database_url) as s:
        [fill] = fills_repo.effective(s)
        rows = pnl_repo.recent(s)
    assert fill.commission is not None and quote.last is not None
    avg = (fill.quantity * fill.price + fill.commission) / fill.quantity
    assert len(rows) == 2
    assert rows[0].realized == 0 and rows[0].unrealized == 0
    assert rows[1].realized == 0
    assert rows[1].unrealized == ((quote.last - avg) * 10).quantize(D("0.00000001"))
    assert rows[1].equity == account.net_liquidation
    assert second.unrealized == rows[1].unrealized and rows[1].at.tzinfo is not None


def snaps(n: int) -> list[PnlSnapshot]:
    start = dt.datetime(2024, 6, 3, 14, tzinfo=dt.UTC)
    return [
        PnlSnapshot(at=start + dt.timedelta(minutes=i), realized=D(i), unrealized=D(-2 * i), equity=D(1000 + i))
        for i in range(n)
    ]


def test_pnl_markdown_chart_and_fallback() -> None:
    calls: list[dict[str, object]] = []

    def fake_render(fig: dict[str, object]) -> bytes:
        calls.append(fig)
        return b"\x89PNG fake"

    md = pnl_markdown(snaps(12), fake_render)
    assert "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode() in md
    [fig] = calls
    total = next(t for t in fig["data"] if t["name"] == "total")  # type: ignore[attr-defined]
    assert total["y"][:3] == [0.0, -1.0, -2.0] and len(total["x"]) == 12
    assert md.count("\n| 2024-06-03") == 10  # the latest ten rows, newest first
    assert md.index("14:11:00") < md.index("14:02:00")

    def broken(_fig: dict[str, object]) -> bytes:
        raise ChartRenderError("no browser")

    fallback = pnl_markdown(snaps(3), broken)
    assert (
        "(no chart: no browser)" in fallback and "| 2024-06-03 14:02:00 | 2.00 | -4.00 | -2.00 | 1002.00 |" in fallback
    )
    assert "no snapshots yet" in pnl_markdown([], fake_render)


def test_pnl_chart_renders_a_small_png() -> None:
    md = pnl_markdown(snaps(20), lambda fig: render_png(fig, width=CHART_WIDTH, height=CHART_HEIGHT))
    uri = md.split("](data:image/png;base64,")[1].split(")")[0]
    png = base64.b64decode(uri)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) < 100_000  # small enough for an artifact
