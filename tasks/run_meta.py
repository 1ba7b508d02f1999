"""What the strategy flow does around its steps, not a step itself: load the stored document, name and tag the
flow run, and give the run its directory (``flows/strategy.py``)."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pandas as pd
from prefect import get_client
from prefect.runtime import flow_run

from models.enums import BarSize
from models.strategy import BAR_SECONDS, StrategyDefinition
from services.db import session_scope
from services.runtime import get_runtime
from services.strategies import find_definition

__all__ = ["label_run", "load_definition", "run_dir_for"]


def load_definition(strategy: str) -> StrategyDefinition | None:
    """The stored strategy document, None when it was deleted (after this run was scheduled)."""
    with session_scope(get_runtime().database_url) as session:
        return find_definition(session, strategy)


def label_run(definition: StrategyDefinition, bar_time: pd.Timestamp | None = None) -> None:
    """Name the flow run after strategy, symbol and bar time, and tag it for filtering in the UI (one API call)."""
    run_id = flow_run.get_id()
    if not run_id:
        return
    name = f"{definition.name}-{definition.symbol}" + (f"-{_bar_label(definition, bar_time)}" if bar_time else "")
    tags = sorted({*flow_run.get_tags(), f"strategy:{definition.name}", f"symbol:{definition.symbol}"})
    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(run_id), name=name, tags=tags)


def _bar_label(definition: StrategyDefinition, bar_time: pd.Timestamp) -> str:
    daily = BAR_SECONDS[definition.bar_size] >= BAR_SECONDS[BarSize.DAY_1]
    label: str = bar_time.strftime("%Y%m%d" if daily else "%Y%m%dT%H%MZ")
    return label


def run_dir_for(definition: StrategyDefinition) -> Path:
    """``<runs>/<strategy>/<flow run id>``, created: the run's chart, prompt and decision files."""
    run_id = flow_run.get_id() or "local"
    path = get_runtime().runs_dir() / definition.name / str(run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path
