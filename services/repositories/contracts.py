"""Contract cache: IB contract details by conid or symbol, with a TTL and hit/miss counters.

A lookup that finds a fresh entry counts a hit in ``cache_stats`` (name ``contracts``); a missing or stale entry
counts a miss and returns ``None``, and the caller fetches from IB and calls :func:`put`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from models.tables import CacheStat, Contract, utc_now
from services.errors import Problem
from services.repositories._common import check_aware, check_text, insert_if_absent, raise_problems, require_aware

CACHE_NAME: Final = "contracts"
_SOURCE = "contract cache"


@dataclass(frozen=True)
class CacheStats:
    """Size and effectiveness of a cache. ``hit_rate`` is ``None`` before the first lookup."""

    entries: int
    hits: int
    misses: int
    hit_rate: float | None
    oldest: dt.datetime | None


def _count(session: Session, *, hit: bool, name: str = CACHE_NAME) -> None:
    # Insert the counter row if missing (race-free on both backends), then increment it in SQL.
    insert_if_absent(session, CacheStat, "name", {"name": name, "hits": 0, "misses": 0})
    column = CacheStat.hits if hit else CacheStat.misses
    session.execute(
        update(CacheStat).where(CacheStat.name == name).values({column: column + 1}),
        execution_options={"synchronize_session": False},
    )


def get(
    session: Session,
    key: int | str,
    ttl: dt.timedelta,
    *,
    sec_type: str | None = None,
    currency: str | None = None,
    now: dt.datetime | None = None,
) -> Contract | None:
    """Return the cached contract for a conid (``int``) or symbol (``str``) if fetched within ``ttl``.

    A symbol may match several contracts: ``sec_type`` / ``currency`` narrow it, the most recently fetched wins.
    Counts a hit or a miss.
    """
    problems: list[Problem] = []
    if isinstance(key, bool) or not isinstance(key, int | str):
        problems.append(Problem("key", f"expected a conid (int) or a symbol (str), got {key!r}"))
    elif isinstance(key, str):
        check_text(problems, "key", key)
    if ttl < dt.timedelta(0):
        problems.append(Problem("ttl", "must not be negative"))
    check_aware(problems, "now", now)
    raise_problems(_SOURCE, problems)
    now = utc_now() if now is None else now.astimezone(dt.UTC)

    query = select(Contract)
    if isinstance(key, int):
        query = query.where(Contract.conid == key)
    else:
        query = query.where(Contract.symbol == key.strip().upper())
    if sec_type is not None:
        query = query.where(Contract.sec_type == sec_type.upper())
    if currency is not None:
        query = query.where(Contract.currency == currency.upper())
    row = session.scalars(query.order_by(Contract.fetched_at.desc()).limit(1)).one_or_none()
    fresh = row is not None and now - row.fetched_at <= ttl
    _count(session, hit=fresh)
    return row if fresh else None


def peek(session: Session, conid: int) -> Contract | None:
    """Return the cached entry for ``conid`` whatever its age, without counting a lookup."""
    return session.scalars(select(Contract).where(Contract.conid == conid)).one_or_none()


def put(
    session: Session,
    *,
    conid: int,
    symbol: str,
    sec_type: str,
    currency: str,
    exchange: str = "SMART",
    primary_exchange: str | None = None,
    local_symbol: str | None = None,
    details: Mapping[str, Any] | None = None,
    fetched_at: dt.datetime | None = None,
) -> Contract:
    """Insert or replace the entry for ``conid``; ``details["long_name"]`` also feeds :func:`search`."""
    problems: list[Problem] = []
    if isinstance(conid, bool) or not isinstance(conid, int) or conid <= 0:
        problems.append(Problem("conid", f"must be a positive integer, got {conid!r}"))
    check_text(problems, "symbol", symbol, max_len=32)
    check_text(problems, "sec_type", sec_type, max_len=8)
    check_text(problems, "currency", currency, max_len=8)
    check_text(problems, "exchange", exchange, max_len=32)
    check_aware(problems, "fetched_at", fetched_at)
    raise_problems(f"{_SOURCE} conid {conid}", problems)

    doc = dict(details or {})
    long_name = doc.get("long_name")
    values: dict[str, Any] = {
        "symbol": symbol.strip().upper(),
        "sec_type": sec_type.upper(),
        "currency": currency.upper(),
        "exchange": exchange,
        "primary_exchange": primary_exchange,
        "local_symbol": local_symbol,
        "long_name": str(long_name)[:256] if long_name else None,
        "details": doc,
        "fetched_at": utc_now() if fetched_at is None else fetched_at.astimezone(dt.UTC),
    }
    row = peek(session, conid)
    if row is None:  # created race-free: two runs resolving one symbol at once must not collide
        insert_if_absent(session, Contract, "conid", {"conid": conid, **values})
        row = peek(session, conid)
        assert row is not None
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return row


def delete(session: Session, conid: int) -> bool:
    """Remove the entry for ``conid``; return whether there was one."""
    row = peek(session, conid)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def purge_older_than(session: Session, cutoff: dt.datetime) -> int:
    """Delete entries fetched before ``cutoff``; return how many."""
    cutoff = require_aware(_SOURCE, "cutoff", cutoff)
    rows = session.scalars(select(Contract).where(Contract.fetched_at < cutoff)).all()
    for row in rows:
        session.delete(row)
    session.flush()
    return len(rows)


def stats(session: Session) -> CacheStats:
    """Return entry count, hits, misses, hit rate and the oldest entry's fetch time."""
    entries, oldest = session.execute(select(func.count(Contract.id), func.min(Contract.fetched_at))).one()
    counter = session.get(CacheStat, CACHE_NAME, populate_existing=True)
    hits = counter.hits if counter else 0
    misses = counter.misses if counter else 0
    total = hits + misses
    return CacheStats(
        entries=int(entries),
        hits=hits,
        misses=misses,
        hit_rate=hits / total if total else None,
        oldest=oldest,
    )


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search(session: Session, text: str, *, limit: int = 20) -> Sequence[Contract]:
    """Return entries whose symbol or long name contains ``text`` (case-insensitive); exact symbols first."""
    problems: list[Problem] = []
    check_text(problems, "text", text)
    if limit < 1:
        problems.append(Problem("limit", "must be >= 1"))
    raise_problems(_SOURCE, problems)
    needle = text.strip().lower()
    pattern = _like_pattern(needle)
    query = (
        select(Contract)
        .where(
            or_(
                func.lower(Contract.symbol).like(pattern, escape="\\"),
                func.lower(Contract.long_name).like(pattern, escape="\\"),
            )
        )
        .order_by((func.lower(Contract.symbol) != needle), Contract.symbol, Contract.conid)
        .limit(limit)
    )
    return session.scalars(query).all()
