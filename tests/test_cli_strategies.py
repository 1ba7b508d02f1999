from pathlib import Path

import yaml

from cli import common

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "strategies" / "spy-sma-cross.yaml"


def test_init_is_safe_to_run_twice(trader, tmp_path):
    first = trader("init")
    assert first.exit_code == 0, first.output
    assert "created" in first.output
    second = trader("init")
    assert second.exit_code == 0
    assert "current" in second.output
    assert (tmp_path / "data" / "trader.db").exists()


def test_strategy_lifecycle(trader):
    assert trader("strategies", "create", "--file", str(EXAMPLE)).exit_code == 0
    duplicate = trader("strategies", "create", "--file", str(EXAMPLE))
    assert duplicate.exit_code == 2
    assert "already exists" in duplicate.output

    listed = trader("strategies", "list")
    assert "spy-sma-cross" in listed.output and "yes" in listed.output

    shown = trader("strategies", "show", "spy-sma-cross")
    assert shown.exit_code == 0
    assert shown.output.count("15:55:00") == 3  # next three runs of "55 15 * * 1-5"

    assert trader("strategies", "deactivate", "spy-sma-cross").exit_code == 0
    assert "no" in trader("strategies", "list").output.split("spy-sma-cross")[1]
    assert "will not run" in trader("strategies", "show", "spy-sma-cross").output
    assert trader("strategies", "activate", "spy-sma-cross").exit_code == 0

    assert trader("strategies", "delete", "spy-sma-cross").exit_code == 0
    missing = trader("strategies", "show", "spy-sma-cross")
    assert missing.exit_code == 2
    assert "no strategy named 'spy-sma-cross'" in missing.output


def test_update_replaces_definition(trader, tmp_path):
    assert trader("strategies", "create", "--file", str(EXAMPLE)).exit_code == 0
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["lookback"] = "2 Y"
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(doc))
    assert trader("strategies", "update", "spy-sma-cross", "--file", str(changed)).exit_code == 0
    assert '"lookback": "2 Y"' in trader("strategies", "show", "spy-sma-cross").output


def test_broken_file_exits_2_with_every_problem_and_stores_nothing(trader, tmp_path):
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["bar_size"] = "7 mins"
    doc["schedule"]["cron"] = "bad"
    doc["risk"]["max_position"] = -1
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc))
    result = trader("strategies", "create", "--file", str(broken))
    assert result.exit_code == 2
    assert "3 problems" in result.output
    for location in ("bar_size", "schedule.cron", "risk.max_position"):
        assert location in result.output
    assert "Traceback" not in result.output
    assert "spy-sma-cross" not in trader("strategies", "list").output


def test_bad_setting_exits_2(trader, monkeypatch):
    monkeypatch.setenv("TRADER_IB__PROT", "1")
    common.settings.cache_clear()
    result = trader("init")
    assert result.exit_code == 2
    assert "TRADER_IB__PROT: unknown setting" in result.output
