"""The decision chart: the strategy chart with the signal marker, entry, stop and target drawn on it."""

from __future__ import annotations

import shutil
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from models.enums import BarSize
from models.strategy import IndicatorSpec
from services.bars.loader import load_bars
from services.bars.resample import resample_bars
from services.charts import DecisionMarks, add_timeframe_panes, annotate_decision, build_figure, png_size, render_chart
from services.errors import InputError
from services.indicators import TimeframeIndicators, compute_indicators

SPY = Path(__file__).resolve().parents[1] / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"
HAS_BROWSER = Path("/usr/bin/chromium").exists() or shutil.which("chromium") is not None
SPECS = [IndicatorSpec(function="SMA", params={"timeperiod": 20}), IndicatorSpec(function="RSI")]


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_bars(SPY).frame.tail(120).reset_index(drop=True)


def buy(bars: pd.DataFrame) -> DecisionMarks:
    last = pd.Timestamp(bars["timestamp"].iloc[-1])
    return DecisionMarks("BUY", last, Decimal("266.86"), Decimal("262.84"), Decimal("272.89"), 0.77, Decimal("1.50"))


def test_buy_marker_levels_and_zones_are_drawn_on_the_price_pane(bars: pd.DataFrame) -> None:
    fig, _ = build_figure(bars, compute_indicators(bars, SPECS), title="SPY")
    plain = len(fig["data"])
    annotate_decision(fig, bars, buy(bars))
    added = {t["name"]: t for t in fig["data"][plain:]}
    assert set(added) == {"signal BUY", "entry 266.86", "stop 262.84", "target 272.89"}
    assert all(t["yaxis"] == "y" for t in added.values())  # the price pane
    marker = added["signal BUY"]
    assert marker["marker"]["symbol"] == "triangle-up" and marker["text"] == ["BUY 0.77"]
    assert marker["x"] == ["2017-12-29"] and marker["y"][0] < float(bars["low"].iloc[-1])  # under the bar
    # the levels run from the signal bar into the empty bars on the right, which every pane's axis shows
    assert added["stop 262.84"]["x"] == ["2017-12-29", "+6"] and added["stop 262.84"]["y"] == [262.84, 262.84]
    assert fig["layout"]["xaxis2"]["categoryarray"][-7:] == ["2017-12-29", "+1", "+2", "+3", "+4", "+5", "+6"]
    texts = [a["text"] for a in fig["layout"]["annotations"]]
    assert texts == ["entry 266.86, R/R 1.50", "stop 262.84 (-1.5 %)", "target 272.89 (+2.3 %)"]
    zones = [(s["y0"], s["y1"], s["fillcolor"]) for s in fig["layout"]["shapes"]]
    assert zones == [(266.86, 262.84, "#d62728"), (266.86, 272.89, "#2ca02c")]  # risk red, reward green


def test_sell_marker_sits_above_the_bar_and_missing_levels_are_left_out(bars: pd.DataFrame) -> None:
    fig, _ = build_figure(bars, compute_indicators(bars, SPECS), title="SPY")
    at = pd.Timestamp(bars["timestamp"].iloc[-3])
    annotate_decision(fig, bars, DecisionMarks("SELL", at, Decimal("260"), stop=Decimal("265")))
    (marker,) = [t for t in fig["data"] if t.get("name") == "signal SELL"]
    assert marker["marker"]["symbol"] == "triangle-down" and marker["y"][0] > float(bars["high"].iloc[-3])
    assert [t["name"] for t in fig["data"] if t.get("name", "").startswith(("entry", "stop", "target"))] == [
        "entry 260.00",
        "stop 265.00",
    ]


def test_only_buy_or_sell_at_a_bar_of_the_chart(bars: pd.DataFrame) -> None:
    fig, _ = build_figure(bars, compute_indicators(bars, SPECS), title="SPY")
    with pytest.raises(InputError, match="marks BUY or SELL, not 'HOLD'"):
        annotate_decision(fig, bars, DecisionMarks("HOLD", pd.Timestamp(bars["timestamp"].iloc[-1]), Decimal(1)))
    with pytest.raises(InputError, match="signal bar 2030-01-01T00:00:00\\+00:00 is not among the bars"):
        annotate_decision(fig, bars, DecisionMarks("BUY", pd.Timestamp("2030-01-01", tz="UTC"), Decimal(1)))


