"""Step 4: the strategy chart: Plotly candlesticks, volume, indicator panes; PNG (for the LLM) and HTML.

Layout, top to bottom: price (candlesticks plus every Overlap Studies indicator: SMA, EMA, BBANDS, ...),
volume, then one pane per other indicator spec (RSI, MACD with its three outputs, ATR, STOCH, ...). Bars
flagged by validation are marked with a red ``x`` above the candle and their volume bar is red. The x axis is a
category axis of bar labels, so weekends and holidays leave no gaps.

**Higher timeframes.** A strategy's context timeframes (``IndicatorResult.timeframes``) each get one more pane at
the bottom, with its own x axis: its candlesticks and its Overlap Studies indicators (its other indicators are in
the prompt), titled with its bar size; the main price pane is then titled with its own bar size too, and the image
grows by :data:`TIMEFRAME_PANE_PX` per timeframe.

**PNG.** 900x600 by default (about 100 KB), rendered by kaleido through headless Chromium. The browser is
kept WARM for the life of the process: the first render starts it (about 2-3 s), later renders reuse it
(about 0.1 s of Chromium CPU: unlike kaleido's default, a tab is not reloaded after each render, which re-parses
plotly.js, but every ``RELOAD_EVERY`` renders, and a failed render stops the browser so no broken tab is reused:
0.29 -> 0.11 CPU s per chart). We run our own long-lived ``kaleido.Kaleido`` on a private event-loop thread instead
of ``kaleido.start_sync_server()`` because the sync server waits forever when the browser failed to start or a
render hangs; here every render has a timeout and start-up errors surface as :class:`ChartRenderError`. The
browser is stopped at interpreter exit (``atexit``) or by :func:`stop_renderer`. Chromium is looked up at
``$BROWSER_PATH``, then ``/usr/bin/chromium``, then kaleido's own search. MathJax is disabled (no CDN fetch).

**HTML.** Each chart's HTML is small (tens of KB) and loads ``plotly.min.js`` (about 4.7 MB) by a relative
path from ``assets_dir``, where :func:`render_chart` writes it once (default: ``out_dir``; the strategy flow
passes the runs root, so every run directory shares one copy instead of writing 4.7 MB per run). No CDN, so it
works offline; copy the runs directory, not a single file.

**Decision chart.** ``render_chart(..., marks=DecisionMarks(...))`` draws the same chart with the signal on it
(:func:`annotate_decision`): the BUY/SELL marker at its bar, entry, stop and target as levels running into a few
empty bars on the right, and the risk and reward zones between them.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import os
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from models.bars import FLAGGED, REQUIRED_COLUMNS, TIMESTAMP
from services.bars.sizes import infer_bar_size
from services.errors import InputError, SkipError
from services.indicators import IndicatorColumn, IndicatorResult, TimeframeIndicators

__all__ = [
    "ChartRenderError",
    "ChartResult",
    "DecisionMarks",
    "annotate_decision",
    "png_size",
    "render_chart",
    "render_png",
    "start_renderer",
    "stop_renderer",
]

DEFAULT_WIDTH: Final = 900
DEFAULT_HEIGHT: Final = 600
DEFAULT_CHROMIUM: Final = Path("/usr/bin/chromium")
START_TIMEOUT_S: Final = 60.0
RENDER_TIMEOUT_S: Final = 30.0
RENDER_TABS: Final = 2
RELOAD_EVERY: Final = 100  # renders between two reloads of the renderer's tabs (kaleido reloads after every one)
PLOTLY_JS_NAME: Final = "plotly.min.js"
TIMEFRAME_PANE_PX: Final = 220
_GAP: Final = 0.02
# Horizontal guide lines for bounded oscillators.
_GUIDES: Final[dict[str, tuple[float, ...]]] = {
    "RSI": (30.0, 70.0),
    "MFI": (20.0, 80.0),
    "STOCH": (20.0, 80.0),
    "STOCHF": (20.0, 80.0),
    "STOCHRSI": (20.0, 80.0),
    "WILLR": (-80.0, -20.0),
}
_COLORS: Final = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


class ChartRenderError(SkipError):
    """The chart could not be rendered (no browser, browser crash, render timeout)."""


@dataclass(frozen=True)
class ChartResult:
    """A rendered chart. ``png_path`` / ``html_path`` are set when ``out_dir`` was given."""

    png: bytes
    html: str
    png_path: Path | None
    html_path: Path | None
    render_ms: float  # PNG rasterisation only
    panes: tuple[str, ...]

    def data_uri(self) -> str:
        """Return the PNG as a ``data:image/png;base64,...`` URI (for Markdown artifacts)."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


