"""``trader replay`` (SQLite and PostgreSQL), the stored ``replay_runs`` row, bad input, and the replay flow."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models.tables import ReplayRun
from services.db import make_engine, session_factory
from services.replay.runs import find_sample
from tests.test_charts import HAS_BROWSER, png_size
from tests.trader_cli import Invoke

ROOT = Path(__file__).resolve().parents[1]
DAILY = ROOT / "data" / "samples" / "synthetic" / "SYNTH-1995-2014.csv"  # generated: services.bars.synthetic
STRATEGY = ROOT / "examples" / "replay" / "orcl-sma-cross.yaml"
WINDOW = ("--from", "2012-01-01", "--to", "2013-12-31")


@pytest.fixture
def trader_db_url(db_url: str) -> str:
    return db_url  # the ``trader`` fixture (tests/conftest.py) on both backends


def _json(output: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(output[output.index("{") :])
    return data


def test_replay_file_json_is_stored_and_a_stored_strategy_gives_the_same_run(trader: Invoke, db_url: str) -> None:
    by_file = trader("replay", "--file", str(STRATEGY), "--data", str(DAILY), *WINDOW, "--slippage-bps", "5", "--json")
    assert by_file.exit_code == 0, by_file.output
    first = _json(by_file.output)
    assert first["params"]["start"] == "2012-01-01" and first["params"]["slippage_bps"] == "5"
    assert first["metrics"]["trades"] == len([t for t in first["trades"] if t["exit_time"]]) > 0

    assert trader("strategies", "create", "--file", str(STRATEGY)).exit_code == 0
    by_name = trader("replay", "orcl-sma-cross", "--data", str(DAILY), *WINDOW, "--slippage-bps", "5", "--json")
    assert by_name.exit_code == 0, by_name.output
    second = _json(by_name.output)
    assert second["run_id"] == first["run_id"] + 1
    assert second["metrics"] == first["metrics"] and second["trades"] == first["trades"]

    with session_factory(make_engine(db_url))() as session:
        rows = session.scalars(select(ReplayRun).order_by(ReplayRun.id)).all()
    assert [r.strategy_name for r in rows] == ["orcl-sma-cross", "orcl-sma-cross"]
    stored = rows[0].metrics
    assert stored["total_return"] == first["metrics"]["total_return"]
    assert stored["trades_list"] == first["trades"]
    assert len(stored["equity_curve"]) == 502  # every bar of 2012-2013 (NYSE sessions: 250 + 252), marked to close
    assert rows[0].params["data"] == str(DAILY)


def test_all_signals_counts_every_decision_and_is_stored(trader: Invoke, db_url: str) -> None:
    plain = _json(trader("replay", "--file", str(STRATEGY), "--data", str(DAILY), *WINDOW, "--json").output)
    assert "signals" not in plain  # the passed-over decisions are not made just to be counted
    assert 0 < plain["decisions_made"] < plain["decisions"] == 502
    assert sum(plain["signals_made"].values()) == plain["decisions_made"]
    full = _json(
        trader("replay", "--file", str(STRATEGY), "--data", str(DAILY), *WINDOW, "--json", "--all-signals").output
    )
    assert sum(full["signals"].values()) == full["decisions"] == 502
    for action, n in full["signals_made"].items():
        assert full["signals"][action] >= n
    assert full["signals"]["HOLD"] > 0 and full["metrics"] == plain["metrics"] and full["trades"] == plain["trades"]
    with session_factory(make_engine(db_url))() as session:
        stored = session.scalars(select(ReplayRun).order_by(ReplayRun.id)).all()[-1].metrics
    assert stored["signals"] == full["signals"] and stored["decisions_made"] == full["decisions_made"]
    table = trader("replay", "--file", str(STRATEGY), "--data", str(DAILY), *WINDOW, "--all-signals").output
    counts = full["signals"]
    expected = " / ".join(str(counts.get(a, 0)) for a in ("BUY", "SELL", "HOLD", "ABSTAIN"))
    assert "signals BUY / SELL / HOLD / ABSTAIN" in table and expected in table


def test_replay_prints_a_table(trader: Invoke) -> None:
    result = trader("replay", "--file", str(STRATEGY), "--data", str(DAILY), *WINDOW)
    assert result.exit_code == 0, result.output
    assert "total return" in result.output and "Sharpe" in result.output and "trades" in result.output
    assert "exits stop / target / signal / time" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--file", str(STRATEGY), "--data", str(DAILY), "--to", "2013-01-01"), "--from: required"),
        (("--file", str(STRATEGY), "--data", str(DAILY), "--from", "2013-02-30", "--to", "2013-03-01"), "not a date"),
        (("--file", str(STRATEGY), "--data", str(DAILY), *WINDOW, "--analyst", "gpt"), "offline or llm"),
        (("--file", str(STRATEGY), "--data", str(DAILY), *WINDOW, "--analyst", "llm"), "configured endpoint"),
        (("--file", str(STRATEGY), "--data", str(DAILY), *WINDOW, "--decide-every", "0"), "decide_every"),
        (("--file", str(STRATEGY), *WINDOW), "no bar file for ORCL"),
        (("--file", str(STRATEGY), "--data", str(DAILY), "--from", "2016-01-01", "--to", "2016-12-31"), "no bars"),
        (("no-such-strategy", "--data", str(DAILY), *WINDOW), "no strategy named"),
        ((*WINDOW,), "NAME or --file"),
        (("--file", str(STRATEGY), "--data", str(DAILY), *WINDOW, "--slippage-bps", "abc"), "not a number"),
    ],
)
def test_bad_input_exits_2_without_traceback(trader: Invoke, args: tuple[str, ...], needle: str) -> None:
    result = trader("replay", *args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_find_sample_matches_symbol_tokens() -> None:
    spy = find_sample("SPY")
    assert spy is not None and spy.name.startswith("yahoofinance-SPY")
    aapl = find_sample("AAPL")
    assert aapl is not None and aapl.name == "AAPL.csv"
    assert find_sample("ORCL") is None  # the synthetic series sits in a subfolder, named SYNTH


@pytest.mark.prefect
@pytest.mark.slow
def test_replay_flow_publishes_metrics_trades_and_equity_chart(tmp_path: Path, prefect_api: object) -> None:
    from prefect.artifacts import Artifact

    from flows.replay import replay_flow
    from services.runtime import Runtime, use_runtime
    from services.settings import load_settings
    from tasks.replay import CHART_HEIGHT, CHART_WIDTH

    settings = load_settings({"TRADER_DATA_DIR": str(tmp_path)})
    runtime = Runtime(settings)
    with use_runtime(runtime):  # on the session's PostgreSQL-backed Prefect server (conftest prefect_api)
        out = replay_flow(file=str(STRATEGY), data=str(DAILY), start="2012-01-01", end="2013-12-31")
        metrics = Artifact.get("replay-orcl-sma-cross-metrics")
        trades = Artifact.get("replay-orcl-sma-cross-trades")
        equity = Artifact.get("replay-orcl-sma-cross-equity")
    runtime.close()
    assert out["run_id"] >= 1 and out["metrics"]["periods"] == 501
    assert metrics is not None and metrics.type == "table"
    rows = metrics.data if isinstance(metrics.data, list) else json.loads(str(metrics.data))
    assert {"metric": "total_return", "value": out["metrics"]["total_return"]} in rows
    assert trades is not None and trades.type == "table"
    trade_rows = trades.data if isinstance(trades.data, list) else json.loads(str(trades.data))
    assert len(trade_rows) == len(out["trades"])
    assert equity is not None and equity.type == "markdown"
    text = str(equity.data)
    if HAS_BROWSER:  # known before the run: with Chromium the chart is there, as a PNG of the flow's size
        uri = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
        assert uri is not None, text[:500]
        assert png_size(base64.b64decode(uri.group(1))) == (CHART_WIDTH, CHART_HEIGHT)
    else:  # no browser on this box: the artifact says why instead of failing the run
        assert "_equity chart not rendered: " in text and "data:image/png" not in text
