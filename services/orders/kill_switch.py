"""The kill switch: engage (halt) and release, with a history; what the CLI, the ``kill-switch`` flow and the
send path share.

Engaging holds the send lock exclusively (:mod:`services.orders.send_lock`): every send whose gate passed before
has reached the broker, and every later send reads the engaged switch. In the same transaction every unsent order
(``created``, including those waiting for a retry) ends ``cancelled`` with the halt's reason, so nothing queued
before the halt can go out after a release; except a protective order the broker lost and the retry flow is to
re-attach (:func:`services.orders.monitor.mark_lost`): like the working stops and targets, it stays with its
position, refused by the gate while halted, and is re-attached after the release. Working orders are cancelled at
the broker with ``--cancel-all`` (:func:`services.orders.monitor.cancel_all`), and that one with them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from models.enums import OrderStatus
from services.db import session_scope
from services.errors import InputError, Problem
from services.events import EventKind, Resource, TraderEvent, publish
from services.orders.send_lock import send_lock
from services.repositories import orders as orders_repo
from services.repositories import trading_state

KILL_SWITCH = Resource("trader.kill-switch", "kill switch")


@dataclass(frozen=True)
class HaltResult:
    reason: str
    at: dt.datetime
    ended: tuple[str, ...]  # keys of the unsent orders ended by this halt
    kept: tuple[str, ...] = ()  # protective orders to re-attach, kept (see engage)


def engage(db_url: str, reason: str, *, changed_by: str, now: dt.datetime | None = None) -> HaltResult:
    """Engage the kill switch and end every unsent order but the protective ones to re-attach; return what was
    ended and what was kept."""
    if not reason or not reason.strip():
        raise InputError("kill switch", [Problem("reason", "engaging the kill switch needs a reason")])
    with send_lock(db_url, exclusive=True), session_scope(db_url) as session:
        # the time is taken once the lock is held: every send that reached the broker before it had passed its
        # gate earlier, and none can arrive after it until the release
        at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        ended: list[str] = []
        kept: list[str] = []
        for row in orders_repo.unsent(session):
            if row.parent_id is not None and orders_repo.reattaching(session, row):
                # a protective order the broker lost, of a position that stays: the halt does not strip the
                # position of its protection (working ones stay at the broker too); the gate refuses it until the
                # release, then it is re-attached. --cancel-all ends it with the working orders.
                orders_repo.note(session, row, f"halt: {reason}: kept unsent, re-attached after the release")
                kept.append(row.idempotency_key)
                continue
            orders_repo.set_status(session, row, OrderStatus.CANCELLED, f"halt: {reason} (never sent)")
            ended.append(row.idempotency_key)
        trading_state.set_kill_switch(session, True, reason, changed_by=changed_by, now=at, ended_orders=len(ended))
        told = f"kill switch engaged by {changed_by}: {reason} ({len(ended)} unsent orders ended)"
        publish(_switch_event(EventKind.KILL_SWITCH_ENGAGED, told, changed_by, reason, at), session=session)
    return HaltResult(reason, at, tuple(ended), tuple(kept))


def release(db_url: str, *, changed_by: str, reason: str | None = None, now: dt.datetime | None = None) -> None:
    """Release the kill switch (recorded in the history with who and, optionally, why)."""
    with send_lock(db_url, exclusive=True), session_scope(db_url) as session:
        at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        trading_state.set_kill_switch(session, False, reason, changed_by=changed_by, now=at)
        told = f"kill switch released by {changed_by}" + (f": {reason}" if reason else "")
        publish(_switch_event(EventKind.KILL_SWITCH_RELEASED, told, changed_by, reason, at), session=session)


def _switch_event(kind: EventKind, told: str, by: str, reason: str | None, at: dt.datetime) -> TraderEvent:
    payload = {"changed_by": by, "reason": reason, "at": at.isoformat()}
    return TraderEvent(kind, KILL_SWITCH, told, payload)


@dataclass(frozen=True)
class HistoryRow:
    at: dt.datetime
    engaged: bool
    reason: str | None
    changed_by: str | None
    ended_orders: int


def history(db_url: str, *, limit: int = 50) -> list[HistoryRow]:
    """The kill switch's engage/release history, newest first."""
    with session_scope(db_url) as session:
        return [
            HistoryRow(e.at, e.engaged, e.reason, e.changed_by, e.ended_orders)
            for e in trading_state.kill_switch_history(session, limit=limit)
        ]
