"""Validation helpers shared by the repositories."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from models.tables import Base, ExactDecimal, Price
from services.errors import InputError, Problem

_PRICE = Price()


def check_text(problems: list[Problem], field: str, value: str | None, *, max_len: int | None = None) -> None:
    """Add a problem when ``value`` is empty or longer than ``max_len``."""
    if value is None or not value.strip():
        problems.append(Problem(field, "must not be empty"))
    elif max_len is not None and len(value) > max_len:
        problems.append(Problem(field, f"longer than {max_len} characters"))


def check_aware(problems: list[Problem], field: str, value: dt.datetime | None) -> None:
    """Add a problem when ``value`` is not a timezone-aware datetime (``None`` is allowed)."""
    if value is None:
        return
    if not isinstance(value, dt.datetime):
        problems.append(Problem(field, f"expected a datetime, got {type(value).__name__}"))
    elif value.tzinfo is None or value.utcoffset() is None:
        problems.append(Problem(field, "naive datetime: attach a timezone"))


def check_decimal(problems: list[Problem], field: str, value: object, column: ExactDecimal = _PRICE) -> Decimal | None:
    """Return ``value`` coerced for ``column`` (``None`` stays ``None``), or add a problem and return ``None``."""
    if value is None:
        return None
    try:
        return column.coerce(value)
    except (TypeError, ValueError) as exc:
        problems.append(Problem(field, str(exc)))
        return None


def raise_problems(source: str, problems: list[Problem]) -> None:
    """Raise :class:`InputError` when ``problems`` is not empty."""
    if problems:
        raise InputError(source, problems)


def require_aware(source: str, field: str, value: dt.datetime) -> dt.datetime:
    """Return ``value`` in UTC, or raise :class:`InputError` if it is naive."""
    problems: list[Problem] = []
    check_aware(problems, field, value)
    raise_problems(source, problems)
    return value.astimezone(dt.UTC)


def insert_if_absent(session: Session, model: type[Base], key: str, values: dict[str, Any]) -> None:
    """``INSERT ... ON CONFLICT (key) DO NOTHING``: race-free creation of a row identified by a unique column.

    Two transactions creating the same row (e.g. two runs of one symbol) no longer fail on the unique
    constraint: the second waits for the first (PostgreSQL) or is serialized (SQLite) and inserts nothing.
    """
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(model).values(**values).on_conflict_do_nothing(index_elements=[key]))
