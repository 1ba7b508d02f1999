"""IB error-code tables, their classification by action, and IB order status -> our ``OrderStatus``.

Pure data and functions (no ib_async import), in the NautilusTrader style (``client/error.py``). Sources:
tws-api/message_codes.html and docs/tws-protocol.md §3.2, §3.5, §3.6.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Final

from models.enums import OrderStatus
from services.errors import (
    BrokerConnectionError,
    ContractNotFoundError,
    DataError,
    OrderRejectedError,
    PacingViolationError,
    StopError,
    TraderError,
)


class ErrorAction(StrEnum):
    """What the caller should do with an IB error code."""

    RETRY = "retry"  # transient: back off and try again
    SKIP = "skip"  # this request/order failed: record and go on
    STOP = "stop"  # needs a human
    INFO = "info"  # notice or warning, nothing failed


# 2100-2199 are informational/warning notices (farm status, account-update notes); ib_async logs them as info.
INFO_RANGE: Final[range] = range(2100, 2200)

WARNING_CODES: Final[frozenset[int]] = frozenset(
    {
        105,  # order being modified does not match the original order
        110,  # price does not conform to min tick (fatal only for a new order; the adapter handles that)
        165,  # historical market data service query message
        329,  # order modify failed: cannot change to the new order type
        399,  # order message (e.g. "will not be placed until market opens")
        404,  # shares not immediately available for short sale; order held
        434,  # order size cannot be zero (modify)
        492,
        10167,  # not subscribed, displaying delayed market data
        *INFO_RANGE,
    }
)

CONNECTIVITY_LOST_CODES: Final[frozenset[int]] = frozenset(
    {
        1100,  # TWS <-> IB connectivity lost
        1300,  # socket port changed, this connection is dropped
        2103,  # market data farm connection broken
        2105,  # HMDS (historical) farm connection broken
        2110,  # TWS <-> server connectivity broken, restored automatically
        2157,  # sec-def farm connection broken
    }
)

CONNECTIVITY_RESTORED_CODES: Final[frozenset[int]] = frozenset(
    {
        1101,  # restored, data lost: re-subscribe
        1102,  # restored, data maintained
        2104,  # market data farm OK
        2106,  # HMDS farm OK
        2158,  # sec-def farm OK
    }
)

# Codes that change the TWS <-> IB link state (the socket stays up); farm notices do not.
LINK_LOST_CODES: Final[frozenset[int]] = frozenset({1100})
LINK_RESTORED_CODES: Final[frozenset[int]] = frozenset({1101, 1102})
DATA_LOST_ON_RESTORE: Final[frozenset[int]] = frozenset({1101})

ORDER_REJECTION_CODES: Final[frozenset[int]] = frozenset(
    {
        103,  # duplicate order id
        104,  # cannot modify a filled order
        109,  # price out of range
        116,  # order handling: exchange closed / not supported
        135,  # cannot find order with that id
        201,  # order rejected - reason: ...
        203,  # security not available / allowed for this account
        321,  # error validating request (on a new order)
        382,  # order size exceeds the limit
        383,  # order size exceeds the total size limit
        387,  # unsupported order type for this exchange and security type
        388,  # order size below the minimum
        10289,  # order rejected: prices/size invalid (precautionary settings)
        10293,  # order rejected: outside the precautionary limits
    }
)
ORDER_CANCELLED_CODES: Final[frozenset[int]] = frozenset({202})  # "Order Canceled - reason: ..."
CANCEL_FAILED_CODES: Final[frozenset[int]] = frozenset({161, 10147, 10148})  # not cancellable / not found

HISTORICAL_DATA_ERROR: Final = 162  # pacing violation, no data, or query cancelled: the text decides
PACING_CODES: Final[frozenset[int]] = frozenset(
    {
        100,  # max rate of messages per second exceeded
        420,  # invalid real-time query: pacing violation
    }
)
NOT_FOUND_CODES: Final[frozenset[int]] = frozenset({200})  # no security definition / ambiguous contract
MARKET_DATA_NOT_SUBSCRIBED_CODES: Final[frozenset[int]] = frozenset({354, 10089, 10090, 10168, 10197})
CLIENT_CONNECTION_CODES: Final[frozenset[int]] = frozenset({502, 504, 507})  # couldn't connect / not connected
STOP_CODES: Final[frozenset[int]] = frozenset(
    {
        326,  # clientId already in use: a second writer with our fixed id is a setup fault
        503,  # TWS out of date
        10141,  # paper-trading disclaimer must be accepted in TWS
    }
)


def is_pacing_violation(code: int, message: str) -> bool:
    """Return True when the error is a pacing violation (162 only when its text says so)."""
    if code in PACING_CODES:
        return True
    return code == HISTORICAL_DATA_ERROR and "pacing" in message.lower()


def classify(code: int, message: str) -> ErrorAction:
    """Return what to do about IB error ``code`` with text ``message``."""
    if is_pacing_violation(code, message):
        return ErrorAction.RETRY
    if code in CONNECTIVITY_LOST_CODES or code in CLIENT_CONNECTION_CODES:
        return ErrorAction.RETRY
    if code in CONNECTIVITY_RESTORED_CODES or code in WARNING_CODES:
        return ErrorAction.INFO
    if code in STOP_CODES:
        return ErrorAction.STOP
    return ErrorAction.SKIP


def to_exception(code: int, message: str, *, order_ref: str | None = None) -> TraderError:
    """Map an IB error to our exception tree; ``order_ref`` marks an error about one of our orders."""
    text = f"IB error {code}: {message}"
    if is_pacing_violation(code, message):
        return PacingViolationError(text)
    if code in CONNECTIVITY_LOST_CODES or code in CLIENT_CONNECTION_CODES:
        return BrokerConnectionError(text)
    if code in STOP_CODES:
        return StopError(text)
    if code in NOT_FOUND_CODES:
        return ContractNotFoundError(text)
    if order_ref is not None or code in ORDER_REJECTION_CODES or code in ORDER_CANCELLED_CODES:
        return OrderRejectedError(text, code=code, order_ref=order_ref)
    return DataError(text)


# IB order status strings (ib_async ``OrderStatus``) -> our lifecycle. PreSubmitted/Submitted depend on ``filled``.
_IB_STATUS: Final[dict[str, OrderStatus]] = {
    "ApiPending": OrderStatus.SUBMITTING,
    "PendingSubmit": OrderStatus.SUBMITTING,
    "PreSubmitted": OrderStatus.SUBMITTED,
    "Submitted": OrderStatus.SUBMITTED,
    "ValidationError": OrderStatus.SUBMITTED,  # ib_async-only: a warning arrived, the order is still live
    "PendingCancel": OrderStatus.CANCEL_PENDING,
    "ApiCancelled": OrderStatus.CANCELLED,
    "Cancelled": OrderStatus.CANCELLED,
    "Filled": OrderStatus.FILLED,
    "Inactive": OrderStatus.INACTIVE,
}
IB_WORKING_STATUSES: Final[frozenset[str]] = frozenset({"PreSubmitted", "Submitted", "ValidationError"})
IB_DONE_STATUSES: Final[frozenset[str]] = frozenset({"ApiCancelled", "Cancelled", "Filled", "Inactive"})


def map_order_status(ib_status: str, filled: Decimal = Decimal(0), *, error_code: int | None = None) -> OrderStatus:
    """Map IB's status string to our ``OrderStatus``.

    ``Submitted``/``PreSubmitted`` with ``filled > 0`` is a partial fill (IB has no separate status for it). A
    ``Cancelled`` order whose last error is a rejection code is ``REJECTED``. Unknown strings map to
    ``SUBMITTING``: the outcome is unknown until reconciled.
    """
    status = _IB_STATUS.get(ib_status, OrderStatus.SUBMITTING)
    if status is OrderStatus.SUBMITTED and filled > 0:
        return OrderStatus.PARTIALLY_FILLED
    if status is OrderStatus.CANCELLED and error_code is not None and error_code in ORDER_REJECTION_CODES:
        return OrderStatus.REJECTED
    return status
