"""validate_bars on the real files (exact expected flags) and on built frames for every rule and policy."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.enums import BadRowPolicy, BarSize
from services.bars import load_bars
from services.bars.validation import BarValidationError, validate_bars
from services.errors import DataError, InputError

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def sample(name: str) -> Path:
    path = SAMPLES / name
    assert path.is_file(), f"sample file missing: {path}"
    return path


def day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def spy() -> pd.DataFrame:
    return load_bars(sample("yahoofinance-SPY-20080101-20180101.csv")).frame


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    # 20 years of generated daily bars (services.bars.synthetic): large "earnings" gaps, dividend-adjusted adj_close
    return load_bars(sample("synthetic/SYNTH-1995-2014.csv")).frame


def _largest_move(frame: pd.DataFrame) -> tuple[pd.Timestamp, float]:
    moves = frame["close"] / frame["close"].shift(1) - 1
    at = moves.abs().idxmax()
    return frame.loc[at, "timestamp"], float(moves[at])


def test_spy_flags_exactly_the_two_ohlc_rows(spy):
    result = validate_bars(spy)
    assert [(i.timestamp, i.rule) for i in result.issues] == [
        (day("2015-03-05"), "ohlc_consistency"),
        (day("2015-03-30"), "ohlc_consistency"),
    ]
    assert "open 209.42 < low 209.85" in result.issues[0].detail
    assert not result.passed
    assert (result.rows_flagged, result.rows_with_issues, result.rows_dropped) == (2, 2, 0)
    assert result.bar_size is BarSize.DAY_1
    flagged = result.frame.loc[result.frame["flagged"], "timestamp"]
    assert [t.date().isoformat() for t in flagged] == ["2015-03-05", "2015-03-30"]
    assert len(result.frame) == len(spy)
    assert result.ge_seconds > 0
    assert result.total_seconds >= result.ge_seconds


def test_aapl_flags_the_unadjusted_split_only():
    result = validate_bars(load_bars(sample("AAPL.csv")).frame)
    assert [(i.timestamp, i.rule) for i in result.issues] == [(day("2014-06-09"), "split_like_jump")]
    assert "-85.5%" in result.issues[0].detail


def test_a_large_move_that_adj_close_explains_is_not_a_split(synthetic):
    _, move = _largest_move(synthetic)
    assert abs(move) > 0.30  # a gap as large as ORCL's real +31 % of 1999-06-16 ...
    result = validate_bars(synthetic)
    assert result.passed, [str(i) for i in result.issues]  # ... and adj_close, moving with it, explains it
    assert result.rule_counts == {}
    # the same move in a file without adj_close is under the 40 % no-adj_close threshold: still not flagged
    assert validate_bars(synthetic.drop(columns=["adj_close"])).passed


def test_split_rule_fires_when_adj_close_does_not_explain_the_move(synthetic):
    when, move = _largest_move(synthetic)
    broken = synthetic.copy()
    at = broken.index[broken["timestamp"] == when][0]
    broken.loc[at:, "adj_close"] = broken.loc[at:, "adj_close"] / (1 + move)  # as if adj_close had stayed flat
    result = validate_bars(broken)
    assert [(i.timestamp, i.rule) for i in result.issues] == [(when.to_pydatetime(), "split_like_jump")]


@pytest.mark.parametrize(
    "name",
    ["SP500_NOV2019_IDay.csv", "nt-spy-minute-2011.csv", "ib-spy-5min-20120627.csv", "synthetic/SYNTH-1995-2014.csv"],
)
def test_clean_files_pass(name):
    result = validate_bars(load_bars(sample(name)).frame)
    assert result.passed, [str(i) for i in result.issues[:5]]
    assert not result.frame["flagged"].any()


def test_calendar_missing_and_non_session_dates(spy):
    frame = spy[spy["timestamp"] != pd.Timestamp("2012-07-05", tz="UTC")]  # drop a session
    saturday = frame.iloc[[100]].assign(timestamp=pd.Timestamp("2012-07-07", tz="UTC"))
    frame = pd.concat([frame, saturday]).sort_values("timestamp").reset_index(drop=True)
    result = validate_bars(frame)
    rules = {(i.timestamp, i.rule) for i in result.issues}
    assert (day("2012-07-05"), "missing_session") in rules
    assert (day("2012-07-07"), "non_session_date") in rules
    assert result.rule_counts == {"ohlc_consistency": 2, "missing_session": 1, "non_session_date": 1}
    # missing_session is batch-level: no row to flag
    assert result.rows_flagged == 3


def test_policies_flag_drop_fail(spy):
    dropped = validate_bars(spy, policy=BadRowPolicy.DROP)
    assert len(dropped.frame) == len(spy) - 2
    assert "flagged" not in dropped.frame.columns
    assert (dropped.rows_dropped, dropped.rows_flagged, dropped.rows_with_issues) == (2, 0, 2)
    assert pd.Timestamp("2015-03-05", tz="UTC") not in set(dropped.frame["timestamp"])
    with pytest.raises(BarValidationError) as info:
        validate_bars(spy, policy=BadRowPolicy.FAIL)
    assert isinstance(info.value, DataError)
    assert len(info.value.issues) == 2
    assert "ohlc_consistency at 2015-03-05T00:00:00Z" in str(info.value)
    # Dropping the rows leaves holes in the calendar, which FAIL reports as missing sessions ...
    with pytest.raises(BarValidationError, match="missing_session at 2015-03-05"):
        validate_bars(dropped.frame, policy=BadRowPolicy.FAIL)
    # ... while clamping the lows repairs the batch.
    repaired = spy.assign(low=np.minimum(spy["low"], spy[["open", "close"]].min(axis=1)))
    assert validate_bars(repaired, policy=BadRowPolicy.FAIL).passed


def test_row_rules_on_a_built_frame():
    stamps = pd.to_datetime(
        ["2024-01-02 14:30", "2024-01-02 14:31", "2024-01-02 14:31", "2024-01-02 14:32", "2024-01-02 14:34"],
        utc=True,
    ).astype("datetime64[ns, UTC]")
    frame = pd.DataFrame(
        {
            "timestamp": stamps,
            "open": [1.0, 1.0, np.nan, 1.0, 1.0],
            "high": [2.0, 2.0, 2.0, 2.0, 0.95],
            "low": [0.5, 0.5, 0.5, -0.5, 0.9],
            "close": [1.5, 1.5, 1.5, 1.5, 0.92],
            "volume": [10.0, 10.0, 10.0, -1.0, 10.0],
        }
    )
    result = validate_bars(frame)
    found = {(i.timestamp.strftime("%H:%M") if i.timestamp else None, i.rule) for i in result.issues}
    assert found == {
        ("14:31", "timestamp_unique"),
        ("14:31", "timestamp_increasing"),
        ("14:31", "not_null"),
        ("14:32", "price_positive"),
        ("14:32", "volume_non_negative"),
        ("14:34", "ohlc_consistency"),
    }
    assert list(result.frame["flagged"]) == [False, True, True, True, True]
    ohlc = next(i for i in result.issues if i.rule == "ohlc_consistency")
    assert ohlc.detail == "high 0.95 < open 1"


def test_existing_flag_column_is_replaced_and_missing_column_refused(spy):
    again = validate_bars(validate_bars(spy).frame)
    assert list(again.frame.columns).count("flagged") == 1
    with pytest.raises(InputError, match="lacks column"):
        validate_bars(spy.drop(columns=["volume"]))


def test_non_canonical_dtypes_are_refused(spy):
    with pytest.raises(InputError, match=r"wrong dtype for open \(object\)"):
        validate_bars(spy.assign(open=spy["open"].astype(str).astype(object)))
    with pytest.raises(InputError, match="wrong dtype for timestamp"):
        validate_bars(spy.assign(timestamp=spy["timestamp"].dt.tz_localize(None)))