# --------------------------------------------------------------------------------------------------------------------
# The warm renderer


class _WarmRenderer:
    """One headless Chromium (via kaleido) on a private event-loop thread, started lazily, reused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._kaleido: Any = None
        self._atexit = False

    @property
    def running(self) -> bool:
        return self._kaleido is not None

    def start(self) -> None:
        with self._lock:
            if self._kaleido is not None:
                return
            import kaleido

            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="kaleido-renderer", daemon=True)
            thread.start()
            # two tabs render two charts at once: 4.4 -> 5.7 renders/s with 16 threads on 2 cores
            tabs = max(1, min(RENDER_TABS, os.cpu_count() or 1))
            kwargs: dict[str, Any] = {"n": tabs, "timeout": RENDER_TIMEOUT_S, "mathjax": False}
            browser = os.environ.get("BROWSER_PATH") or (str(DEFAULT_CHROMIUM) if DEFAULT_CHROMIUM.exists() else None)
            if browser:
                kwargs["path"] = browser

            class _Kaleido(kaleido.Kaleido):  # type: ignore[misc]
                """Reload a tab (re-parse plotly.js) every RELOAD_EVERY renders, not after each (kaleido's default).

                ``Plotly.toImage`` draws into a div of its own that it purges, so a render leaves nothing behind
                for the next; the periodic reload bounds any leak."""

                renders = 0

                async def _return_kaleido_tab(self, tab: Any) -> None:
                    self.renders += 1
                    if self.renders % RELOAD_EVERY == 0:
                        await tab.reload()
                    await self.tabs_ready.put(tab)

            async def _open() -> Any:
                k = _Kaleido(**kwargs)
                await k.open()
                return k

            try:
                self._kaleido = asyncio.run_coroutine_threadsafe(_open(), loop).result(START_TIMEOUT_S)
            except BaseException as exc:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=5)
                loop.close()
                raise ChartRenderError(f"cannot start the chart renderer (Chromium via kaleido): {exc}") from exc
            self._loop, self._thread = loop, thread
            if not self._atexit:
                atexit.register(self.stop)
                self._atexit = True

    def render(self, fig: dict[str, Any], *, width: int, height: int, scale: float = 1.0) -> bytes:
        self.start()
        loop, k = self._loop, self._kaleido
        assert loop is not None and k is not None
        opts = {"format": "png", "width": width, "height": height, "scale": scale}
        future = asyncio.run_coroutine_threadsafe(k.calc_fig(fig, opts=opts), loop)
        try:
            data = future.result(RENDER_TIMEOUT_S + 5)
        except FutureTimeout:
            future.cancel()
            self.stop()  # a stuck browser is not reused
            raise ChartRenderError(f"PNG render timed out after {RENDER_TIMEOUT_S + 5:.0f}s") from None
        except Exception as exc:
            self.stop()  # the tab was not reloaded (see _Kaleido): a failed render's tab is not reused
            raise ChartRenderError(f"PNG render failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(data, bytes) or not data.startswith(b"\x89PNG"):
            raise ChartRenderError("the renderer returned no PNG")
        return data

    def stop(self) -> None:
        with self._lock:
            loop, thread, k = self._loop, self._thread, self._kaleido
            self._loop = self._thread = self._kaleido = None
        if loop is None:
            return
        try:
            if k is not None:
                asyncio.run_coroutine_threadsafe(k.close(), loop).result(10)
        except Exception:
            pass  # best effort at shutdown: the browser dies with the process anyway
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=5)
            if not loop.is_running():
                loop.close()


_RENDERER: Final = _WarmRenderer()


def start_renderer() -> None:
    """Start the warm renderer now (otherwise the first PNG starts it); raise :class:`ChartRenderError`."""
    _RENDERER.start()


def stop_renderer() -> None:
    """Stop the warm renderer (it restarts on the next PNG)."""
    _RENDERER.stop()


def render_png(fig: dict[str, Any], *, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT) -> bytes:
    """Rasterise a Plotly figure dict to PNG with the warm renderer."""
    return _RENDERER.render(fig, width=width, height=height)


# --------------------------------------------------------------------------------------------------------------------
# The figure (built as a plain dict: no plotly.graph_objects validation on the hot path)


def _labels(frame: pd.DataFrame) -> list[str]:
    ts = pd.DatetimeIndex(frame[TIMESTAMP])
    daily = bool(len(ts)) and bool((ts.hour == 0).all() and (ts.minute == 0).all())
    return list(ts.strftime("%Y-%m-%d" if daily else "%Y-%m-%d %H:%M"))


def _series(values: np.ndarray[Any, Any]) -> list[float | None]:
    return [None if np.isnan(v) else round(float(v), 6) for v in values]


def _panes(columns: tuple[IndicatorColumn, ...]) -> tuple[list[IndicatorColumn], dict[str, list[IndicatorColumn]]]:
    overlays = [c for c in columns if c.is_overlay]
    others: dict[str, list[IndicatorColumn]] = {}
    for c in columns:
        if not c.is_overlay:
            others.setdefault(c.prefix, []).append(c)
    return overlays, others


def _heights(n: int, gap: float = _GAP) -> list[float]:
    # Price 55 % (less when there are many panes, at least 35 %), volume 12 %, the rest shared; 2 % gaps.
    if n == 2:
        return [0.78, 1.0 - 0.78 - gap]
    price = max(0.35, 0.55 - 0.05 * max(0, n - 3))
    rest = (1.0 - price - 0.12 - gap * (n - 1)) / (n - 2)
    return [price, 0.12] + [rest] * (n - 2)


def build_figure(frame: pd.DataFrame, indicators: IndicatorResult, *, title: str) -> tuple[dict[str, Any], list[str]]:
    """Return the Plotly figure dict and the pane names (price, volume, then one per non-overlay indicator)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError("chart", f"bar frame lacks column(s) {', '.join(missing)}")
    if frame.empty:
        raise InputError("chart", "no bars to draw")
    if len(frame) != len(indicators.frame):
        raise InputError("chart", f"{len(frame)} bars but {len(indicators.frame)} indicator rows")
    x = _labels(frame)
    flagged = (
        frame[FLAGGED].fillna(False).to_numpy(dtype=bool) if FLAGGED in frame.columns else np.zeros(len(frame), bool)
    )
    overlays, others = _panes(indicators.columns)
    panes = ["price", "volume", *others]
    n = len(panes)
    heights = _heights(n)
    layout: dict[str, Any] = {
        "title": {"text": title, "x": 0.01, "font": {"size": 14}},
        "margin": {"l": 50, "r": 20, "t": 36, "b": 30},
        "showlegend": True,
        "legend": {"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom", "font": {"size": 9}},
        "template": {"layout": {"paper_bgcolor": "white", "plot_bgcolor": "#fafafa"}},
        "hovermode": "x unified",
    }
    top = 1.0
    for i, (name, h) in enumerate(zip(panes, heights, strict=True)):
        suffix = "" if i == 0 else str(i + 1)
        layout[f"yaxis{suffix}"] = {
            "domain": [max(0.0, top - h), top],
            "title": {"text": "" if name == "price" else name, "font": {"size": 10}},
            "tickfont": {"size": 9},
            "gridcolor": "#e5e5e5",
        }
        layout[f"xaxis{suffix}"] = {
            "type": "category",
            "anchor": f"y{suffix}",
            "matches": "x" if i else None,
            "showticklabels": i == n - 1,
            "nticks": 8,
            "tickfont": {"size": 9},
            "rangeslider": {"visible": False},
            "gridcolor": "#e5e5e5",
        }
        if i == 0:
            del layout["xaxis"]["matches"]
        top -= h + _GAP
    data: list[dict[str, Any]] = [
        {
            "type": "candlestick",
            "name": "price",
            "x": x,
            "open": _series(frame["open"].to_numpy(dtype=float)),
            "high": _series(frame["high"].to_numpy(dtype=float)),
            "low": _series(frame["low"].to_numpy(dtype=float)),
            "close": _series(frame["close"].to_numpy(dtype=float)),
            "xaxis": "x",
            "yaxis": "y",
            "showlegend": False,
        }
    ]
    ind = indicators.frame
    for k, col in enumerate(overlays):
        dash = "dot" if col.output in ("upperband", "lowerband") else "solid"
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": col.name,
                "x": x,
                "y": _series(ind[col.name].to_numpy(dtype=float)),
                "line": {"width": 1.2, "color": _COLORS[k % len(_COLORS)], "dash": dash},
                "xaxis": "x",
                "yaxis": "y",
            }
        )
    if flagged.any():
        idx = np.flatnonzero(flagged)
        highs = frame["high"].to_numpy(dtype=float)
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "flagged bar",
                "x": [x[i] for i in idx],
                "y": [round(float(highs[i]) * 1.01, 6) if np.isfinite(highs[i]) else None for i in idx],
                "marker": {"symbol": "x", "size": 8, "color": "#d62728"},
                "xaxis": "x",
                "yaxis": "y",
            }
        )
    data.append(
        {
            "type": "bar",
            "name": "volume",
            "x": x,
            "y": _series(frame["volume"].to_numpy(dtype=float)),
            "marker": {"color": ["#d62728" if f else "#9ecae1" for f in flagged]},
            "xaxis": "x2",
            "yaxis": "y2",
            "showlegend": False,
        }
    )
    for p, cols in enumerate(others.values()):
        axis = str(p + 3)
        for k, col in enumerate(cols):
            trace: dict[str, Any] = {
                "name": col.name,
                "x": x,
                "y": _series(ind[col.name].to_numpy(dtype=float)),
                "xaxis": f"x{axis}",
                "yaxis": f"y{axis}",
            }
            if col.output.endswith("hist"):
                trace.update(type="bar", marker={"color": "#bdbdbd"})
            else:
                trace.update(type="scatter", mode="lines", line={"width": 1.2, "color": _COLORS[k % len(_COLORS)]})
            data.append(trace)
        for level in _GUIDES.get(cols[0].function, ()):
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": [x[0], x[-1]],
                    "y": [level, level],
                    "line": {"width": 0.8, "color": "#999999", "dash": "dash"},
                    "xaxis": f"x{axis}",
                    "yaxis": f"y{axis}",
                    "showlegend": False,
                    "hoverinfo": "skip",
                }
            )
    return {"data": data, "layout": layout}, panes


