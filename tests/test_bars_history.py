"""Incremental validation (services.bars.validation.ValidatedHistory): Great Expectations checks only the bars not
validated before, and the result is the full validation's, whatever happened to the history in between."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.enums import BarSize
from services.bars import load_bars
from services.bars.validation import ValidatedHistory, ValidationResult, validate_bars
from services.errors import InputError

SPY = Path(__file__).resolve().parents[1] / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    frame = load_bars(SPY).frame.iloc[-80:].reset_index(drop=True)
    frame.loc[10, "low"] = frame.loc[10, "high"] + 1  # OHLC broken
    frame.loc[30, "volume"] = -5.0  # negative volume
    frame.loc[31, "close"] = np.nan  # missing close
    return frame


def same(got: ValidationResult, full: ValidationResult) -> None:
    assert got.issues == full.issues
    pd.testing.assert_frame_equal(got.frame, full.frame)
    assert (got.rows_with_issues, got.rows_flagged, got.rule_counts) == (
        full.rows_with_issues,
        full.rows_flagged,
        full.rule_counts,
    )


def check(frame: pd.DataFrame, history: ValidatedHistory) -> ValidationResult:
    got = validate_bars(frame, bar_size=BarSize.DAY_1, history=history, history_key="spy")
    same(got, validate_bars(frame, bar_size=BarSize.DAY_1))
    return got


def test_only_new_bars_are_checked_and_issues_of_seen_bars_are_kept(bars: pd.DataFrame) -> None:
    history = ValidatedHistory()
    first = check(bars.iloc[:60].reset_index(drop=True), history)
    assert first.ge_rows == 60 and first.rows_with_issues == 3  # first sight: the full batch
    again = check(bars.iloc[:60].reset_index(drop=True), history)
    assert again.ge_rows == 0 and again.ge_seconds == 0.0  # nothing new: GE does not run
    slid = check(bars.iloc[2:62].reset_index(drop=True), history)  # the window moved by two bars
    assert slid.ge_rows == 2 and slid.rows_with_issues == 3
    revised = bars.iloc[2:62].reset_index(drop=True)
    revised.loc[59, "high"] = revised.loc[59, "low"] - 1  # the newest (forming) bar changed, and breaks a rule
    got = check(revised, history)
    assert got.ge_rows == 1 and got.rows_with_issues == 4


def test_a_change_of_history_or_of_order_is_a_full_batch(bars: pd.DataFrame) -> None:
    history = ValidatedHistory()
    check(bars.iloc[:60].reset_index(drop=True), history)
    changed = bars.iloc[:61].reset_index(drop=True)
    changed.loc[20, "open"] = changed.loc[20, "open"] + 0.01  # an old bar revised (e.g. a new adjustment)
    assert check(changed, history).ge_rows == 61
    shuffled = bars.iloc[:62].iloc[::-1].reset_index(drop=True)  # not increasing: the order rules need all rows
    got = check(shuffled, history)
    assert got.ge_rows == 62 and {"timestamp_increasing"} <= set(got.rule_counts)
    # the shuffled frame was not kept: the history is still ``changed``, whose row 20 differs from the original's
    assert check(bars.iloc[:61].reset_index(drop=True), history).ge_rows == 61
    assert check(bars.iloc[1:61].reset_index(drop=True), history).ge_rows == 0  # now the original is the history


def test_history_is_bounded_and_keyed(bars: pd.DataFrame) -> None:
    history = ValidatedHistory(max_keys=1)
    frame = bars.iloc[:40].reset_index(drop=True)
    validate_bars(frame, history=history, history_key="a")
    validate_bars(frame, history=history, history_key="b")  # pushes "a" out
    assert validate_bars(frame, history=history, history_key="a").ge_rows == 40
    assert validate_bars(frame, history=history, history_key="a").ge_rows == 0
    with pytest.raises(InputError, match="at least 1"):
        ValidatedHistory(max_keys=0)


def test_a_directory_keeps_the_history_for_another_process(
    bars: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a directory another ValidatedHistory (another process) finds what was validated; an unreadable file, one
    of another key or of another suite revision is not trusted: the full batch again, with the same result."""
    import services.bars.validation as validation

    frame = bars.iloc[:60].reset_index(drop=True)
    assert check(frame, ValidatedHistory(directory=tmp_path)).ge_rows == 60
    (path,) = tmp_path.glob("*.npz")
    assert check(frame, ValidatedHistory(directory=tmp_path)).ge_rows == 0  # found on disk: GE does not run
    grown = bars.iloc[:62].reset_index(drop=True)
    assert check(grown, ValidatedHistory(directory=tmp_path)).ge_rows == 2
    assert check(grown, ValidatedHistory()).ge_rows == 62  # without the directory: nothing known

    other = ValidatedHistory(directory=tmp_path)
    assert validate_bars(grown, bar_size=BarSize.DAY_1, history=other, history_key="qqq").ge_rows == 62  # other key
    (qqq_path,) = set(tmp_path.glob("*.npz")) - {path}
    qqq_path.write_bytes(path.read_bytes())  # spy's entry under qqq's name: the key inside it says whose it is
    fresh = ValidatedHistory(directory=tmp_path)
    assert validate_bars(grown, bar_size=BarSize.DAY_1, history=fresh, history_key="qqq").ge_rows == 62

    path.write_bytes(b"not an npz file")
    assert check(grown, ValidatedHistory(directory=tmp_path)).ge_rows == 62  # unreadable: validated again
    assert check(grown, ValidatedHistory(directory=tmp_path)).ge_rows == 0  # and rewritten
    monkeypatch.setattr(validation, "_SUITE_REVISION", validation._SUITE_REVISION + 1)  # the suite changed
    assert check(grown, ValidatedHistory(directory=tmp_path)).ge_rows == 62  # the old revision's file: not trusted
