"""The prompt-scores flow on Prefect (ephemeral API), forward closes from an in-memory broker on real SPY bars."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from models.enums import AnalystKind
from services.bars.loader import load_bars
from services.broker.memory import MemoryBroker, stock
from services.db import init_database, session_scope
from services.prompt_library import seed_templates
from services.prompt_performance import stored_scores
from services.repositories import signals
from services.runtime import Runtime, use_runtime
from services.settings import load_settings
from services.strategies import load_strategy_file, save_definition

ROOT = Path(__file__).resolve().parents[1]
SPY_FILE = ROOT / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"


def test_prefect_yaml_schedules_prompt_scores_daily_at_18_new_york() -> None:
    document = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    entry = next(d for d in document["deployments"] if d["name"] == "prompt-scores")
    assert entry["entrypoint"] == "flows/prompt_scores.py:prompt_scores_flow"
    assert entry["schedules"] == [{"cron": "0 18 * * *", "timezone": "America/New_York", "slug": "daily"}]
    assert entry["work_pool"]["name"] == "trader-pool"
    from flows.prompt_scores import prompt_scores_flow

    assert prompt_scores_flow.name == "prompt-scores"


@pytest.mark.prefect
@pytest.mark.slow
def test_flow_scores_and_publishes_one_row_per_version(tmp_path: Path) -> None:
    from prefect.artifacts import Artifact
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    from flows.prompt_scores import ARTIFACT_KEY, prompt_scores_flow

    settings = load_settings({"TRADER_DATA_DIR": str(tmp_path)})
    init_database(settings)
    with session_scope(settings.database_url()) as session:
        seed_templates(session)  # daily-analyst v1
        save_definition(session, load_strategy_file(ROOT / "examples/strategies/spy-sma-cross.yaml"))
        for day, action in (("2010-03-01", "BUY"), ("2010-03-08", "SELL"), ("2010-03-10", "HOLD")):
            signals.record(
                session,
                strategy_name="spy-sma-cross",
                symbol="SPY",
                bar_time=dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC),
                action=action,
                analyst=AnalystKind.OFFLINE,
                confidence=0.7,
                prompt_template_name="daily-analyst",
                prompt_template_version=1,
            )
    memory = MemoryBroker([stock("SPY", 756733)], {"SPY": load_bars(SPY_FILE).frame})
    now = dt.datetime(2010, 3, 12, 23, 0, tzinfo=dt.UTC)  # 18:00 New York; bars up to 2010-03-11
    memory.clock.set(now)
    runtime = Runtime(settings, broker_factory=lambda: memory, clock=lambda: now)
    # The ephemeral API server's default 20 s start-up wait is tight on a busy 2-core box.
    with temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120}), use_runtime(runtime):
        rows = prompt_scores_flow()
        artifact = Artifact.get(ARTIFACT_KEY)
    runtime.close()

    assert len(rows) == 1
    row = rows[0]
    assert (row["template"], row["version"], row["day"]) == ("daily-analyst", 1, "2010-03-12")
    assert (row["signals"], row["BUY/SELL"]) == (3, 2)
    # BUY 2010-03-01: 111.889999 -> 112.199997 (hit); SELL 2010-03-08: 114.269997 -> 114.459999 (miss)
    assert row["hit rate +1"] == 0.5
    expected = ((112.199997 / 111.889999 - 1) - (114.459999 / 114.269997 - 1)) / 2
    assert row["mean return +1"] == pytest.approx(expected, abs=1e-6)
    assert (row["pending +5"], row["pending +20"]) == (1, 2)  # 2010-03-08 +5 is 2010-03-15: not yet

    with session_scope(settings.database_url()) as session:
        assert [s.day for s in stored_scores(session)] == [dt.date(2010, 3, 12)]
    assert artifact is not None and artifact.type == "table"
    data = artifact.data if isinstance(artifact.data, list) else json.loads(str(artifact.data))
    assert data == rows
