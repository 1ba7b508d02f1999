"""Reading, validating and scheduling strategy documents (YAML or JSON).

A document is checked for values no field can hold before pydantic sees it (integers beyond 64 bits or with
thousands of digits, infinities and NaN, nesting deeper than :data:`MAX_DEPTH`) and, once validated, for numbers
beyond :data:`MAX_MAGNITUDE`; each is a problem with its field path, never a traceback.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import yaml
from pydantic import ValidationError
from sqlalchemy.orm import Session

from models.strategy import StrategyDefinition
from models.tables import Strategy
from services.errors import InputError, Problem
from services.files import MAX_STRATEGY_FILE_BYTES, read_text_capped
from services.repositories import strategies as repo
from services.repositories.strategies import StrategySpec

MAX_DEPTH: Final = 16  # the schema nests 4 levels deep (risk.sizing.quantity)
MAX_MAGNITUDE: Final = 10**15  # no count, price, quantity or period of a strategy comes near this
_INT64_MAX: Final = 2**63 - 1


class _HugeInteger:
    """An integer literal too long for Python to convert (more than 4,300 digits): reported with its field path."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _json_int(text: str) -> int | _HugeInteger:
    return int(text) if len(text) <= 4_000 else _HugeInteger(len(text.lstrip("+-")))


class _Loader(yaml.SafeLoader):
    """The safe YAML loader, with over-long integer literals kept as :class:`_HugeInteger` instead of a ValueError."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int | _HugeInteger:  # type: ignore[override]
        try:
            return int(super().construct_yaml_int(node))
        except ValueError:
            return _HugeInteger(len(str(node.value)))


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


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


def _walk(data: Any) -> list[tuple[tuple[int | str, ...], Any]]:
    # Every (path, leaf) of the document, iteratively (no recursion); containers deeper than MAX_DEPTH are leaves.
    leaves: list[tuple[tuple[int | str, ...], Any]] = []
    stack: list[tuple[tuple[int | str, ...], Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict | list) and len(path) < MAX_DEPTH:
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend(((*path, key if isinstance(key, int | str) else str(key)), item) for key, item in items)
        else:
            leaves.append((path, value))
    return leaves


def unholdable_values(data: Any) -> list[Problem]:
    """Problems with values no field can hold: huge integers, infinities/NaN, nesting beyond :data:`MAX_DEPTH`."""
    problems: list[Problem] = []
    for path, value in _walk(data):
        where = _location(path) or "document"
        if isinstance(value, dict | list):
            problems.append(Problem(where, f"nested more than {MAX_DEPTH} levels deep"))
        elif isinstance(value, _HugeInteger):
            problems.append(Problem(where, f"an integer with {value.digits:,} digits is out of range"))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > _INT64_MAX:
            problems.append(Problem(where, "integer out of range (beyond 64 bits)"))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(Problem(where, f"must be a finite number, got {value}"))
    return sorted(problems, key=lambda p: p.location)


def _out_of_range(definition: StrategyDefinition) -> list[Problem]:
    problems: list[Problem] = []
    for path, value in _walk(definition.model_dump(mode="python")):
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            continue
        if not (isinstance(value, Decimal) and not value.is_finite()) and abs(value) < MAX_MAGNITUDE:
            continue
        problems.append(Problem(_location(path), f"{value} is out of range (at most {MAX_MAGNITUDE:.0e})"))
    return sorted(problems, key=lambda p: p.location)


def parse_strategy(data: Any, *, source: str = "strategy") -> StrategyDefinition:
    """Validate an already-parsed document; raise InputError listing every problem."""
    if not isinstance(data, dict):
        raise InputError(source, "the document must be a mapping of fields (YAML or JSON object)")
    if problems := unholdable_values(data):
        raise InputError(source, problems)
    try:
        definition = StrategyDefinition.model_validate(data)
    except ValidationError as exc:
        raise InputError(source, problems_from_validation(exc)) from None
    if problems := _out_of_range(definition):
        raise InputError(source, problems)
    return definition


def load_strategy_file(path: Path) -> StrategyDefinition:
    """Read a YAML or JSON strategy file; raise InputError naming the file and every problem."""
    source = str(path)
    text = read_text_capped(path, MAX_STRATEGY_FILE_BYTES, what="a strategy file")
    if not text.strip():
        raise InputError(source, "file is empty")
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    try:
        data = json.loads(text, parse_int=_json_int) if kind == "JSON" else yaml.load(text, Loader=_Loader)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(source, f"not valid {kind}: {exc}") from None
    except RecursionError:
        raise InputError(source, f"not a strategy document: nested more than {MAX_DEPTH} levels deep") from None
    return parse_strategy(data, source=source)


_DST_SLACK: Final = timedelta(hours=2)  # more than any zone's DST shift


def next_run_times(definition: StrategyDefinition, *, count: int = 3, after: datetime | None = None) -> list[datetime]:
    """Return the next ``count`` scheduled run times strictly after ``after`` (default now), timezone-aware in the
    schedule's zone, by the rule Prefect's scheduler applies to the deployment's ``CronSchedule``:

    * the cron runs on the zone's wall clock (15:55 New York is 19:55 UTC in summer, 20:55 UTC in winter);
    * a wall time repeated when the clocks fall back runs **once**, at its first occurrence (01:30 on the first
      Sunday of November is 01:30 EDT; an hourly cron pauses two hours there);
    * a wall time skipped when they spring forward runs at the pre-change offset (02:30 EST = 03:30 EDT).
    """
    from croniter import croniter

    zone = ZoneInfo(definition.schedule.timezone)
    start = (after or datetime.now(UTC)).astimezone(UTC)
    wall = start.astimezone(zone).replace(tzinfo=None)
    # Walk naive wall times (each once) from a little before ``start``: a skipped wall time just before it may
    # still map to an instant after it. Aware datetimes sharing a tzinfo compare by wall time: compare in UTC.
    itr = croniter(definition.schedule.cron, wall - _DST_SLACK)
    found: dict[datetime, datetime] = {}
    while True:
        candidate: datetime = itr.get_next(datetime)
        instant = candidate.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if instant > start:
            found.setdefault(instant, instant.astimezone(zone))
        if len(found) >= count:
            last = sorted(found)[count - 1]
            if candidate - last.astimezone(zone).replace(tzinfo=None) > _DST_SLACK:
                return [found[k] for k in sorted(found)[:count]]


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


def find_definition(session: Session, name: str) -> StrategyDefinition | None:
    """Return the stored, validated definition of ``name``, or ``None`` when there is none (e.g. deleted)."""
    row = repo.get_by_name(session, name)
    return None if row is None else from_row(row)