@dataclass(frozen=True)
class DecisionMarks:
    """What the decision chart draws on the price pane: the signal at its bar, and entry / stop / target."""

    action: str  # BUY or SELL
    bar_time: pd.Timestamp  # the signal's bar (UTC bar start)
    entry: Decimal
    stop: Decimal | None = None
    target: Decimal | None = None
    confidence: float | None = None
    risk_reward: Decimal | None = None


_FUTURE_SLOTS: Final = 6  # empty bars right of the signal bar, where the levels run
_ENTRY, _STOP, _TARGET = "#1f4e9c", "#d62728", "#2ca02c"


def annotate_decision(fig: dict[str, Any], frame: pd.DataFrame, marks: DecisionMarks) -> None:
    """Draw ``marks`` on a :func:`build_figure` figure, as a trader would: a marker at the signal bar (a green
    triangle under a BUY's low, a red one over a SELL's high), entry / stop / target as lines from that bar into a
    few empty bars on the right, labelled with price and distance, and the risk (red) and reward (green) zones
    between them. Raises ``InputError`` for an action other than BUY/SELL or a bar not in ``frame``."""
    if marks.action not in ("BUY", "SELL"):
        raise InputError("chart", f"the decision chart marks BUY or SELL, not {marks.action!r}")
    x = _labels(frame)
    times = pd.DatetimeIndex(frame[TIMESTAMP])
    hits = np.flatnonzero(times == pd.Timestamp(marks.bar_time))
    if hits.size == 0:
        raise InputError("chart", f"signal bar {pd.Timestamp(marks.bar_time).isoformat()} is not among the bars")
    i = int(hits[-1])
    future = [f"+{k}" for k in range(1, _FUTURE_SLOTS + 1)]
    layout = fig["layout"]
    for name, axis in layout.items():  # the main panes' shared axis (not a higher timeframe's own)
        if name == "xaxis" or (name.startswith("xaxis") and axis.get("matches") == "x"):
            axis.update(categoryorder="array", categoryarray=[*x, *future])
    buy = marks.action == "BUY"
    row = frame.iloc[i]
    anchor = float(row["low"]) * 0.995 if buy else float(row["high"]) * 1.005
    entry = float(marks.entry)
    span = [x[i], future[-1]]
    right = len(x) + _FUTURE_SLOTS - 1  # category axes place shapes and annotations by index
    data: list[dict[str, Any]] = fig["data"]
    label = marks.action + (f" {marks.confidence:.2f}" if marks.confidence is not None else "")
    data.append(
        {
            "type": "scatter",
            "mode": "markers+text",
            "name": f"signal {marks.action}",
            "x": [x[i]],
            "y": [round(anchor, 6)],
            "text": [label],
            "textposition": "bottom center" if buy else "top center",
            "textfont": {"size": 10, "color": _TARGET if buy else _STOP},
            "marker": {"symbol": "triangle-up" if buy else "triangle-down", "size": 14,
                       "color": _TARGET if buy else _STOP, "line": {"width": 1, "color": "#333333"}},
            "xaxis": "x",
            "yaxis": "y",
        }
    )  # fmt: skip
    shapes: list[dict[str, Any]] = layout.setdefault("shapes", [])
    annotations: list[dict[str, Any]] = layout.setdefault("annotations", [])
    levels = [("entry", marks.entry, _ENTRY, "solid"), ("stop", marks.stop, _STOP, "dash"),
              ("target", marks.target, _TARGET, "dash")]  # fmt: skip
    for name, level, color, dash in levels:
        if level is None:
            continue
        value = float(level)
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"{name} {value:.2f}",
                "x": span,
                "y": [value, value],
                "line": {"width": 1.6, "color": color, "dash": dash},
                "xaxis": "x",
                "yaxis": "y",
                "hoverinfo": "name",
            }
        )
        if name == "entry":
            distance = f", R/R {marks.risk_reward}" if marks.risk_reward is not None else ""
        else:
            distance = f" ({(value / entry - 1) * 100:+.1f} %)"
        annotations.append(
            {"x": right, "y": value, "xref": "x", "yref": "y", "xanchor": "left", "showarrow": False,
             "text": f"{name} {value:.2f}{distance}", "font": {"size": 9, "color": color}}
        )  # fmt: skip
        if name != "entry":
            shapes.append(
                {"type": "rect", "xref": "x", "yref": "y", "x0": i - 0.4, "x1": right,
                 "y0": entry, "y1": value, "fillcolor": color, "opacity": 0.12, "line": {"width": 0},
                 "layer": "below"}
            )  # fmt: skip
    layout["margin"] = {**layout["margin"], "r": 90}  # room for the level labels


