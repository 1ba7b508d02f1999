"""Strategies: create, read, update, (de)activate, delete.

The ``definition`` is the full validated strategy document (validation lives with the strategy schema); this
repository checks only what the table needs and keeps the queried columns in step with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.enums import BarSize
from models.tables import Strategy, utc_now
from services.errors import InputError, Problem
from services.repositories._common import check_text, raise_problems

_SOURCE = "strategy"


@dataclass(frozen=True)
class StrategySpec:
    """Everything stored for a strategy except its id, ``active`` flag and timestamps."""

    name: str
    symbol: str
    bar_size: BarSize | str
    definition: Mapping[str, Any] = field(default_factory=dict)
    cron: str | None = None
    timezone: str = "UTC"
    conid: int | None = None
    prompt_template_name: str | None = None
    prompt_template_version: int | None = None


def _validate(spec: StrategySpec) -> BarSize:
    problems: list[Problem] = []
    check_text(problems, "name", spec.name, max_len=128)
    check_text(problems, "symbol", spec.symbol, max_len=32)
    bar_size: BarSize | None = None
    try:
        bar_size = BarSize(spec.bar_size)
    except ValueError:
        problems.append(Problem("bar_size", f"{spec.bar_size!r} is not one of {', '.join(b.value for b in BarSize)}"))
    try:
        ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(Problem("timezone", f"unknown time zone {spec.timezone!r}"))
    if spec.cron is not None and not spec.cron.strip():
        problems.append(Problem("cron", "must not be blank (use None for no schedule)"))
    if spec.prompt_template_version is not None and spec.prompt_template_version < 1:
        problems.append(Problem("prompt_template_version", "must be >= 1"))
    if spec.prompt_template_version is not None and spec.prompt_template_name is None:
        problems.append(Problem("prompt_template_version", "given without prompt_template_name"))
    if spec.conid is not None and spec.conid <= 0:
        problems.append(Problem("conid", "must be positive"))
    raise_problems(f"{_SOURCE} {spec.name!r}", problems)
    assert bar_size is not None
    return bar_size


def _apply(row: Strategy, spec: StrategySpec, bar_size: BarSize) -> None:
    row.symbol = spec.symbol.strip().upper()
    row.bar_size = bar_size
    row.definition = dict(spec.definition)
    row.cron = spec.cron
    row.timezone = spec.timezone
    row.conid = spec.conid
    row.prompt_template_name = spec.prompt_template_name
    row.prompt_template_version = spec.prompt_template_version


def get_by_name(session: Session, name: str) -> Strategy | None:
    """Return the strategy called ``name``, or ``None``."""
    return session.scalars(select(Strategy).where(Strategy.name == name)).one_or_none()


def require(session: Session, name: str) -> Strategy:
    """Return the strategy called ``name``; raise :class:`InputError` if there is none."""
    row = get_by_name(session, name)
    if row is None:
        raise InputError(_SOURCE, [Problem("name", f"no strategy named {name!r}")])
    return row


def create(session: Session, spec: StrategySpec, *, active: bool = True) -> Strategy:
    """Insert a new strategy; raise :class:`InputError` if the name is taken or a field is invalid."""
    bar_size = _validate(spec)
    if get_by_name(session, spec.name) is not None:
        raise InputError(_SOURCE, [Problem("name", f"a strategy named {spec.name!r} already exists")])
    row = Strategy(name=spec.name, active=active)
    _apply(row, spec, bar_size)
    session.add(row)
    session.flush()
    return row


def update(session: Session, spec: StrategySpec) -> Strategy:
    """Replace every field of the strategy ``spec.name`` (keeps ``active``); raise if it does not exist."""
    bar_size = _validate(spec)
    row = require(session, spec.name)
    _apply(row, spec, bar_size)
    row.updated_at = utc_now()
    session.flush()
    return row


def upsert(session: Session, spec: StrategySpec) -> tuple[Strategy, bool]:
    """Create or update the strategy ``spec.name``; return it and whether it was created."""
    if get_by_name(session, spec.name) is None:
        return create(session, spec), True
    return update(session, spec), False


def list_strategies(session: Session, *, active_only: bool = False) -> Sequence[Strategy]:
    """Return strategies ordered by name (only active ones when ``active_only``)."""
    query = select(Strategy).order_by(Strategy.name)
    if active_only:
        query = query.where(Strategy.active.is_(True))
    return session.scalars(query).all()


def set_active(session: Session, name: str, active: bool) -> Strategy:
    """Switch the strategy on or off; raise :class:`InputError` if it does not exist."""
    row = require(session, name)
    if row.active != active:
        row.active = active
        row.updated_at = utc_now()
        session.flush()
    return row


def delete(session: Session, name: str) -> bool:
    """Delete the strategy; return whether one existed. Its signals and orders keep their data (FK set to NULL)."""
    row = get_by_name(session, name)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True
