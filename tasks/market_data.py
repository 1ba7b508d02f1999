"""Step 2: fetch the strategy's bars from the broker and validate them (Great Expectations).

A strategy's higher ``timeframes`` are FETCHED from the broker too (one more historical request each, through the
same global limit and client-side pacing), not resampled from the main bars: IB's higher bars are not what
resampling the main bars gives (daily bars carry the official close and auction volume; regular-hours hourly bars
start at 09:30 with a half-hour first bar), and the main lookback rarely covers the higher one's. Each timeframe's
bars are validated like the main bars; a batch that fails validation fails the step (the run ABSTAINs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from models.bars import FLAGGED, TIMESTAMP
from models.enums import BarSize
from models.strategy import StrategyDefinition, Timeframe
from services.bars.validation import ValidationResult, validate_bars
from services.broker.types import BarRequest, ContractInfo
from services.errors import DataError
from services.runtime import get_runtime
from tasks.artifacts import artifact_key, key_values, markdown_table, publish_markdown
from tasks.market_gate import IB_HISTORICAL, limited
from tasks.retry import IO_RETRIES, IO_RETRY_DELAYS, retry_if_transient
from tasks.run_log import step_log
from tasks.timeouts import MARKET_DATA_TIMEOUT_S


@dataclass(frozen=True)
class TimeframeBars:
    """A higher timeframe's validated bars (``frame`` has the ``flagged`` column like the main bars)."""

    bar_size: BarSize
    lookback: str
    frame: pd.DataFrame
    validation: ValidationResult


@dataclass(frozen=True)
class MarketData:
    frame: pd.DataFrame  # canonical bars with a bool ``flagged`` column
    validation: ValidationResult
    timeframes: tuple[TimeframeBars, ...] = ()  # the strategy's higher timeframes, in its order

    @property
    def last_bar_time(self) -> pd.Timestamp:
        return pd.Timestamp(self.frame[TIMESTAMP].iloc[-1])

    @property
    def latest_flagged(self) -> bool:
        return bool(self.frame[FLAGGED].iloc[-1]) if FLAGGED in self.frame else False


def bars_summary(frame: pd.DataFrame) -> list[tuple[str, Any]]:
    last = frame.iloc[-1]
    return [
        ("rows", len(frame)),
        ("first bar (UTC)", pd.Timestamp(frame[TIMESTAMP].iloc[0]).isoformat()),
        ("last bar (UTC)", pd.Timestamp(last[TIMESTAMP]).isoformat()),
        ("last close", f"{last['close']:.4f}"),
        ("period high / low", f"{frame['high'].max():.4f} / {frame['low'].min():.4f}"),
        ("total volume", f"{frame['volume'].sum():,.0f}"),
    ]


