"""What the CLI and the flow share: find the strategy and the bars, run the replay, store it in ``replay_runs``.

Bars: ``--data PATH`` (any format the loader reads), else a sample file in ``data/samples/`` whose name has
the strategy's symbol as a token (``AAPL.csv``, ``yahoofinance-SPY-...csv``). The broker's history is not used:
a replay must run offline and repeat exactly.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pandas as pd
from sqlalchemy.orm import Session

from models.strategy import StrategyDefinition
from models.tables import ReplayRun
from services.bars.loader import load_bars
from services.bars.validation import ValidatedHistory
from services.errors import InputError
from services.llm.prompts import load_template
from services.llm.store import DbLlmCallStore, InMemoryLlmCallStore, LlmCallStore
from services.replay.engine import AnalystChoice, ReplayResult, replay
from services.settings import Settings
from services.strategies import get_definition, load_strategy_file

__all__ = [
    "SAMPLES_DIR",
    "ReplayInputs",
    "find_sample",
    "replay_validation",
    "resolve_inputs",
    "run_replay",
    "save_run",
]

SAMPLES_DIR: Final = Path(__file__).resolve().parents[2] / "data" / "samples"


@dataclass(frozen=True)
class ReplayInputs:
    definition: StrategyDefinition
    bars: pd.DataFrame
    data_source: str
    template: tuple[str, str] | None  # (name, body) of the prompt; None: the shipped file


def find_sample(symbol: str, directory: Path = SAMPLES_DIR) -> Path | None:
    """Return the first sample file (sorted) whose name has ``symbol`` as a token, or None."""
    if not directory.is_dir():
        return None
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() in (".csv", ".txt") and symbol in re.split(r"[^A-Za-z0-9.]+", path.stem):
            return path
    return None


def _template(session: Session | None, definition: StrategyDefinition) -> tuple[str, str] | None:
    if session is None:
        return None
    from services.repositories import prompt_templates

    ref = definition.prompt
    row = prompt_templates.get(session, ref.template, ref.version)
    return None if row is None else (f"{row.name} v{row.version}", row.body)


def resolve_inputs(*, name: str | None, file: Path | None, data: Path | None, session: Session | None) -> ReplayInputs:
    """Load the strategy (stored ``name`` or ``file``) and its bars; ``InputError`` for anything missing."""
    if file is not None:
        definition = load_strategy_file(file)
        if name is not None and name != definition.name:
            raise InputError("replay", f"NAME {name!r} does not match the file's strategy {definition.name!r}")
    elif name is not None:
        if session is None:
            raise InputError("replay", "a stored strategy needs the database; pass --file instead")
        definition = get_definition(session, name)
    else:
        raise InputError("replay", "give a stored strategy NAME or --file F")
    if data is None:
        data = find_sample(definition.symbol)
        if data is None:
            raise InputError(
                "replay",
                f"no bar file for {definition.symbol}: pass --data PATH (the broker's history is not available "
                f"offline and {SAMPLES_DIR} has no {definition.symbol} sample)",
            )
    bars = load_bars(data).frame
    template = _template(session, definition)
    if template is None:
        from services.prompt_library import SHIPPED_DIR

        try:
            template = load_template(SHIPPED_DIR, definition.prompt)
        except InputError:
            template = None
    return ReplayInputs(definition, bars, str(data), template)


def run_replay(
    inputs: ReplayInputs,
    settings: Settings,
    *,
    start: dt.date | str,
    end: dt.date | str,
    decide_every: int = 1,
    analyst: AnalystChoice = "offline",
    slippage_bps: Decimal = Decimal(0),
    initial_cash: Decimal = Decimal(100_000),
    store: LlmCallStore | None = None,
    progress: Callable[[int, int], None] | None = None,
    validated: ValidatedHistory | None = None,
) -> ReplayResult:
    """Run the replay; the LLM path records calls (and finds cached answers) in the DB's ``llm_calls``.
    ``validated``: what Great Expectations validated before (default: :func:`replay_validation`, kept in the
    data directory, so a replay of the same bars again validates none of them)."""
    if validated is None:
        validated = replay_validation(settings)
    if store is None:
        store = DbLlmCallStore(settings.database_url()) if analyst == "llm" else InMemoryLlmCallStore()
    result = replay(
        inputs.definition,
        inputs.bars,
        start=start,
        end=end,
        decide_every=decide_every,
        analyst=analyst,
        settings=settings,
        store=store,
        slippage_bps=slippage_bps,
        initial_cash=initial_cash,
        progress=progress,
        template=inputs.template,
        validated=validated,
    )
    result.params["data"] = inputs.data_source
    return result


def replay_validation(settings: Settings) -> ValidatedHistory:
    """What Great Expectations validated for replays, kept under ``<data_dir>/validated`` (one small file per
    symbol, bar size and price adjustment: the rows' 64-bit fingerprints and the issues found)."""
    return ValidatedHistory(directory=settings.ensure_data_dir() / "validated")


def save_run(session: Session, result: ReplayResult, *, all_signals: bool = False) -> int:
    """Store the replay (params; metrics with signal counts, trades and the equity curve) and return its id.
    The signals of every decision are counted with ``all_signals`` (see ``ReplayResult.to_json``)."""
    data: dict[str, Any] = result.to_json(all_signals=all_signals)
    metrics = dict(data["metrics"])
    for key in (
        "decisions", "decisions_made", "signals", "signals_made", "llm_requests", "llm_cached",
        "possibly_contaminated", "warnings",
    ):  # fmt: skip
        if key in data:
            metrics[key] = data[key]
    metrics["trades_list"] = data["trades"]
    metrics["equity_curve"] = data["equity"]
    row = ReplayRun(strategy_name=result.strategy, params=data["params"], metrics=metrics)
    session.add(row)
    session.flush()
    return int(row.id)
