"""Bad input files and documents: each a clear error (exit 2, file or field path), never a traceback or a hang.

On main: ``--file /dev/zero`` read until MemoryError (2.7 GB); a conid beyond int64 was stored; ``timeperiod: .inf``,
a 5000-digit integer and deep nesting ended in OverflowError / ValueError / RecursionError tracebacks; a cron that
never fires was stored and ``strategies show`` then raised ``CroniterBadDateError``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from cli import common
from services.errors import InputError
from services.files import MAX_BAR_FILE_BYTES, MAX_STRATEGY_FILE_BYTES, read_bytes_capped, read_text_capped

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "strategies" / "spy-sma-cross.yaml"
Invoke = Callable[..., Result]


def assert_input_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


# ---- item 2: every file input is read with a cap ----


def test_capped_read_takes_exactly_the_limit_and_refuses_one_byte_more(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"x" * 100)
    assert read_bytes_capped(path, 100, what="a test file") == b"x" * 100
    with pytest.raises(InputError, match="larger than the 0 KiB limit for a test file"):
        read_bytes_capped(path, 99, what="a test file")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(InputError, match="not UTF-8 text"):
        read_text_capped(path, 100, what="a test file")
    with pytest.raises(InputError, match="is a directory"):
        read_bytes_capped(tmp_path, 100, what="a test file")


def test_strategy_from_dev_zero_is_refused_at_the_cap(trader: Invoke) -> None:
    result = trader("strategies", "create", "--file", "/dev/zero")
    assert_input_error(result, "/dev/zero: larger than the 1 MiB limit for a strategy file")
    assert MAX_STRATEGY_FILE_BYTES == 1 << 20


def test_prompt_from_dev_zero_is_refused_at_the_cap(trader: Invoke) -> None:
    assert_input_error(
        trader("prompts", "create", "zero", "--file", "/dev/zero"),
        "larger than the 256 KiB limit for a prompt template",
    )


def test_replay_strategy_file_is_read_with_the_cap(trader: Invoke) -> None:
    result = trader("replay", "--from", "2017-01-03", "--to", "2017-02-01", "--file", "/dev/zero")
    assert_input_error(result, "larger than the 1 MiB limit for a strategy file")


def test_bar_file_over_the_cap_is_refused(trader: Invoke, tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    with big.open("wb") as handle:  # sparse: no disk used
        handle.truncate(MAX_BAR_FILE_BYTES + 1)
    assert_input_error(trader("data", "inspect", str(big)), "larger than the 128 MiB limit for a bar file")


# ---- item 3: values no field can hold are problems with a field path ----


def _variant(tmp_path: Path, old: str, new: str, suffix: str = ".yaml") -> Path:
    text = EXAMPLE.read_text()
    assert old in text
    path = tmp_path / f"variant{suffix}"
    path.write_text(text.replace(old, new, 1))
    return path


BAD_YAML = {
    "conid beyond int64": ("conid: 756733", "conid: 9223372036854775808", "conid: integer out of range"),
    "infinite period": ("{timeperiod: 20}", "{timeperiod: .inf}", "indicators[0].params.timeperiod: must be a finite"),
    "5000-digit integer": (
        "{timeperiod: 20}",
        "{timeperiod: " + "9" * 5000 + "}",
        "indicators[0].params.timeperiod: an integer with 5,000 digits is out of range",
    ),
    "huge decimal": (
        "max_notional_per_order: 25000",
        "max_notional_per_order: 1e999999",
        "risk.max_notional_per_order: 1E+999999 is out of range",
    ),
    "infinite decimal": (
        "max_notional_per_order: 25000",
        "max_notional_per_order: .inf",
        "risk.max_notional_per_order: must be a finite number",
    ),
    "never-firing cron": ('cron: "55 15 * * 1-5"', 'cron: "0 12 31 2 *"', "schedule.cron: '0 12 31 2 *' never fires"),
    "deep nesting": (
        "description: SPY daily",
        "description: " + "[" * 5000 + "]" * 5000 + "\nx: SPY daily",
        "nested more than 16 levels deep",
    ),
    "nesting below the recursion limit": (
        "description: SPY daily",
        "description: " + "[" * 30 + "]" * 30 + "\nx: SPY daily",
        "description" + "[0]" * 15 + ": nested more than 16 levels deep",
    ),
}


@pytest.mark.parametrize(("old", "new", "message"), BAD_YAML.values(), ids=BAD_YAML.keys())
def test_strategy_values_no_field_can_hold_are_located_problems(
    trader: Invoke, tmp_path: Path, old: str, new: str, message: str
) -> None:
    result = trader("strategies", "create", "--file", str(_variant(tmp_path, old, new)))
    assert_input_error(result, message)
    assert "spy-sma-cross" not in trader("strategies", "list").output


def test_json_strategy_with_infinite_and_huge_numbers(trader: Invoke, tmp_path: Path) -> None:
    import json

    import yaml

    document = yaml.safe_load(EXAMPLE.read_text())
    document["risk"]["max_notional_per_order"] = "@INF@"
    document["conid"] = "@BIG@"
    text = json.dumps(document).replace('"@INF@"', "1e999999").replace('"@BIG@"', "9" * 5000)
    path = tmp_path / "s.json"
    path.write_text(text)
    result = trader("strategies", "create", "--file", str(path))
    assert_input_error(
        result, "conid: an integer with 5,000 digits is out of range", "risk.max_notional_per_order: must be a finite"
    )
    deep = tmp_path / "deep.json"
    deep.write_text('{"name": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert_input_error(trader("strategies", "create", "--file", str(deep)), "nested more than 16 levels deep")


def test_a_stored_never_firing_schedule_is_an_input_error_on_show(trader: Invoke) -> None:
    # A row stored before the cron check (main stored it; `show` then raised CroniterBadDateError).
    from services.db import session_scope
    from services.repositories import strategies as repo
    from services.strategies import load_strategy_file, save_definition

    assert trader("init").exit_code == 0
    with session_scope(common.settings().database_url()) as session:
        row, _ = save_definition(session, load_strategy_file(EXAMPLE))
        row.definition = {**row.definition, "schedule": {**row.definition["schedule"], "cron": "0 12 31 2 *"}}
    with session_scope(common.settings().database_url()) as session:
        assert repo.require(session, "spy-sma-cross").definition["schedule"]["cron"] == "0 12 31 2 *"
    assert_input_error(trader("strategies", "show", "spy-sma-cross"), "schedule.cron: '0 12 31 2 *' never fires")


# ---- item 4: bar files with out-of-range dates, infinities, mixed aware/naive timestamps ----

HEADER = "Date,Open,High,Low,Close,Volume\n"


@pytest.mark.parametrize("date", ["0001-01-04", "9999-12-31", "1850-06-01"])
def test_out_of_range_dates_are_a_clear_error_naming_the_line(trader: Invoke, tmp_path: Path, date: str) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(HEADER + "2017-01-03,1,2,0.5,1.5,100\n" + f"{date},1,2,0.5,1.5,100\n")
    result = trader("data", "inspect", str(path))
    assert_input_error(result, f"line 3: timestamp '{date}' is outside the supported years 1900..2199")


def test_infinite_prices_and_volumes_are_flagged_rows() -> None:
    from services.bars.loader import parse_bars
    from services.bars.validation import RULE_FINITE, validate_bars

    text = HEADER + "2017-01-03,1,2,0.5,1.5,100\n2017-01-04,1,inf,0.5,+inf,+inf\n2017-01-05,1,2,0.5,1.5,-inf\n"
    result = validate_bars(parse_bars(text).frame)
    finite = [issue for issue in result.issues if issue.rule == RULE_FINITE]
    assert [(i.timestamp.date().isoformat() if i.timestamp else None, i.detail) for i in finite] == [
        ("2017-01-04", "high inf, close inf, volume inf"),
        ("2017-01-05", "volume -inf"),
    ]
    assert result.frame["flagged"].tolist() == [False, True, True]


def test_inf_rows_show_in_data_inspect(trader: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(HEADER + "2017-01-03,1,2,0.5,1.5,100\n2017-01-04,1,2,0.5,1.5,+inf\n")
    result = trader("data", "inspect", str(path))
    assert result.exit_code == 0, result.output
    assert "finite" in result.output and "volume inf" in result.output


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            ["2017-01-03T14:30:00+00:00", "2017-01-03T14:35:00", "2017-01-03T14:40:00-05:00"],
            "line 3: timestamp '2017-01-03T14:35:00' has no UTC offset while line 2 has one",
        ),
        (
            ["2017-01-03T14:30:00", "2017-01-03T14:35:00Z"],
            "line 3: timestamp '2017-01-03T14:35:00Z' has a UTC offset while line 2 has none",
        ),
    ],
    ids=["aware-first", "naive-first"],
)
def test_mixed_aware_and_naive_timestamps_name_the_rows(
    trader: Invoke, tmp_path: Path, rows: list[str], message: str
) -> None:
    path = tmp_path / "bars.csv"
    path.write_text("timestamp,open,high,low,close,volume\n" + "".join(f"{r},1,2,0.5,1.5,100\n" for r in rows))
    assert_input_error(trader("data", "inspect", str(path)), message, "mixed timezone-aware and naive timestamps")
