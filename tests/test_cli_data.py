"""``trader data inspect`` through typer's CliRunner: reports on real files, one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.data import app

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
runner = CliRunner()


def sample(name: str) -> Path:
    path = SAMPLES / name
    assert path.is_file(), f"sample file missing: {path}"
    return path


def test_inspect_text_report_lists_issues():
    result = runner.invoke(app, ["inspect", str(sample("yahoofinance-SPY-20080101-20180101.csv"))])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "rows       2,519" in out
    assert "first bar  2007-12-31T00:00:00Z" in out
    assert "last bar   2017-12-29T00:00:00Z" in out
    assert "bar size   1 day" in out
    assert "format     yahoo" in out
    assert "columns    timestamp, open, high, low, close, volume, adj_close" in out
    issue_lines = [line for line in out.splitlines() if line.startswith("  ohlc_consistency")]
    assert len(issue_lines) == 2
    assert "2015-03-05T00:00:00Z" in issue_lines[0]
    assert "2015-03-30T00:00:00Z" in issue_lines[1]


def test_inspect_json_ib_file():
    result = runner.invoke(app, ["inspect", str(sample("ib-spy-5min-20120627.csv")), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == 166
    assert report["format"] == "ib"
    assert report["bar_size"] == "5 mins"
    assert report["first_bar"] == "2012-06-27T08:10:00Z"  # 10:10 CEST
    assert report["source_tz"] == "Europe/Berlin"
    assert report["columns"][-2:] == ["wap", "trade_count"]
    assert report["passed"] is True
    assert report["issues"] == []


def test_inspect_source_tz_and_format_options():
    args = ["inspect", str(sample("ib-spy-5min-20120627.csv")), "--json", "--no-validate"]
    report = json.loads(runner.invoke(app, [*args, "--source-tz", "America/New_York"]).stdout)
    assert report["first_bar"] == "2012-06-27T14:10:00Z"
    assert report["validated"] is False
    forced = runner.invoke(app, ["inspect", str(sample("AAPL.csv")), "--format", "csv", "--json", "--no-validate"])
    assert json.loads(forced.stdout)["format"] == "csv"


def test_inspect_split_in_aapl():
    result = runner.invoke(app, ["inspect", str(sample("AAPL.csv")), "--json"])
    report = json.loads(result.stdout)
    assert [(i["timestamp"], i["rule"]) for i in report["issues"]] == [("2014-06-09T00:00:00Z", "split_like_jump")]


BAD_FILES = {
    "empty.csv": ("", "file is empty"),
    "missing_column.csv": ("Date,Open,High,Low,Volume\n2020-01-02,1,2,0.5,10\n", "missing required column(s) close"),
    "non_numeric.csv": (
        "Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,1,10\n2020-01-03,1,2,zero,1,10\n2020-01-06,1,2,x,1,10\n",
        "line 3: low 'zero' is not a number (and 1 more problem)",
    ),
    "tabs.tsv": ("Date\tOpen\tHigh\tLow\tClose\tVolume\n2020-01-02\t1\t2\t0.5\t1\t10\n", "unsupported delimiter"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unreadable_file_exits_2_with_one_line(tmp_path, name):
    content, expected = BAD_FILES[name]
    path = tmp_path / name
    path.write_text(content)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {path}: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--source-tz", "Mars/Olympus"], "unknown timezone 'Mars/Olympus'"),
        (["--format", "excel"], "unknown format 'excel'"),
    ],
)
def test_bad_options_exit_2_with_one_line(args, expected):
    path = sample("AAPL.csv")
    result = runner.invoke(app, ["inspect", str(path), *args])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: {path}: ")
    assert expected in result.stderr


def test_missing_file_exits_2(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope.csv'}: file not found"
