from decimal import Decimal

import pytest

from models.enums import OrderStatus
from services.broker import ib_errors as E
from services.broker.ib_errors import ErrorAction, classify, map_order_status, to_exception
from services.errors import (
    BrokerConnectionError,
    ContractNotFoundError,
    DataError,
    OrderRejectedError,
    PacingViolationError,
    StopError,
)


def test_tables_are_disjoint_where_they_must_be() -> None:
    assert E.CONNECTIVITY_LOST_CODES.isdisjoint(E.CONNECTIVITY_RESTORED_CODES)
    assert E.ORDER_REJECTION_CODES.isdisjoint(E.WARNING_CODES)
    assert E.DATA_LOST_ON_RESTORE <= E.CONNECTIVITY_RESTORED_CODES
    assert E.LINK_LOST_CODES <= E.CONNECTIVITY_LOST_CODES
    assert {1100, 1300, 2103, 2105, 2110, 2157} == E.CONNECTIVITY_LOST_CODES
    assert {1101, 1102, 2104, 2106, 2158} == E.CONNECTIVITY_RESTORED_CODES
    assert {201, 203, 103, 321, 10289, 10293} <= E.ORDER_REJECTION_CODES
    assert all(c in E.WARNING_CODES for c in range(2100, 2200))


@pytest.mark.parametrize(
    ("code", "message", "action"),
    [
        (162, "HMDS error message:API historical data query cancelled: 1", ErrorAction.SKIP),
        (162, "HMDS error message:Historical data request pacing violation", ErrorAction.RETRY),
        (420, "Invalid Real-time Query:pacing violation", ErrorAction.RETRY),
        (1100, "Connectivity between IB and TWS has been lost.", ErrorAction.RETRY),
        (2105, "HMDS data farm connection is broken:ushmds", ErrorAction.RETRY),
        (1102, "Connectivity restored - data maintained.", ErrorAction.INFO),
        (2104, "Market data farm connection is OK:usfarm", ErrorAction.INFO),
        (2107, "HMDS data farm connection is inactive but should be available upon demand.", ErrorAction.INFO),
        (10167, "Requested market data is not subscribed. Displaying delayed market data.", ErrorAction.INFO),
        (200, "No security definition has been found for the request", ErrorAction.SKIP),
        (201, "Order rejected - reason:insufficient funds", ErrorAction.SKIP),
        (326, "Unable to connect as the client id is already in use.", ErrorAction.STOP),
        (504, "Not connected", ErrorAction.RETRY),
        (99999, "something new", ErrorAction.SKIP),
    ],
)
def test_classify(code: int, message: str, action: ErrorAction) -> None:
    assert classify(code, message) is action


@pytest.mark.parametrize(
    ("code", "message", "order_ref", "exc_type"),
    [
        (162, "Historical data request pacing violation", None, PacingViolationError),
        (162, "HMDS query returned no data: SPY@SMART Trades", None, DataError),
        (1100, "Connectivity lost", None, BrokerConnectionError),
        (200, "No security definition has been found for the request", None, ContractNotFoundError),
        (201, "Order rejected - reason:margin", "ref-1", OrderRejectedError),
        (103, "Duplicate order id", None, OrderRejectedError),
        (326, "client id in use", None, StopError),
        (354, "Requested market data is not subscribed", None, DataError),
    ],
)
def test_to_exception(code: int, message: str, order_ref: str | None, exc_type: type) -> None:
    exc = to_exception(code, message, order_ref=order_ref)
    assert type(exc) is exc_type
    assert str(code) in str(exc)
    if isinstance(exc, OrderRejectedError):
        assert exc.code == code
        assert exc.order_ref == order_ref


@pytest.mark.parametrize(
    ("ib_status", "filled", "code", "ours"),
    [
        ("PendingSubmit", "0", None, OrderStatus.SUBMITTING),
        ("ApiPending", "0", None, OrderStatus.SUBMITTING),
        ("PreSubmitted", "0", None, OrderStatus.SUBMITTED),
        ("Submitted", "0", None, OrderStatus.SUBMITTED),
        ("Submitted", "40", None, OrderStatus.PARTIALLY_FILLED),
        ("PreSubmitted", "1", None, OrderStatus.PARTIALLY_FILLED),
        ("PendingCancel", "0", None, OrderStatus.CANCEL_PENDING),
        ("Cancelled", "0", None, OrderStatus.CANCELLED),
        ("Cancelled", "0", 202, OrderStatus.CANCELLED),
        ("Cancelled", "0", 201, OrderStatus.REJECTED),
        ("ApiCancelled", "0", None, OrderStatus.CANCELLED),
        ("Filled", "100", None, OrderStatus.FILLED),
        ("Inactive", "0", None, OrderStatus.INACTIVE),
        ("SomethingNew", "0", None, OrderStatus.SUBMITTING),
    ],
)
def test_map_order_status(ib_status: str, filled: str, code: int | None, ours: OrderStatus) -> None:
    assert map_order_status(ib_status, Decimal(filled), error_code=code) is ours