@task(
    name="2 market data",
    cache_policy=NO_CACHE,
    timeout_seconds=MARKET_DATA_TIMEOUT_S,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=retry_if_transient,
)
def fetch_market_data(definition: StrategyDefinition, contract: ContractInfo) -> MarketData:
    """Return validated bars; raise DataError (the run ABSTAINs) when the batch is unusable."""
    runtime = get_runtime()
    request = BarRequest(
        bar_size=definition.bar_size,
        duration=definition.lookback,
        what_to_show=definition.what_to_show,
        use_rth=definition.use_rth,
    )
    with limited(IB_HISTORICAL):  # the global IB historical rate limit, across all workers (strict)
        frame = runtime.broker().historical_bars(contract, request)
    key = artifact_key(definition.name, "bars")
    if frame.empty:
        publish_markdown(key, "## Step 2: market data\n\nThe broker returned no bars.", "No bars")
        raise DataError(f"no bars for {definition.symbol} {definition.bar_size.value} {definition.lookback}")
    try:
        result = validate_bars(
            frame,
            bar_size=definition.bar_size,
            policy=runtime.settings.trading.bad_row_policy,
            history=runtime.validated_history(),  # GE checks only the bars this process has not validated yet
            history_key=f"{definition.name}|{contract.conid}|{request}",
        )
    except DataError as exc:
        publish_markdown(key, f"## Step 2: market data\n\nValidation failed the batch:\n\n{fenced_text(exc)}", "Failed")
        raise
    try:
        higher = tuple(_fetch_timeframe(definition, contract, tf) for tf in definition.timeframes)
    except DataError as exc:
        publish_markdown(key, f"## Step 2: market data\n\nA higher timeframe failed:\n\n{fenced_text(exc)}", "Failed")
        raise
    data = MarketData(result.frame, result, higher)
    issues = [
        {"bar (UTC)": i.timestamp.isoformat() if i.timestamp else "batch", "rule": i.rule, "detail": i.detail}
        for i in result.issues
    ]
    excluded = result.rows_flagged + result.rows_dropped
    body = [
        "## Step 2: market data",
        key_values(
            [
                ("request", f"{request.bar_size.value}, {request.duration}, {request.what_to_show}"),
                ("regular trading hours only", request.use_rth),
                *bars_summary(data.frame),
                ("validation", "passed" if result.passed else f"{len(result.issues)} issue(s)"),
                ("policy for bad rows", result.policy.value),
                ("rows excluded from the decision", excluded),
                ("Great Expectations rows checked", ge_rows_text(result)),
                ("Great Expectations time", f"{result.ge_seconds * 1000:.0f} ms"),
            ]
        ),
        "### Issues (rows listed here are kept out of the decision)" if issues else "### Issues: none",
    ]
    if issues:
        body.append(markdown_table(issues))
    if higher:
        body += ["### Higher timeframes (context)", markdown_table([_timeframe_row(tf) for tf in higher])]
        tf_issues = [
            {
                "timeframe": tf.bar_size.value,
                "bar (UTC)": i.timestamp.isoformat() if i.timestamp else "batch",
                "rule": i.rule,
                "detail": i.detail,
            }
            for tf in higher
            for i in tf.validation.issues
        ]
        if tf_issues:
            body += ["### Higher-timeframe issues (rows kept out of their indicators)", markdown_table(tf_issues)]
    publish_markdown(key, "\n\n".join(body), f"{definition.symbol} bars and validation")
    first, last = (pd.Timestamp(data.frame[TIMESTAMP].iloc[i]).isoformat() for i in (0, -1))
    step_log(
        "market data",
        f"{len(data.frame)} bars {first} .. {last}"
        f" ({request.bar_size.value}, {request.duration}), {result.rows_flagged} flagged, {result.rows_dropped} "
        f"dropped, validation {'passed' if result.passed else f'{len(result.issues)} issue(s)'}, "
        f"last close {float(data.frame['close'].iloc[-1]):.4f}"
        + "".join(
            f"; {tf.bar_size.value}: {len(tf.frame)} bars, {tf.validation.rows_flagged} flagged" for tf in higher
        ),
    )
    return data


def _fetch_timeframe(definition: StrategyDefinition, contract: ContractInfo, timeframe: Timeframe) -> TimeframeBars:
    """One more historical request (the global limit and the broker's pacing apply), validated like the main bars."""
    runtime = get_runtime()
    assert timeframe.lookback is not None  # the definition fills in the default
    request = BarRequest(
        bar_size=timeframe.bar_size,
        duration=timeframe.lookback,
        what_to_show=definition.what_to_show,
        use_rth=definition.use_rth,
    )
    with limited(IB_HISTORICAL):
        frame = runtime.broker().historical_bars(contract, request)
    what = f"{definition.symbol} {timeframe.bar_size.value} {timeframe.lookback} (higher timeframe)"
    if frame.empty:
        raise DataError(f"no bars for {what}")
    try:
        result = validate_bars(frame, bar_size=timeframe.bar_size, policy=runtime.settings.trading.bad_row_policy)
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from exc
    return TimeframeBars(timeframe.bar_size, timeframe.lookback, result.frame, result)


def _timeframe_row(tf: TimeframeBars) -> dict[str, Any]:
    frame = tf.frame
    return {
        "bar size": tf.bar_size.value,
        "lookback": tf.lookback,
        "rows": len(frame),
        "first bar (UTC)": pd.Timestamp(frame[TIMESTAMP].iloc[0]).isoformat(),
        "last bar (UTC)": pd.Timestamp(frame[TIMESTAMP].iloc[-1]).isoformat(),
        "last close": f"{frame['close'].iloc[-1]:.4f}",
        "validation": "passed" if tf.validation.passed else f"{len(tf.validation.issues)} issue(s)",
        "rows excluded": tf.validation.rows_flagged + tf.validation.rows_dropped,
    }


def ge_rows_text(result: ValidationResult) -> str:
    if result.ge_rows is None or result.ge_rows == result.rows_checked:
        return f"{result.rows_checked} (all)"
    return f"{result.ge_rows} new of {result.rows_checked} (the rest validated by an earlier run, issues kept)"


def fenced_text(exc: Exception) -> str:
    return "```\n" + str(exc) + "\n```"
