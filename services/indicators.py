"""Step 3: TA-Lib indicators over the canonical bar frame.

Each :class:`~models.strategy.IndicatorSpec` runs through TA-Lib's abstract API with exactly the price
inputs the function declares (``open``/``high``/``low``/``close``/``volume``). Output columns:

* single-output functions (SMA, RSI, ATR, ...): one column named ``spec.column_prefix`` (``sma_fast``, ``rsi_14``);
* multi-output functions: ``<prefix>_<output>``, e.g. ``bb_upperband``, ``macd_macdsignal``.

Rows whose ``flagged`` column is True (they broke a validation rule) are left out of the computation
input, so a bad bar never feeds a moving average; those rows get NaN in every indicator column.
``latest`` holds the values of the newest non-flagged bar (``None`` where TA-Lib is still warming up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd
from talib import abstract

from models.bars import FLAGGED, TIMESTAMP
from models.enums import BarSize
from models.strategy import IndicatorSpec, talib_function_info
from services.errors import InputError, Problem

PRICE_INPUTS: Final = frozenset({"open", "high", "low", "close", "volume"})
OVERLAP_GROUP: Final = "Overlap Studies"

# talib's stubs do not declare abstract.Function (it is generated at import time).
_FUNCTION: Final[Any] = getattr(abstract, "Function")  # noqa: B009

__all__ = ["IndicatorColumn", "IndicatorResult", "TimeframeIndicators", "compute_indicators"]


@dataclass(frozen=True)
class IndicatorColumn:
    """One output column: which spec and TA-Lib output produced it, and its TA-Lib group (for charting)."""

    name: str
    function: str
    output: str
    prefix: str
    group: str

    @property
    def is_overlay(self) -> bool:
        """True for Overlap Studies (SMA, EMA, BBANDS, ...): drawn on the price pane."""
        return self.group == OVERLAP_GROUP


@dataclass(frozen=True)
class IndicatorResult:
    """The bar frame with indicator columns appended, and the newest usable values.

    ``frame`` keeps every input row and column (prices are floats in the instrument's currency, timestamps
    UTC bar starts); ``latest_timestamp`` is the bar start of the newest non-flagged bar (None if every bar is
    flagged, in which case every value in ``latest`` is None).
    """

    frame: pd.DataFrame
    columns: tuple[IndicatorColumn, ...]
    latest: dict[str, float | None]
    latest_timestamp: pd.Timestamp | None
    specs: tuple[IndicatorSpec, ...] = field(default=())
    timeframes: tuple[TimeframeIndicators, ...] = field(default=())  # the strategy's higher timeframes (context)

    def column_names(self) -> list[str]:
        """Return the indicator column names in spec order."""
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class TimeframeIndicators:
    """A higher timeframe's bars with their indicators (computed like the main bars')."""

    bar_size: BarSize
    result: IndicatorResult


def _flag_mask(frame: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.bool_]]:
    if FLAGGED not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    mask: np.ndarray[Any, np.dtype[np.bool_]] = frame[FLAGGED].fillna(False).to_numpy(dtype=bool)
    return mask


def _inputs_of(info: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for value in dict(info["input_names"]).values():
        names.extend([value] if isinstance(value, str) else list(value))
    return names


def _check(frame: pd.DataFrame, specs: Sequence[IndicatorSpec]) -> None:
    problems: list[Problem] = []
    if not specs:
        problems.append(Problem("indicators", "no indicator specs given"))
    if TIMESTAMP in frame.columns and not frame[TIMESTAMP].is_monotonic_increasing:
        problems.append(Problem(TIMESTAMP, "bars are not sorted by timestamp"))
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        info = talib_function_info(spec.function)
        if info is None:  # IndicatorSpec validates this; kept for specs built with model_construct
            problems.append(Problem(f"indicators[{i}]", f"TA-Lib has no function {spec.function!r}"))
            continue
        for name in _inputs_of(info):
            if name not in PRICE_INPUTS:
                problems.append(Problem(f"indicators[{i}]", f"{spec.function} needs input {name!r}, not a bar column"))
            elif name not in frame.columns:
                problems.append(Problem(f"indicators[{i}]", f"{spec.function} needs column {name!r}"))
        if spec.column_prefix in seen:
            problems.append(Problem(f"indicators[{i}]", f"duplicate column prefix {spec.column_prefix!r}"))
        seen.add(spec.column_prefix)
    if problems:
        raise InputError("indicators", problems)


def compute_indicators(frame: pd.DataFrame, specs: Sequence[IndicatorSpec]) -> IndicatorResult:
    """Compute every spec over the non-flagged bars; raise ``InputError`` listing every problem.

    The input frame is not modified; the result frame is a copy with the indicator columns appended.
    """
    _check(frame, specs)
    flagged = _flag_mask(frame)
    good = ~flagged
    n_good = int(good.sum())
    arrays = {
        name: np.ascontiguousarray(frame[name].to_numpy(dtype=np.float64)[good])
        for name in PRICE_INPUTS
        if name in frame.columns
    }
    out = frame.copy()
    columns: list[IndicatorColumn] = []
    new_data: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {}
    for spec in specs:
        info = talib_function_info(spec.function)
        assert info is not None  # checked above
        named = spec.output_columns()
        outputs = [output for output, _ in named]
        fn = _FUNCTION(spec.function)
        if n_good:
            result = fn(arrays, **spec.params)
            values = [result] if len(outputs) == 1 else list(result)
        else:
            values = [np.empty(0) for _ in outputs]
        for (output, name), series in zip(named, values, strict=True):
            full = np.full(len(frame), np.nan)
            full[good] = np.asarray(series, dtype=np.float64)
            new_data[name] = full
            columns.append(IndicatorColumn(name, spec.function, output, spec.column_prefix, str(info["group"])))
    for name, data in new_data.items():
        out[name] = data
    latest: dict[str, float | None] = {c.name: None for c in columns}
    latest_ts: pd.Timestamp | None = None
    if n_good:
        last = int(np.flatnonzero(good)[-1])
        for c in columns:
            value = float(new_data[c.name][last])
            latest[c.name] = None if np.isnan(value) else value
        if TIMESTAMP in frame.columns:
            latest_ts = pd.Timestamp(frame[TIMESTAMP].iloc[last])
    return IndicatorResult(out, tuple(columns), latest, latest_ts, tuple(specs))
