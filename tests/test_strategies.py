from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from models.enums import BarSize
from models.strategy import duration_seconds
from services.errors import InputError
from services.strategies import load_strategy_file, next_run_times, parse_strategy

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "strategies"


def example_doc(name: str = "spy-sma-cross") -> dict:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_examples_are_valid(path):
    definition = load_strategy_file(path)
    assert definition.name == path.stem
    assert definition.active


def test_broken_file_lists_every_mistake_in_one_run(tmp_path):
    doc = example_doc()
    doc["bar_size"] = "7 mins"
    doc["indicators"][0]["function"] = "NOPE"
    doc["indicators"][1]["params"] = {"timeperod": 3}
    doc["schedule"]["cron"] = "61 * * *"
    doc["schedule"]["timezone"] = "Mars/Base"
    doc["surprise"] = 1
    del doc["risk"]["sizing"]["risk_fraction"]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError) as info:
        load_strategy_file(path)
    locations = [p.location for p in info.value.problems]
    assert locations == [
        "bar_size",
        "indicators[0].function",
        "indicators[1]",
        "schedule.cron",
        "schedule.timezone",
        "risk.sizing",
        "surprise",
    ]
    assert str(path) in str(info.value)


def test_cross_field_problems_are_listed_separately():
    doc = example_doc()
    doc["lookback"] = "20 D"  # ~13 daily bars: too few for SMA(50); within IB's limit
    doc["indicators"][1]["alias"] = "sma_fast"
    with pytest.raises(InputError) as info:
        parse_strategy(doc)
    messages = [p.message for p in info.value.problems]
    assert len(messages) == 2
    assert "indicators need" in messages[0]
    assert "duplicate columns" in messages[1]


def test_a_time_exit_longer_than_the_lookback_is_refused():
    """A live run counts the bars held in the bars it fetched: a lookback of fewer bars than max_holding_bars would
    never let the time exit come due, so the document is refused (and accepted with a longer lookback)."""
    doc = example_doc()
    doc["indicators"] = [{"function": "SMA", "params": {"timeperiod": 5}}]
    doc["lookback"] = "6 M"  # ~124 daily bars
    doc["risk"]["max_holding_bars"] = 130
    with pytest.raises(InputError, match=r"risk\.max_holding_bars 130 needs a lookback of more than 130 bars"):
        parse_strategy(doc)
    doc["risk"]["max_holding_bars"] = 124  # the boundary: 6 M gives ~124 bars, and the time exit needs more
    with pytest.raises(InputError, match=r"max_holding_bars 124 needs a lookback of more than 124 bars"):
        parse_strategy(doc)
    doc["risk"]["max_holding_bars"] = 123
    assert parse_strategy(doc).risk.max_holding_bars == 123
    doc["risk"]["max_holding_bars"] = 130
    doc["lookback"] = "1 Y"
    assert parse_strategy(doc).risk.max_holding_bars == 130


def test_the_time_exit_check_counts_trading_hours_for_intraday_bars():
    """Intraday, the bars a lookback gives are those of the trading sessions (RTH), not of calendar time."""
    doc = example_doc()
    doc["indicators"] = [{"function": "SMA", "params": {"timeperiod": 5}}]
    doc.update(bar_size="5 mins", lookback="2 D", use_rth=True)  # ~78 bars, not 576
    doc["risk"]["max_holding_bars"] = 100
    with pytest.raises(InputError, match=r"max_holding_bars 100 needs a lookback of more than 100 bars"):
        parse_strategy(doc)
    doc["risk"]["max_holding_bars"] = 77
    assert parse_strategy(doc).risk.max_holding_bars == 77


def test_lookback_beyond_ib_limit_for_bar_size():
    doc = example_doc()
    doc["bar_size"] = BarSize.SEC_5.value
    doc["lookback"] = "1 D"
    with pytest.raises(InputError, match="exceeds IB's limit"):
        parse_strategy(doc)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "file is empty"), ("name: [unclosed", "not valid YAML"), ("- a\n- b\n", "mapping")],
)
def test_unreadable_documents(tmp_path, text, problem):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=problem):
        load_strategy_file(path)


def test_missing_file():
    with pytest.raises(InputError, match="file not found"):
        load_strategy_file(Path("/nonexistent/strategy.yaml"))


def test_durations():
    assert duration_seconds("1 Y") == 365 * 86400
    assert duration_seconds("3600 S") == 3600
    with pytest.raises(ValueError):
        duration_seconds("1Y")


def test_next_run_times_follow_cron_in_its_timezone():
    definition = parse_strategy(example_doc())
    after = datetime(2026, 3, 6, 22, 0, tzinfo=UTC)  # Friday 17:00 New York (EST)
    runs = next_run_times(definition, after=after)
    assert [r.isoformat() for r in runs] == [
        "2026-03-09T15:55:00-04:00",  # Monday, after the DST switch on 2026-03-08
        "2026-03-10T15:55:00-04:00",
        "2026-03-11T15:55:00-04:00",
    ]