@pytest.mark.browser
@pytest.mark.skipif(not HAS_BROWSER, reason="needs headless Chromium")
def test_the_decision_chart_renders_to_its_own_files(bars: pd.DataFrame, tmp_path: Path) -> None:
    indicators = compute_indicators(bars, SPECS)
    plain = render_chart(bars, indicators, title="SPY", out_dir=tmp_path)
    marked = render_chart(bars, indicators, title="SPY", out_dir=tmp_path, stem="decision", marks=buy(bars))
    assert png_size(marked.png) == (900, 600) and marked.png != plain.png
    assert marked.png_path == tmp_path / "decision.png" and marked.png_path.read_bytes() == marked.png
    assert plain.png_path is not None and plain.png_path.read_bytes() == plain.png  # the chart is still there
    assert marked.html_path is not None and "target 272.89" in marked.html_path.read_text()


def test_a_higher_timeframe_pane_keeps_its_own_axis(bars: pd.DataFrame) -> None:
    """The levels' empty bars extend the main panes' shared axis only, not a higher timeframe's (own labels)."""
    weekly = resample_bars(bars, BarSize.WEEK_1)
    main = compute_indicators(bars, SPECS)
    both = replace(main, timeframes=(TimeframeIndicators(BarSize.WEEK_1, compute_indicators(weekly, SPECS[:1])),))
    fig, panes = build_figure(bars, both, title="SPY")
    annotate_decision(fig, bars, buy(bars))
    add_timeframe_panes(fig, panes, both.timeframes, main_label="1 day", height=600)
    layout = fig["layout"]
    weekly_axis = f"xaxis{len(panes) + 1}"
    assert "categoryarray" not in layout[weekly_axis]
    assert all(layout[f"xaxis{s}"]["categoryarray"][-1] == "+6" for s in ("", *map(str, range(2, len(panes) + 1))))


@pytest.mark.prefect
@pytest.mark.parametrize("failure", ["render error", "unexpected error"])
def test_a_decision_chart_that_fails_leaves_the_run_going(
    bars: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: object, failure: str
) -> None:
    """The flow's decision-chart step (tasks.chart.decision_chart) returns None, logged, when the chart cannot be
    drawn, an expected ChartRenderError or any other exception: the run goes on to its order step; a HOLD draws
    nothing."""
    import datetime as dt

    import tasks.chart as chart_tasks
    from models.enums import AnalystKind, SignalAction
    from services.charts import ChartRenderError
    from services.runtime import Runtime, use_runtime
    from services.settings import load_settings
    from services.signals import Signal
    from services.strategies import load_strategy_file
    from tasks.signal import StoredSignal

    definition = load_strategy_file(
        Path(__file__).resolve().parents[1] / "examples" / "strategies" / "spy-sma-cross.yaml"
    )
    indicators = compute_indicators(bars, SPECS)
    calls: list[str] = []

    def broken(*args: object, **kwargs: object) -> object:
        calls.append(failure)
        raise ChartRenderError("no browser") if failure == "render error" else RuntimeError("boom")

    monkeypatch.setattr(chart_tasks, "render_chart", broken)
    when = pd.Timestamp(bars["timestamp"].iloc[-1]).to_pydatetime().astimezone(dt.UTC)
    buy = Signal(SignalAction.BUY, "BUY: test", AnalystKind.OFFLINE, when, 0.8, Decimal("266.86"), Decimal("262.84"),
                 Decimal("272.89"), Decimal("1.50"))  # fmt: skip
    hold = Signal(SignalAction.HOLD, "HOLD: test", AnalystKind.OFFLINE, when, 0.5, Decimal("266.86"))
    with use_runtime(Runtime(load_settings({"TRADER_DATA_DIR": str(tmp_path / "data")}))):
        assert chart_tasks.decision_chart(definition, indicators, StoredSignal(1, buy), tmp_path) is None
        assert calls == [failure]  # it was tried
        assert chart_tasks.decision_chart(definition, indicators, StoredSignal(2, hold), tmp_path) is None
        assert calls == [failure]  # a HOLD draws nothing
    assert not (tmp_path / "decision.png").exists()
