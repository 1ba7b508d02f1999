"""Reading, validating and scheduling strategy documents (YAML or JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from pydantic import ValidationError

from models.strategy import StrategyDefinition
from services.errors import InputError, Problem


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif parts:
            parts.append(f".{item}")
        else:
            parts.append(str(item))
    return "".join(parts)


def problems_from_validation(exc: ValidationError) -> list[Problem]:
    """Turn pydantic's errors into located problems (one per message, cross-field ones split)."""
    problems: list[Problem] = []
    for err in exc.errors():
        message = str(err["msg"]).removeprefix("Value error, ")
        loc = _location(tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "required field is missing"
        problems.extend(Problem(loc, part) for part in message.split("\n"))
    return problems


def parse_strategy(data: Any, *, source: str = "strategy") -> StrategyDefinition:
    """Validate an already-parsed document; raise InputError listing every problem."""
    if not isinstance(data, dict):
        raise InputError(source, "the document must be a mapping of fields (YAML or JSON object)")
    try:
        return StrategyDefinition.model_validate(data)
    except ValidationError as exc:
        raise InputError(source, problems_from_validation(exc)) from None


def load_strategy_file(path: Path) -> StrategyDefinition:
    """Read a YAML or JSON strategy file; raise InputError naming the file and every problem."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(source, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(source, f"cannot read file: {exc}") from None
    if not text.strip():
        raise InputError(source, "file is empty")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(source, f"not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}") from None
    return parse_strategy(data, source=source)


def next_run_times(definition: StrategyDefinition, *, count: int = 3, after: datetime | None = None) -> list[datetime]:
    """Return the next ``count`` scheduled run times (timezone-aware, in the schedule's zone)."""
    from croniter import croniter

    zone = ZoneInfo(definition.schedule.timezone)
    start = (after or datetime.now(UTC)).astimezone(zone)
    itr = croniter(definition.schedule.cron, start)
    return [itr.get_next(datetime) for _ in range(count)]
