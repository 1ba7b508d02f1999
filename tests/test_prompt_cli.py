"""``trader prompts``: versions through the CLI (SQLite in a temp data dir), and the printed performance."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from cli import common
from models.enums import AnalystKind
from services.bars.loader import load_bars
from services.broker.memory import MemoryBroker, stock
from services.db import session_scope
from services.prompt_performance import FrameForwardBars, score_prompts
from services.repositories import prompt_templates, signals
from services.runtime import Runtime, use_runtime
from services.settings import load_settings
from services.strategies import load_strategy_file, save_definition
from tests.trader_cli import Invoke

ROOT = Path(__file__).resolve().parents[1]
SPY_FILE = ROOT / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"
STRATEGY = ROOT / "examples" / "strategies" / "spy-sma-cross.yaml"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def db_url() -> str:
    return common.settings().database_url()


def test_versions_lifecycle(trader: Invoke, tmp_path: Path) -> None:
    v1 = write(tmp_path, "v1.j2", "Analyse {{ symbol }} on {{ bar_size }}.\n")
    v2 = write(tmp_path, "v2.j2", "Analyse {{ symbol }} carefully.\n")

    created = trader("prompts", "create", "my-prompt", "--file", str(v1))
    assert created.exit_code == 0, created.output
    assert "created my-prompt v1" in created.output
    again = trader("prompts", "create", "my-prompt", "--file", str(v1))
    assert again.exit_code == 2 and "already exists" in again.output

    added = trader("prompts", "new-version", "my-prompt", "--file", str(v2), "--description", "shorter")
    assert added.exit_code == 0 and "added my-prompt v2" in added.output
    same = trader("prompts", "new-version", "my-prompt", "--file", str(v2))
    assert same.exit_code == 0 and "unchanged: my-prompt v2" in same.output
    unknown = trader("prompts", "new-version", "nope", "--file", str(v2))
    assert unknown.exit_code == 2 and "no prompt template 'nope'" in unknown.output

    latest = trader("prompts", "show", "my-prompt")
    assert latest.exit_code == 0 and "my-prompt v2" in latest.output and "carefully" in latest.output
    first = trader("prompts", "show", "my-prompt", "--version", "1")
    assert "on {{ bar_size }}" in first.output and "never (editable)" in first.output
    assert trader("prompts", "show", "my-prompt", "--version", "7").exit_code == 2

    listed = trader("prompts", "list")
    assert listed.exit_code == 0
    with session_scope(db_url()) as session:
        row = prompt_templates.require(session, "my-prompt", 1)
        sha = row.body_sha256[:12]
    assert "my-prompt" in listed.output and sha in listed.output and "unused" in listed.output


def test_syntax_error_names_the_line_and_stores_nothing(trader: Invoke, tmp_path: Path) -> None:
    broken = write(tmp_path, "broken.j2", "line one {{ symbol }}\n{% if rsi > 70 %}\noverbought\n")
    result = trader("prompts", "create", "broken", "--file", str(broken))
    assert result.exit_code == 2
    assert "line 3: Unexpected end of template" in result.output
    assert "Traceback" not in result.output
    assert "no prompt templates" in trader("prompts", "list").output

    missing = trader("prompts", "create", "x", "--file", str(tmp_path / "absent.j2"))
    assert missing.exit_code == 2 and "file not found" in missing.output
    empty = trader("prompts", "create", "x", "--file", str(write(tmp_path, "empty.j2", "  \n")))
    assert empty.exit_code == 2 and "empty" in empty.output


def test_edit_only_unused_versions(trader: Invoke, tmp_path: Path) -> None:
    assert trader("prompts", "create", "p", "--file", str(write(tmp_path, "a.j2", "A {{ symbol }}\n"))).exit_code == 0
    edited = trader("prompts", "edit", "p", "--version", "1", "--file", str(write(tmp_path, "b.j2", "B {{ x }}\n")))
    assert edited.exit_code == 0, edited.output
    assert "B {{ x }}" in trader("prompts", "show", "p").output

    with session_scope(db_url()) as session:
        prompt_templates.mark_used(session, prompt_templates.require(session, "p", 1))
    refused = trader("prompts", "edit", "p", "--version", "1", "--file", str(write(tmp_path, "c.j2", "C\n")))
    assert refused.exit_code == 2
    assert "immutable" in refused.output
    shown = trader("prompts", "show", "p").output
    assert "B {{ x }}" in shown and "used since" in shown and "never" not in shown
    bad = trader("prompts", "edit", "p", "--version", "1", "--file", str(write(tmp_path, "d.j2", "{% endif %}\n")))
    assert bad.exit_code == 2 and "line 1" in bad.output


def _store_signals(url: str) -> None:  # after `trader init`, which stores daily-analyst v1
    with session_scope(url) as session:
        save_definition(session, load_strategy_file(STRATEGY))
        prompt_templates.new_version(session, "other", "other {{ symbol }}")
        for day, action, confidence in (
            ("2010-03-01", "BUY", 0.75),  # +1 bar 112.199997 / 111.889999: hit
            ("2010-03-08", "SELL", 0.55),  # +1 bar 114.459999 / 114.269997 while short: miss
            ("2010-03-03", "ABSTAIN", None),
        ):
            signals.record(
                session,
                strategy_name="spy-sma-cross",
                symbol="SPY",
                bar_time=dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC),
                action=action,
                analyst=AnalystKind.OFFLINE,
                reason="no data" if action == "ABSTAIN" else "",
                confidence=confidence,
                prompt_template_name="daily-analyst",
                prompt_template_version=1,
            )


def test_performance_prints_stored_scores(trader: Invoke) -> None:
    assert trader("init").exit_code == 0
    _store_signals(db_url())
    spy = load_bars(SPY_FILE).frame
    with session_scope(db_url()) as session:
        score_prompts(session, dt.date(2010, 3, 31), FrameForwardBars({"SPY": spy}))

    result = trader("prompts", "performance", "--template", "daily-analyst")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "daily-analyst v1  day 2010-03-31" in out
    assert "signals 3 (BUY 1, SELL 1, HOLD 0, ABSTAIN 1); abstain rate 33.3 %" in out
    assert "+1 bars: hit rate 50.0 % of 2 scored, 0 pending" in out
    # mean of +0.277 % (BUY) and -0.166 % (SELL short) = +0.06 %
    assert "mean return +0.06 %" in out
    assert "+20 bars: hit rate 50.0 % of 2 scored, 0 pending" in out
    assert "confidence 0.5-0.6: 1 scored, mean confidence 0.550, hit rate 0.0 %" in out
    assert "confidence 0.7-0.8: 1 scored, mean confidence 0.750, hit rate 100.0 %" in out
    assert "other v1" not in out

    everything = trader("prompts", "performance", "--day", "2010-03-31").output
    assert "other v1" in everything and "signals 0" in everything
    assert "no stored prompt scores for 2010-04-01" in trader("prompts", "performance", "--day", "2010-04-01").output
    bad_day = trader("prompts", "performance", "--day", "31/03/2010")
    assert bad_day.exit_code == 2 and "not a date" in bad_day.output
    unknown = trader("prompts", "performance", "--template", "nope")
    assert unknown.exit_code == 2 and "no prompt template 'nope'" in unknown.output


def test_performance_compute_uses_the_configured_broker(trader: Invoke) -> None:
    assert trader("init").exit_code == 0
    _store_signals(db_url())
    spy = load_bars(SPY_FILE).frame
    memory = MemoryBroker([stock("SPY", 756733)], {"SPY": spy})
    now = dt.datetime(2010, 3, 12, tzinfo=dt.UTC)  # bars up to 2010-03-11: +5 of 2010-03-08 not there yet
    memory.clock.set(now)
    runtime = Runtime(load_settings(), broker_factory=lambda: memory, clock=lambda: now)
    with use_runtime(runtime):
        result = trader("prompts", "performance", "--compute", "--day", "2010-03-11")
    assert result.exit_code == 0, result.output
    assert "scored 2 template versions for 2010-03-11" in result.output
    assert "+1 bars: hit rate 50.0 % of 2 scored, 0 pending" in result.output
    assert "+5 bars: hit rate 100.0 % of 1 scored, 1 pending" in result.output
    assert "+20 bars: hit rate - of 0 scored, 2 pending" in result.output


def test_create_trial_renders_and_refuses_unbounded_templates(trader: Invoke, tmp_path: Path) -> None:
    # On main this template was stored, and its first render then hung for minutes.
    hang = write(
        tmp_path,
        "hang.j2",
        # the context's own ``range`` (a dict) hides Jinja's: long strings make the loops
        "{{ symbol }}\n{% for a in 'x' * 100000 %}{% for b in 'x' * 100000 %}{% endfor %}{% endfor %}\n",
    )
    result = trader("prompts", "create", "hang", "--file", str(hang))
    assert result.exit_code == 2, result.output
    assert "limit: render exceeded 2 s and was abandoned" in result.output
    assert "Traceback" not in result.output
    big = write(tmp_path, "big.j2", '{{ "a" * 50000000 }}\n')
    result = trader("prompts", "create", "big", "--file", str(big))
    assert result.exit_code == 2 and "limit: repeating a str" in result.output
    assert "no prompt templates" in trader("prompts", "list").output

    fine = write(tmp_path, "fine.j2", "Analyse {{ symbol }}.\n")
    assert trader("prompts", "create", "fine", "--file", str(fine)).exit_code == 0
    for command in (("new-version", "fine"), ("edit", "fine", "--version", "1")):
        result = trader("prompts", *command, "--file", str(big))
        assert result.exit_code == 2 and "limit: " in result.output, result.output
    with session_scope(db_url()) as session:
        assert [row.body for row in prompt_templates.versions(session, "fine")] == ["Analyse {{ symbol }}.\n"]


def test_seeding_refuses_an_unbounded_shipped_template(trader: Invoke, tmp_path: Path) -> None:
    from services.errors import InputError
    from services.prompt_library import seed_templates

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    write(shipped, "big.v1.j2", "{{ 'ab' * 10 ** 8 }}\n")
    with common.db_session() as session, pytest.raises(InputError, match="limit: "):
        seed_templates(session, shipped)
    with session_scope(db_url()) as session:
        assert prompt_templates.latest(session, "big") is None