def png_size(png: bytes) -> tuple[int, int]:
    """Return ``(width, height)`` in pixels from a PNG's header (IHDR); raise ValueError for anything else."""
    if len(png) < 24 or not png.startswith(b"\x89PNG\r\n\x1a\n") or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _pane_title(text: str, yaxis: str, top: float) -> dict[str, Any]:
    return {
        "text": f"<b>{_escape(text)}</b>",
        "xref": "paper",
        "yref": "paper",
        "x": 0.0,
        "y": top,
        "xanchor": "left",
        "yanchor": "top",
        "showarrow": False,
        "font": {"size": 11},
        "bgcolor": "rgba(255,255,255,0.7)",
        "name": f"pane-title-{yaxis}",
    }


def add_timeframe_panes(
    fig: dict[str, Any], panes: list[str], timeframes: tuple[TimeframeIndicators, ...], *, main_label: str, height: int
) -> tuple[list[str], int]:
    """Append one pane per higher timeframe below the figure's panes (which keep ``height`` px); return the pane
    names (each timeframe as its bar size) and the new height in px."""
    if not timeframes:
        return panes, height
    layout, data = fig["layout"], fig["data"]
    total = height + TIMEFRAME_PANE_PX * len(timeframes)
    share = height / total  # the existing panes keep their pixel heights
    for key, axis in layout.items():
        if key.startswith("yaxis"):
            lo, hi = axis["domain"]
            axis["domain"] = [1 - share + lo * share, 1 - share + hi * share]
    annotations = layout.setdefault("annotations", [])
    annotations.append(_pane_title(f"{main_label} (main)", "y", 1.0))
    slot = (1 - share) / len(timeframes)
    first_axis = len(panes) + 1
    for k, tf in enumerate(timeframes):
        n = str(first_axis + k)
        top = 1 - share - k * slot - 48 / total  # room for the pane above's tick labels and this pane's title
        bottom = 1 - share - (k + 1) * slot + 22 / total  # and for this pane's own tick labels
        layout[f"yaxis{n}"] = {"domain": [max(0.0, bottom), top], "tickfont": {"size": 9}, "gridcolor": "#e5e5e5"}
        layout[f"xaxis{n}"] = {
            "type": "category",
            "anchor": f"y{n}",
            "nticks": 6,
            "tickfont": {"size": 8},
            "rangeslider": {"visible": False},
            "gridcolor": "#e5e5e5",
        }
        frame = tf.result.frame
        x = _labels(frame)
        label = tf.bar_size.value
        data.append(
            {
                "type": "candlestick",
                "name": label,
                "x": x,
                **{c: _series(frame[c].to_numpy(dtype=float)) for c in ("open", "high", "low", "close")},
                "xaxis": f"x{n}",
                "yaxis": f"y{n}",
                "showlegend": False,
            }
        )
        for j, col in enumerate(c for c in tf.result.columns if c.is_overlay):
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": f"{label} {col.name}",
                    "x": x,
                    "y": _series(frame[col.name].to_numpy(dtype=float)),
                    "line": {"width": 1.0, "color": _COLORS[j % len(_COLORS)]},
                    "xaxis": f"x{n}",
                    "yaxis": f"y{n}",
                    "showlegend": False,
                }
            )
        annotations.append(_pane_title(f"{label} (higher timeframe)", f"y{n}", top + 20 / total))
    return [*panes, *(tf.bar_size.value for tf in timeframes)], total


