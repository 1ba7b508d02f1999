"""Reading, validating and scheduling strategy documents (YAML or JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from pydantic import ValidationError
from sqlalchemy.orm import Session

from models.strategy import StrategyDefinition
from models.tables import Strategy
from services.errors import InputError, Problem
from services.repositories import strategies as repo
from services.repositories.strategies import StrategySpec


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


def to_spec(definition: StrategyDefinition) -> StrategySpec:
    """Map a validated definition onto the stored row's fields (the full document is kept as JSON)."""
    return StrategySpec(
        name=definition.name,
        symbol=definition.symbol,
        bar_size=definition.bar_size,
        definition=definition.model_dump(mode="json"),
        cron=definition.schedule.cron,
        timezone=definition.schedule.timezone,
        conid=definition.conid,
        prompt_template_name=definition.prompt.template,
        prompt_template_version=definition.prompt.version,
    )


def from_row(row: Strategy) -> StrategyDefinition:
    """Rebuild the validated definition from a stored row (its ``active`` column wins)."""
    data = dict(row.definition)
    data["active"] = row.active
    return parse_strategy(data, source=f"stored strategy {row.name!r}")


def save_definition(
    session: Session, definition: StrategyDefinition, *, create_only: bool = False
) -> tuple[Strategy, bool]:
    """Create (or, unless ``create_only``, update) the stored strategy; return the row and whether it was created."""
    spec = to_spec(definition)
    if create_only:
        row = repo.create(session, spec, active=definition.active)
        return row, True
    row, created = repo.upsert(session, spec)
    row.active = definition.active
    return row, created


def get_definition(session: Session, name: str) -> StrategyDefinition:
    """Return the stored, validated definition of ``name``; raise InputError when there is none."""
    return from_row(repo.require(session, name))


def set_active_now(db_url: str, name: str, active: bool) -> None:
    """Switch the strategy on or off so that it holds at once for orders: under the exclusive send lock, every
    send already past its gate reaches the broker first, and no later send of this strategy passes the gate."""
    from services.db import session_scope
    from services.orders.send_lock import send_lock

    with send_lock(db_url, exclusive=True), session_scope(db_url) as session:
        repo.set_active(session, name, active)


def delete_now(db_url: str, name: str) -> bool:
    """Delete the strategy (as :func:`set_active_now`, under the exclusive send lock); return whether it existed."""
    from services.db import session_scope
    from services.orders.send_lock import send_lock

    with send_lock(db_url, exclusive=True), session_scope(db_url) as session:
        return repo.delete(session, name)
