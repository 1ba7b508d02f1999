"""Validation helpers shared by the repositories."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from models.tables import ExactDecimal, Price
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