def _write_plotlyjs(directory: Path) -> Path:
    target = directory / PLOTLY_JS_NAME
    if target.exists():
        return target
    from plotly.offline import get_plotlyjs

    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{PLOTLY_JS_NAME}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(get_plotlyjs(), encoding="utf-8")
    tmp.replace(target)  # atomic, and per thread: concurrent runs never see half a file
    return target


def _html(fig: dict[str, Any], title: str, plotlyjs_src: str = PLOTLY_JS_NAME) -> str:
    import plotly.io as pio

    html: str = pio.to_html(fig, include_plotlyjs=plotlyjs_src, full_html=True, validate=False)
    return html.replace("<head>", f"<head><title>{_escape(title)}</title>", 1)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_chart(
    frame: pd.DataFrame,
    indicators: IndicatorResult,
    *,
    title: str,
    out_dir: Path | None = None,
    stem: str = "chart",
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    assets_dir: Path | None = None,
    marks: DecisionMarks | None = None,
) -> ChartResult:
    """Draw ``frame`` (canonical bars, optional ``flagged``) with ``indicators``; PNG bytes plus HTML text.

    With ``out_dir`` the files ``<stem>.png`` and ``<stem>.html`` are written there; the HTML loads
    ``plotly.min.js`` from ``assets_dir`` (default ``out_dir``) by a relative path, written there once.
    With ``marks`` it is the decision chart (:func:`annotate_decision`).
    Raises ``InputError`` for unusable input and :class:`ChartRenderError` when the browser fails.
    """
    fig, panes = build_figure(frame, indicators, title=title)
    if marks is not None:
        annotate_decision(fig, frame, marks)
    if indicators.timeframes:
        main = infer_bar_size(frame[TIMESTAMP])
        fig_panes = add_timeframe_panes(
            fig, panes, indicators.timeframes, main_label=main.value if main else "main bars", height=height
        )
        panes, height = fig_panes
    started = time.perf_counter()
    png = render_png(fig, width=width, height=height)
    render_ms = (time.perf_counter() - started) * 1000
    png_path = html_path = None
    if out_dir is None:
        html = _html(fig, title)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        script = _write_plotlyjs(assets_dir or out_dir)
        html = _html(fig, title, Path(os.path.relpath(script, out_dir)).as_posix())
        png_path = out_dir / f"{stem}.png"
        html_path = out_dir / f"{stem}.html"
        png_path.write_bytes(png)
        html_path.write_text(html, encoding="utf-8")
    return ChartResult(png, html, png_path, html_path, render_ms, tuple(panes))
