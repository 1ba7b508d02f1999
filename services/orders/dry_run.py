"""Dry run: protective orders that outlive the run that placed them.

A dry-run entry fills in its run's in-memory broker, and its take-profit and stop are stored as working orders,
but that broker is gone when the run ends. Each later dry-run order step works them again: a fresh in-memory
broker over this run's bars (the same market model as the simulator and the replay) receives them at the time
their entry filled, one OCA group per entry, and its clock is advanced to now. What fills is recorded as fills
(positions follow), the other side of the group ends cancelled, and what is still untouched stays working.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from models.enums import OrderStatus
from models.order_states import WORKING
from services.broker.loop_owner import SyncBroker
from services.broker.memory import MemoryBroker
from services.broker.types import ContractInfo
from services.db import session_scope
from services.orders.monitor import record_dry_run_fills
from services.orders.submit import apply_broker_order, order_request
from services.repositories import fills as fills_repo
from services.repositories import orders as orders_repo


@dataclass(frozen=True)
class ProtectionOutcome:
    key: str
    before: OrderStatus
    after: OrderStatus


def work_protection(
    db_url: str, memory: MemoryBroker, contract: ContractInfo, strategy_name: str, now: dt.datetime
) -> list[ProtectionOutcome]:
    """Work ``strategy_name``'s working dry-run protective orders of ``contract`` in ``memory`` (a fresh
    in-memory broker holding this run's bars) from their entry's fill to ``now``; return what changed."""
    with session_scope(db_url) as session:
        rows = [
            o
            for o in orders_repo.protective(session, contract.symbol, strategy_name)
            if o.status in WORKING and orders_repo.is_dry_run(o) and o.parent_id is not None
        ]
        entries = {o.parent_id for o in rows if o.parent_id is not None}
        filled_at: dict[int, dt.datetime] = {}
        for fill in fills_repo.for_orders(session, sorted(entries)):
            if fill.order_id is not None:
                filled_at[fill.order_id] = max(filled_at.get(fill.order_id, fill.executed_at), fill.executed_at)
        keys = {i: e.idempotency_key for i in entries if (e := orders_repo.get(session, i)) is not None}
        pending = sorted(
            (
                (filled_at[o.parent_id], o.id, o.status, keys[o.parent_id], o)
                for o in rows
                if o.parent_id in filled_at and filled_at[o.parent_id] <= now
            ),
            key=lambda item: (item[0], item[1]),
        )
        requests = [
            (at, order_id, status, replace(order_request(o, oca_group=group), quantity=o.quantity - o.filled_quantity))
            for at, order_id, status, group, o in pending
        ]
    if not requests:
        return []
    broker = SyncBroker(lambda: memory)
    broker.connect()
    try:
        for at, _id, _status, request in requests:  # each entry's pair from the moment it was protected
            memory.clock.set(max(at, memory.clock.now))
            broker.place_order(contract, request)
        memory.clock.advance_to(now)
        outcomes = []
        for _at, order_id, before, request in requests:
            seen = broker.find_order(request.order_ref)
            with session_scope(db_url) as session:
                row = orders_repo.get(session, order_id)
                assert row is not None
                if seen is not None and row.status in WORKING:
                    apply_broker_order(session, row, seen, "dry run: worked against the bars since its entry filled")
                after = row.status
            record_dry_run_fills(db_url, order_id, request.order_ref, broker.executions())
            if after is not before:
                outcomes.append(ProtectionOutcome(request.order_ref, before, after))
        return outcomes
    finally:
        broker.close()
