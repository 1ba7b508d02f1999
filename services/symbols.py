"""Step 1: resolve a strategy's contract, through the DB cache (TTL) before asking the broker."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session

from models.strategy import StrategyDefinition
from services.broker.types import ContractInfo, ContractSpec
from services.repositories import contracts as cache


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
    session: Session,
    source: ContractSource,
    spec: ContractSpec,
    *,
    ttl: dt.timedelta,
    now: dt.datetime | None = None,
) -> Resolution:
    """Return the contract from the cache when fresh (a hit), else from the broker, stored (a miss)."""
    key: int | str = spec.conid if spec.conid is not None else spec.symbol
    row = cache.get(session, key, ttl, now=now)
    if row is not None:
        return Resolution(ContractInfo.from_json(row.details), True, row.fetched_at)
    contract = source.qualify(spec)
    store(session, contract, now=now)
    fetched = now or dt.datetime.now(dt.UTC)
    return Resolution(contract, False, fetched)
