"""Two transactions creating the same contract-cache / position row at once: both succeed, one row results.

Before the insert-if-absent fix, the second transaction failed on uq_contracts_conid / uq_positions_conid when two
runs of one symbol started together (found by the two-worker rate-limit test).
"""

import sqlite3
import threading
import time
from decimal import Decimal

from sqlalchemy import event, func, make_url, select, text

from models.tables import Contract, Position
from services.db import make_engine, session_scope
from services.repositories import contracts, positions


def _second_is_blocked(db_url: str) -> bool:
    """True when the second transaction is waiting on the first's uncommitted row (PostgreSQL: a backend of this
    test's own database waits on a lock) or cannot get the write lock the first holds (SQLite)."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        probe = sqlite3.connect(url.database or "", timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            return "locked" in str(exc)
        else:
            probe.execute("ROLLBACK")
            return False
        finally:
            probe.close()
    with make_engine(db_url).connect() as conn:
        waiting = conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
        )
    return bool(waiting)


def _race(db_url, write) -> tuple[list[BaseException], bool]:
    """Run ``write`` in two transactions that really overlap: the first writes and holds its transaction open
    until the second has issued its own statements and is blocked by the first (a condition with a deadline, no
    sleep); only then does the first commit. Returns the errors and whether that overlap was observed."""
    errors: list[BaseException] = []
    first_wrote = threading.Event()
    second_started = threading.Event()
    second_done = threading.Event()
    overlapped: list[bool] = []
    engine = make_engine(db_url)
    second_thread: list[threading.Thread] = []

    def mark_second(*_args: object) -> None:
        if threading.current_thread() is second_thread[0]:
            second_started.set()

    def first() -> None:
        try:
            with session_scope(db_url) as session:
                write(session, "first")
                first_wrote.set()
                deadline = time.monotonic() + 20
                while not (second_started.is_set() and _second_is_blocked(db_url)):
                    if time.monotonic() > deadline:
                        raise AssertionError("the second transaction never waited on the first")
                    time.sleep(0.01)
                overlapped.append(not second_done.is_set())
        except BaseException as exc:
            errors.append(exc)
            first_wrote.set()

    def second() -> None:
        first_wrote.wait(20)
        try:
            with session_scope(db_url) as session:
                write(session, "second")
        except BaseException as exc:
            errors.append(exc)
        finally:
            second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    second_thread.append(threads[1])
    event.listen(engine, "before_cursor_execute", mark_second)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        event.remove(engine, "before_cursor_execute", mark_second)
    return errors, overlapped == [True]


def test_concurrent_contract_put(db_url):
    def write(session, who):
        contracts.put(session, conid=756733, symbol="SPY", sec_type="STK", currency="USD", details={"by": who})

    errors, overlapped = _race(db_url, write)
    assert errors == [] and overlapped
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count()).select_from(Contract)) == 1
        assert contracts.peek(session, 756733).details == {"by": "second"}


def test_concurrent_position_upsert(db_url):
    def write(session, who):
        quantity = Decimal(10) if who == "first" else Decimal(20)
        positions.upsert(
            session,
            conid=756733,
            symbol="SPY",
            quantity=quantity,
            avg_cost=Decimal("266.5"),
            realized_pnl=Decimal(0),
            commissions=Decimal(1),
        )

    errors, overlapped = _race(db_url, write)
    assert errors == [] and overlapped
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count()).select_from(Position)) == 1
        assert positions.get(session, 756733).quantity == Decimal(20)
