from __future__ import annotations

import asyncio
import itertools
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from models.strategy import IndicatorSpec
from services import charts
from services.bars.loader import load_bars
from services.charts import build_figure, render_chart
from services.errors import InputError
from services.indicators import compute_indicators

SPY = Path(__file__).resolve().parents[1] / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"
HAS_BROWSER = Path("/usr/bin/chromium").exists() or shutil.which("chromium") is not None

SPECS = [
    IndicatorSpec(function="SMA", params={"timeperiod": 20}, alias="sma_fast"),
    IndicatorSpec(function="BBANDS", params={"timeperiod": 20}, alias="bb"),
    IndicatorSpec(function="RSI", params={"timeperiod": 14}),
    IndicatorSpec(function="MACD"),
]


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    frame = load_bars(SPY).frame.tail(250).reset_index(drop=True)
    frame["flagged"] = False
    frame.loc[120, "flagged"] = True
    return frame


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_overlays_share_the_price_pane_and_others_get_their_own(bars: pd.DataFrame) -> None:
    fig, panes = build_figure(bars, compute_indicators(bars, SPECS), title="SPY")
    assert panes == ["price", "volume", "rsi_14", "macd"]
    axis_of = {t.get("name"): t["yaxis"] for t in fig["data"]}
    assert axis_of["sma_fast"] == axis_of["bb_upperband"] == axis_of["bb_lowerband"] == "y"
    assert axis_of["rsi_14"] == "y3"
    assert axis_of["macd_macd"] == axis_of["macd_macdsignal"] == axis_of["macd_macdhist"] == "y4"
    assert [t["type"] for t in fig["data"] if t.get("name") == "macd_macdhist"] == ["bar"]
    # Pane domains do not overlap and run top to bottom.
    domains = [fig["layout"][f"yaxis{s}"]["domain"] for s in ("", "2", "3", "4")]
    assert all(upper[0] > lower[1] for upper, lower in itertools.pairwise(domains))


def test_flagged_bars_are_marked(bars: pd.DataFrame) -> None:
    fig, _ = build_figure(bars, compute_indicators(bars, SPECS), title="SPY")
    (marks,) = [t for t in fig["data"] if t.get("name") == "flagged bar"]
    label = bars["timestamp"].iloc[120].strftime("%Y-%m-%d")
    assert marks["x"] == [label] and marks["y"][0] > bars["high"].iloc[120]
    volume = next(t for t in fig["data"] if t.get("name") == "volume")
    assert [i for i, c in enumerate(volume["marker"]["color"]) if c == "#d62728"] == [120]
    clean = bars.assign(flagged=False)
    fig2, _ = build_figure(clean, compute_indicators(clean, SPECS), title="SPY")
    assert not [t for t in fig2["data"] if t.get("name") == "flagged bar"]


def test_bad_input_is_an_input_error(bars: pd.DataFrame) -> None:
    indicators = compute_indicators(bars, SPECS)
    with pytest.raises(InputError, match="no bars"):
        build_figure(bars.iloc[0:0], indicators, title="x")
    with pytest.raises(InputError, match="indicator rows"):
        build_figure(bars.head(10), indicators, title="x")
    with pytest.raises(InputError, match="lacks column"):
        build_figure(bars.drop(columns=["volume"]), indicators, title="x")


@pytest.mark.browser
@pytest.mark.skipif(not HAS_BROWSER, reason="needs headless Chromium")
def test_run_directories_share_one_plotly_js(bars: pd.DataFrame, tmp_path: Path) -> None:
    """Charts of many runs load one plotly.min.js from the runs root by a relative path (not 4.7 MB per run)."""
    indicators = compute_indicators(bars, SPECS[:1])
    first = render_chart(bars, indicators, title="a", out_dir=tmp_path / "s" / "run1", assets_dir=tmp_path)
    second = render_chart(bars, indicators, title="b", out_dir=tmp_path / "s" / "run2", assets_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("plotly.min.js")) == ["plotly.min.js"]
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
    for result in (first, second):
        assert result.html_path is not None
        html = result.html_path.read_text()
        assert '<script charset="utf-8" src="../../plotly.min.js"></script>' in html
        assert (result.html_path.parent / "../../plotly.min.js").resolve() == (tmp_path / "plotly.min.js").resolve()
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.browser
@pytest.mark.skipif(not HAS_BROWSER, reason="needs headless Chromium")
def test_png_and_html_are_rendered_and_saved(bars: pd.DataFrame, tmp_path: Path) -> None:
    indicators = compute_indicators(bars, SPECS[:3])
    result = render_chart(bars, indicators, title="SPY 1 day", out_dir=tmp_path, stem="spy")
    assert png_size(result.png) == (900, 600)
    assert len(result.png) < 150_000, f"{len(result.png)} bytes"
    assert result.png_path == tmp_path / "spy.png" and result.png_path.read_bytes() == result.png
    assert result.html_path is not None and "plotly.min.js" in result.html_path.read_text()
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
    assert "<title>SPY 1 day</title>" in result.html and "sma_fast" in result.html
    assert len(result.html) < 300_000
    assert result.data_uri().startswith("data:image/png;base64,iVBOR")

    # The picture depends on the data: another window renders different pixels.
    other = bars.iloc[::-1].reset_index(drop=True).assign(timestamp=bars["timestamp"])
    other_png = render_chart(other, compute_indicators(other, SPECS[:3]), title="SPY 1 day").png
    assert other_png != result.png


@pytest.mark.browser
@pytest.mark.skipif(not HAS_BROWSER, reason="needs headless Chromium")
def test_renderer_stays_warm(bars: pd.DataFrame) -> None:
    indicators = compute_indicators(bars, SPECS[:3])
    render_chart(bars, indicators, title="warm-up")
    browser = charts._RENDERER._kaleido
    assert browser is not None and charts._RENDERER.running
    # Warm means the same browser renders every chart: no relaunch per PNG (the cold start costs seconds).
    # The warm render time (goal < 1.5 s) is a figure of benchmarks/bench_analysis.py, not an assert here.
    pngs = [render_chart(bars, indicators, title=f"SPY {i}").png for i in range(5)]
    assert charts._RENDERER._kaleido is browser
    assert all(png_size(p) == (900, 600) for p in pngs) and len(set(pngs)) == 5


@pytest.mark.browser
@pytest.mark.skipif(not HAS_BROWSER, reason="needs headless Chromium")
def test_concurrent_threads_and_a_running_event_loop_can_render(bars: pd.DataFrame) -> None:
    indicators = compute_indicators(bars, SPECS[:3])
    with ThreadPoolExecutor(max_workers=3) as pool:  # Prefect runs sync tasks in worker threads
        pngs = list(pool.map(lambda t: render_chart(bars, indicators, title=t).png, ["A", "B", "C"]))
    assert all(png_size(p) == (900, 600) for p in pngs) and len(set(pngs)) == 3  # each title drawn on its own

    async def inside_a_loop() -> bytes:  # an async flow calling the sync service must not deadlock
        return render_chart(bars, indicators, title="async").png

    assert png_size(asyncio.run(inside_a_loop())) == (900, 600)
