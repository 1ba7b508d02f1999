"""Step 1: resolve a strategy's contract, through the DB cache (TTL) before asking the broker."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session

from models.strategy import StrategyDefinition
from services.broker.types import ContractInfo, ContractSpec
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


def store(session: Session, contract: ContractInfo, *, now: dt.datetime | None = None) -> None:
    cache.put(
        session,
        conid=contract.conid,
        symbol=contract.symbol,
        sec_type=str(contract.sec_type),
        currency=contract.currency,
        exchange=contract.exchange,
        primary_exchange=contract.primary_exchange,
        local_symbol=contract.local_symbol,
        details=contract.to_json(),
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
