"""Step 1: resolve a strategy's contract, through the DB cache (TTL) before asking the broker.

Also the ``trader symbols`` operations: :func:`search` asks the broker (IB's ``reqMatchingSymbols``) and caches
the full details of every match it can trade; :func:`resolve_batch` resolves a list of symbols, one report each.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

from sqlalchemy.orm import Session

from models.enums import SecType
from models.strategy import SYMBOL_PATTERN, StrategyDefinition
from services.broker.types import ContractInfo, ContractSpec, SymbolMatch
from services.errors import InputError, Problem, TraderError
from services.repositories import contracts as cache

SessionOpener = Callable[[], AbstractContextManager[Session]]


class ContractSource(Protocol):
    """The part of a broker step 1 needs (``SyncBroker`` provides it)."""

    def qualify(self, spec: ContractSpec) -> ContractInfo: ...


@dataclass(frozen=True)
class Resolution:
    contract: ContractInfo
    cache_hit: bool
    fetched_at: dt.datetime


def spec_of(definition: StrategyDefinition) -> ContractSpec:
    return ContractSpec(
        symbol=definition.symbol,
        sec_type=definition.sec_type,
        exchange=definition.exchange,
        currency=definition.currency,
        conid=definition.conid,
        primary_exchange=definition.primary_exchange,
    )


def store(
    session: Session, contract: ContractInfo, *, now: dt.datetime | None = None, extra: dict[str, Any] | None = None
) -> None:
    """Cache ``contract``; ``extra`` keys (e.g. a search's derivative types) are kept beside its details."""
    cache.put(
        session,
        conid=contract.conid,
        symbol=contract.symbol,
        sec_type=str(contract.sec_type),
        currency=contract.currency,
        exchange=contract.exchange,
        primary_exchange=contract.primary_exchange,
        local_symbol=contract.local_symbol,
        details={**contract.to_json(), **(extra or {})},
        fetched_at=now,
    )


def resolve(
    open_session: SessionOpener,
    source: ContractSource,
    spec: ContractSpec,
    *,
    ttl: dt.timedelta,
    now: dt.datetime | None = None,
) -> Resolution:
    """Return the contract from the cache when fresh (a hit), else from the broker, stored (a miss).

    The broker is asked outside any DB transaction, so a slow broker never holds a database lock.
    """
    key: int | str = spec.conid if spec.conid is not None else spec.symbol
    with open_session() as session:
        row = cache.get(session, key, ttl, now=now)
        if row is not None:
            return Resolution(ContractInfo.from_json(row.details), True, row.fetched_at)
    contract = source.qualify(spec)
    with open_session() as session:
        store(session, contract, now=now)
    return Resolution(contract, False, now or dt.datetime.now(dt.UTC))


def refresh_all(
    open_session: SessionOpener, source: ContractSource, *, now: dt.datetime | None = None
) -> list[ContractInfo]:
    """Re-qualify every cached contract with the broker and store the fresh details."""
    from sqlalchemy import select

    from models.tables import Contract

    with open_session() as session:
        cached = [ContractInfo.from_json(row.details) for row in session.scalars(select(Contract)).all()]
    fresh = [source.qualify(contract.to_spec()) for contract in sorted(cached, key=lambda c: c.symbol)]
    with open_session() as session:
        for contract in fresh:
            store(session, contract, now=now)
    return fresh


# ---- trader symbols search / resolve ----

MAX_SEARCH_TEXT: Final = 64
MAX_BATCH: Final = 100  # symbols per resolve call; at IB's 50 messages/s a full batch takes about 2 s
_SYMBOL_RE: Final = re.compile(SYMBOL_PATTERN)


class SymbolSource(Protocol):
    """The broker calls the ``trader symbols`` commands need (``SyncBroker`` provides them)."""

    def matching_symbols(self, pattern: str) -> list[SymbolMatch]: ...

    def contract_details(self, spec: ContractSpec) -> list[ContractInfo]: ...


@dataclass(frozen=True)
class SearchResult:
    """IB's matches for a search, and the conids whose details are now in the cache."""

    matches: list[SymbolMatch]
    cached: frozenset[int]


def search(
    open_session: SessionOpener, source: SymbolSource, text: str, *, now: dt.datetime | None = None
) -> SearchResult:
    """Ask the broker for contracts matching ``text`` and cache the details of each one of a tradable type.

    A match the system cannot trade (an unsupported sec type) or whose details IB does not give is reported but
    not cached. The broker is asked outside any DB transaction.
    """
    pattern = " ".join(text.split())
    if not pattern or len(pattern) > MAX_SEARCH_TEXT:
        raise InputError("symbol search", f"text must be 1..{MAX_SEARCH_TEXT} characters, got {len(pattern)}")
    matches = source.matching_symbols(pattern)
    learned: list[tuple[SymbolMatch, ContractInfo]] = []
    for match in matches:
        if match.sec_type not in SecType.__members__:
            continue
        kind = SecType(match.sec_type)
        exchange = match.primary_exchange if kind is SecType.IND and match.primary_exchange else "SMART"
        spec = ContractSpec(match.symbol, kind, exchange=exchange, currency=match.currency, conid=match.conid)
        details = source.contract_details(spec)
        if len(details) == 1:
            learned.append((match, details[0]))
    with open_session() as session:
        for match, contract in learned:
            extra: dict[str, Any] = {"derivative_sec_types": list(match.derivative_sec_types)}
            if not contract.long_name and match.description:
                extra["long_name"] = match.description
            store(session, contract, now=now, extra=extra)
    return SearchResult(matches, frozenset(contract.conid for _, contract in learned))


class ResolveStatus(StrEnum):
    RESOLVED = "resolved"
    NOT_FOUND = "not found"
    AMBIGUOUS = "ambiguous"
    FAILED = "failed"  # the broker could not answer (connection, pacing): try again


@dataclass(frozen=True)
class SymbolResolution:
    """One symbol's outcome: its contract when resolved, the candidates when ambiguous, the error when failed."""

    symbol: str
    status: ResolveStatus
    contract: ContractInfo | None = None
    cache_hit: bool = False
    candidates: tuple[ContractInfo, ...] = ()
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is ResolveStatus.RESOLVED


def parse_symbols(symbols: Sequence[str]) -> list[str]:
    """Upper-case, de-duplicated (first occurrence kept) symbols; raise ``InputError`` listing every bad one."""
    problems: list[Problem] = []
    out: list[str] = []
    for i, raw in enumerate(symbols):
        symbol = raw.strip().upper()
        if not _SYMBOL_RE.match(symbol):
            problems.append(Problem(f"symbols[{i}]", f"{raw!r} is not a symbol (1-12 of A-Z, 0-9, '.')"))
        elif symbol not in out:
            out.append(symbol)
    if not symbols:
        problems.append(Problem("symbols", "give at least one symbol"))
    elif len(out) > MAX_BATCH:
        problems.append(Problem("symbols", f"at most {MAX_BATCH} per call, got {len(out)}"))
    if problems:
        raise InputError("symbols", problems)
    return out


def resolve_batch(
    open_session: SessionOpener,
    source: SymbolSource,
    symbols: Sequence[str],
    *,
    ttl: dt.timedelta,
    sec_type: SecType = SecType.STK,
    currency: str = "USD",
    exchange: str = "SMART",
    now: dt.datetime | None = None,
) -> list[SymbolResolution]:
    """Resolve each symbol (cache first, then one contract-details request), in order, one report per symbol.

    Requests go one at a time through the broker's message pacing; a broker failure marks that symbol FAILED
    and the batch goes on.
    """
    results: list[SymbolResolution] = []
    for symbol in parse_symbols(symbols):
        with open_session() as session:
            row = cache.get(session, symbol, ttl, sec_type=sec_type.value, currency=currency, now=now)
            if row is not None:
                results.append(
                    SymbolResolution(symbol, ResolveStatus.RESOLVED, ContractInfo.from_json(row.details), True)
                )
                continue
        spec = ContractSpec(symbol, sec_type, exchange=exchange, currency=currency)
        try:
            found = [c for c in source.contract_details(spec) if c.sec_type == sec_type]
        except TraderError as exc:
            results.append(SymbolResolution(symbol, ResolveStatus.FAILED, error=str(exc)))
            continue
        if len(found) == 1:
            with open_session() as session:
                store(session, found[0], now=now)
            results.append(SymbolResolution(symbol, ResolveStatus.RESOLVED, found[0]))
        elif found:
            results.append(SymbolResolution(symbol, ResolveStatus.AMBIGUOUS, candidates=tuple(found)))
        else:
            results.append(SymbolResolution(symbol, ResolveStatus.NOT_FOUND))
    return results
