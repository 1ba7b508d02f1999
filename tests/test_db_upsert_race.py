"""Two transactions creating the same contract-cache / position row at once: both succeed, one row results.

Before the insert-if-absent fix, the second transaction failed on uq_contracts_conid / uq_positions_conid when two
runs of one symbol started together (found by the two-worker rate-limit test).
"""

import threading
import time
from decimal import Decimal

from sqlalchemy import func, select

from models.tables import Contract, Position
from services.db import session_scope
from services.repositories import contracts, positions


def _race(db_url, write) -> list[BaseException]:
    errors: list[BaseException] = []
    first_wrote = threading.Event()

    def first() -> None:
        try:
            with session_scope(db_url) as session:
                write(session, "first")
                first_wrote.set()
                time.sleep(0.5)  # hold the uncommitted row while the second transaction tries
        except BaseException as exc:
            errors.append(exc)
            first_wrote.set()

    def second() -> None:
        first_wrote.wait(10)
        try:
            with session_scope(db_url) as session:
                write(session, "second")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors


def test_concurrent_contract_put(db_url):
    def write(session, who):
        contracts.put(session, conid=756733, symbol="SPY", sec_type="STK", currency="USD", details={"by": who})

    assert _race(db_url, write) == []
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

    assert _race(db_url, write) == []
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count()).select_from(Position)) == 1
        assert positions.get(session, 756733).quantity == Decimal(20)
