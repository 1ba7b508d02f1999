"""load_bars / parse_bars on the shipped files in data/samples (five real, one synthetic) and on broken inputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from models.enums import BarSize
from services.bars import load_bars, parse_bars
from services.errors import InputError

HEADER = "timestamp,open,high,low,close,volume\n"
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def sample(name: str) -> Path:
    path = SAMPLES / name
    assert path.is_file(), f"sample file missing: {path}"
    return path


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.mark.parametrize(
    ("name", "rows", "fmt", "bar_size", "first", "last"),
    [
        ("synthetic/SYNTH-1995-2014.csv", 5036, "yahoo", BarSize.DAY_1, "1995-01-03", "2014-12-31"),
        ("yahoofinance-SPY-20080101-20180101.csv", 2519, "yahoo", BarSize.DAY_1, "2007-12-31", "2017-12-29"),
        ("AAPL.csv", 127, "zipline", BarSize.DAY_1, "2014-03-03", "2014-08-29"),
        ("ib-spy-5min-20120627.csv", 166, "ib", BarSize.MIN_5, "2012-06-27 08:10", "2012-06-27 21:55"),
        ("nt-spy-minute-2011.csv", 14180, "ninjatrader", BarSize.MIN_1, "2011-01-03 09:00", "2011-02-01 00:59"),
        ("SP500_NOV2019_IDay.csv", 1563, "mplfinance_intraday", BarSize.MIN_1, "2019-11-05 14:30", "2019-11-08 20:59"),
    ],
)
def test_real_files_rows_format_size_range(name, rows, fmt, bar_size, first, last):
    loaded = load_bars(sample(name))
    frame = loaded.frame
    assert len(frame) == rows
    assert loaded.fmt == fmt
    assert loaded.bar_size is bar_size
    assert frame["timestamp"].iloc[0] == utc(first)
    assert frame["timestamp"].iloc[-1] == utc(last)
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    for column in ("open", "high", "low", "close", "volume"):
        assert frame[column].dtype == "float64"
    assert frame["timestamp"].is_monotonic_increasing


def test_sp500_columns_read_by_name_not_position():
    # Header is Date,Open,Close,High,Low: first row 11/5/2019 9:30 -> O 3080.8 C 3080.49 H 3081.47 L 3080.3.
    row = load_bars(sample("SP500_NOV2019_IDay.csv")).frame.iloc[0]
    assert (row["open"], row["high"], row["low"], row["close"]) == (3080.8, 3081.47, 3080.3, 3080.49)
    assert row["timestamp"] == utc("2019-11-05 14:30")  # 09:30 EST (UTC-5 after the 2019-11-03 change)


def test_ninjatrader_bar_end_labels_shift_to_bar_start():
    loaded = load_bars(sample("nt-spy-minute-2011.csv"))
    frame = loaded.frame
    assert frame["timestamp"].iloc[0] == utc("2011-01-03 09:00:00")
    assert tuple(frame.iloc[0][["open", "high", "low", "close", "volume"]]) == (126.35, 126.39, 126.35, 126.39, 1579)
    assert loaded.source_tz == "UTC"
    # Regular session 09:30-16:00 ET = bar starts 14:30..20:59 UTC: every minute present, 112.0M shares
    # (README: file labels 14:31-21:00 sum to 112.0M); the closing-print spike starts at 21:00 (16:00 ET).
    stamps = frame.set_index("timestamp")
    regular = stamps.loc[utc("2011-01-03 14:30") : utc("2011-01-03 20:59")]
    assert len(regular) == 390
    assert round(regular["volume"].sum() / 1e6, 1) == 112.0
    day = stamps.loc[utc("2011-01-03 00:00") : utc("2011-01-03 23:59")]
    assert day["volume"].idxmax() == utc("2011-01-03 21:00")
    assert any("bar-end" in note for note in loaded.notes)


def test_ib_file_cest_converted_to_utc():
    loaded = load_bars(sample("ib-spy-5min-20120627.csv"))
    frame = loaded.frame.set_index("timestamp")
    assert loaded.source_tz == "Europe/Berlin"
    # 15:30 CEST = 13:30 UTC = 09:30 EDT: the regular session's first bar; 78 regular bars to 15:55 ET.
    regular = frame.loc[utc("2012-06-27 13:30") : utc("2012-06-27 19:55")]
    assert len(regular) == 78
    assert regular["open"].iloc[0] == 132.42
    assert regular["high"].max() == 133.43
    # The 22:00 CEST (16:00 ET) bar holds the official daily low and close.
    closing = frame.loc[utc("2012-06-27 20:00")]
    assert (closing["low"], closing["close"]) == (131.97, 133.17)
    assert {"wap", "trade_count"} <= set(loaded.frame.columns)
    assert "HasGaps" not in loaded.frame.columns


def test_ib_source_tz_override_and_zone_suffix():
    text = "Date,Open,High,Low,Close,Volume,TradeCount,WAP,HasGaps\n20120627  10:10:00,1,1,1,1,9,1,1,False\n"
    assert parse_bars(text, source_tz="America/New_York").frame["timestamp"].iloc[0] == utc("2012-06-27 14:10")
    suffixed = "Date,Open,High,Low,Close,Volume,WAP,TradeCount\n20120627 10:10:00 US/Eastern,1,1,1,1,9,1,1\n"
    loaded = parse_bars(suffixed)
    assert loaded.frame["timestamp"].iloc[0] == utc("2012-06-27 14:10")
    assert loaded.source_tz == "US/Eastern"


def test_daily_files_keep_adj_close_and_session_dates():
    path = sample("yahoofinance-SPY-20080101-20180101.csv")
    header, first = path.read_text().splitlines()[:2]
    assert header.split(",")[5] == "Adj Close"
    loaded = load_bars(path, source_tz="America/New_York")
    assert loaded.frame["adj_close"].iloc[0] == float(first.split(",")[5])  # the file's own first Adj Close
    assert loaded.source_tz is None
    assert loaded.frame["timestamp"].iloc[0] == utc("2007-12-31")
    assert any("source_tz ignored" in note for note in loaded.notes)


def test_explicit_format_and_text_variant():
    text = sample("AAPL.csv").read_text()
    loaded = parse_bars(text, fmt="csv")
    assert len(loaded.frame) == 127
    assert loaded.fmt == "csv"
    assert loaded.path is None
    assert len(parse_bars(sample("AAPL.csv").read_bytes()).frame) == 127


def test_generic_csv_offsets_and_naive_with_zone():
    aware = (
        "timestamp,open,high,low,close,volume\n"
        "2024-03-08T14:30:00Z,1,2,0.5,1,10\n"
        "2024-03-08T09:31:00-05:00,1,2,0.5,1,10\n"
    )
    frame = parse_bars(aware).frame
    assert list(frame["timestamp"]) == [utc("2024-03-08 14:30"), utc("2024-03-08 14:31")]
    naive = "timestamp,open,high,low,close,volume\n2024-07-01 09:30,1,2,0.5,1,10\n"
    assert parse_bars(naive, source_tz="America/New_York").frame["timestamp"].iloc[0] == utc("2024-07-01 13:30")


def test_blank_lines_skipped_and_line_numbers_kept():
    text = "Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,1,10\n\n2020-01-03,1,2,0.5,oops,10\n"
    with pytest.raises(InputError) as info:
        parse_bars(text)
    assert info.value.problems[0].location == "line 4"
    ok = parse_bars(text.replace("oops", "1") + "\n")
    assert len(ok.frame) == 2
    assert any("blank" in note for note in ok.notes)


@pytest.mark.parametrize(
    ("data", "kwargs", "expected"),
    [
        (b"", {}, "file is empty"),
        ("Date,Open,High,Low,Close,Volume\n", {}, "no data rows"),
        ("Date,Open,High,Low,Volume\n2020-01-02,1,2,0.5,10\n", {}, "missing required column(s) close"),
        ("Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,abc,10\n", {}, "line 2: close 'abc' is not a number"),
        ("Date\tOpen\tHigh\tLow\tClose\tVolume\n2020-01-02\t1\t2\t0.5\t1\t10\n", {}, "unsupported delimiter '\\t'"),
        ("Date|Open|High|Low|Close|Volume\n", {}, "unsupported delimiter '|'"),
        ("Date;Open;High;Low;Close;Volume\n2020-01-02;1;2;0.5;1;10\n", {}, "not the NinjaTrader layout"),
        ("Date,Open,High,Low,Close,Volume\n2020-13-02,1,2,0.5,1,10\n", {}, "line 2: cannot read timestamp"),
        ("Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,1,10,7\n", {}, "line 2: expected 6 fields, found 7"),
        ("Date,Open,High,Low,Close,Volume\n,1,2,0.5,1,10\n", {}, "line 2: missing timestamp"),
        ("timestamp,open,high,low,close,volume\n2020-01-02 10:00,1,2,0.5,1,10\n", {}, "pass source_tz"),
        ("timestamp,open,high,low,close,volume\n2020-01-02,1,2,0.5,1,10\n", {"source_tz": "Mars/Base"}, "Mars/Base"),
        ("timestamp,open,high,low,close,volume\n2020-01-02,1,2,0.5,1,10\n", {"fmt": "excel"}, "unknown format"),
        ("Date,Foo,Bar\n1,2,3\n", {}, "missing required column(s) open, high, low, close, volume"),
        ("hello world\n", {}, "unrecognised format"),
        (b"\xff\xfe\x00", {}, "not UTF-8"),
        (
            "timestamp,open,high,low,close,volume\n2020-03-08 02:30,1,2,0.5,1,10\n",
            {"source_tz": "America/New_York"},
            "do not fit",
        ),
    ],
)
def test_bad_inputs_raise_input_error(data, kwargs, expected):
    with pytest.raises(InputError) as info:
        parse_bars(data, source="bad.csv", **kwargs)
    assert info.value.source == "bad.csv"
    assert expected in str(info.value)


def test_many_bad_values_all_reported_but_capped():
    rows = "".join(f"2020-01-{d:02d},1,2,0.5,x,10\n" for d in range(1, 31))
    with pytest.raises(InputError) as info:
        parse_bars("Date,Open,High,Low,Close,Volume\n" + rows)
    problems = info.value.problems
    assert len(problems) == 21
    assert problems[0].location == "line 2"
    assert "10 more" in problems[-1].message


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_bars(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="not a regular file"):
        load_bars(tmp_path)


def test_empty_cell_loads_as_nan_for_validation_to_flag():
    frame = parse_bars("Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,,10\n").frame
    assert frame["close"].isna().iloc[0]


def _provenance_table() -> dict[str, tuple[str, int]]:
    """``{file: (sha256 first 16, bytes)}`` from the table in data/samples/README.md."""
    rows = {}
    for line in (SAMPLES / "README.md").read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].endswith((".csv", ".txt")):
            rows[cells[0]] = (cells[5], int(cells[6].replace(",", "")))
    return rows


REAL_SAMPLES = [
    "AAPL.csv",
    "SP500_NOV2019_IDay.csv",
    "ib-spy-5min-20120627.csv",
    "nt-spy-minute-2011.csv",
    "yahoofinance-SPY-20080101-20180101.csv",
]


@pytest.mark.parametrize("name", REAL_SAMPLES)
def test_samples_match_their_recorded_provenance_and_load(name):
    # The README records each file's sha256 and size as copied from its upstream repository: the bytes must not
    # have changed since (no line-ending rewrite, no re-save).
    path = sample(name)
    digest, size = _provenance_table()[name]
    data = path.read_bytes()
    assert (hashlib.sha256(data).hexdigest()[:16], len(data)) == (digest, size)
    assert len(load_bars(path).frame) > 0


def test_every_top_level_sample_has_a_provenance_row():
    on_disk = sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".csv", ".txt"))
    assert on_disk == sorted(REAL_SAMPLES) == sorted(_provenance_table())


def test_gpl_file_is_not_in_samples():
    assert not list(SAMPLES.rglob("orcl-1995-2014*"))


def test_public_surface_and_lazy_heavy_imports():
    import subprocess
    import sys

    import services.bars

    assert services.bars.__all__ == sorted(services.bars.__all__)
    assert {"load_bars", "parse_bars", "resample_bars", "validate_bars", "LoadedBars"} <= set(services.bars.__all__)
    code = (
        "import sys, services.bars, services.calendar; "
        "print(sorted(m for m in ('great_expectations', 'exchange_calendars') if m in sys.modules))"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
