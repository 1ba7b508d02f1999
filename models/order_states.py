"""The order lifecycle as an explicit transition table (NautilusTrader style).

``ORDER_TRANSITIONS[current]`` is the set of statuses an order in ``current`` may move to. Everything else is
illegal and :func:`transition` raises :class:`IllegalTransitionError`. Staying in ``partially_filled`` is a legal
self-transition (another partial fill); other self-transitions are no-ops the caller should skip.
"""

from __future__ import annotations

from typing import Final

from models.enums import OrderStatus as S

TERMINAL: Final[frozenset[S]] = frozenset({S.FILLED, S.CANCELLED, S.REJECTED, S.RISK_REJECTED, S.INACTIVE, S.EXPIRED})

# Statuses whose order may still be (or become) working at the broker.
ACTIVE: Final[frozenset[S]] = frozenset({S.SUBMITTING, S.SUBMITTED, S.PARTIALLY_FILLED, S.CANCEL_PENDING})

# Statuses of an order the broker has accepted and is working now (what a cancel request can act on).
WORKING: Final[frozenset[S]] = frozenset({S.SUBMITTED, S.PARTIALLY_FILLED})

ORDER_TRANSITIONS: Final[dict[S, frozenset[S]]] = {
    # an unsent order: the send-time gate refuses it, its signal expires, or it is cancelled (by hand, by halt)
    S.CREATED: frozenset({S.RISK_REJECTED, S.SUBMITTING, S.EXPIRED, S.CANCELLED}),
    S.SUBMITTING: frozenset(
        {
            S.SUBMITTED,
            S.REJECTED,
            S.CANCELLED,
            S.FILLED,
            S.PARTIALLY_FILLED,
            # only when the order certainly never reached IB (connection refused before sending, or not found
            # at the broker after a reconnect and startup sync)
            S.CREATED,
        }
    ),
    S.SUBMITTED: frozenset(
        {
            S.PARTIALLY_FILLED,
            S.FILLED,
            S.CANCEL_PENDING,
            S.CANCELLED,
            S.REJECTED,
            S.INACTIVE,
            S.EXPIRED,
            # only a bracket child the broker no longer knows (not among its open or completed orders, not found
            # by orderRef or permId) while its entry holds or works: the retry flow re-attaches it through send()
            S.CREATED,
        }
    ),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELLED, S.EXPIRED}),
    # fills can still arrive while a cancel is pending (tws-protocol.md §3.2)
    S.CANCEL_PENDING: frozenset({S.CANCELLED, S.FILLED, S.PARTIALLY_FILLED}),
    **{status: frozenset({S.ARCHIVED}) for status in TERMINAL},
    S.ARCHIVED: frozenset(),
}


class IllegalTransitionError(ValueError):
    """An order status change that the lifecycle does not allow."""

    def __init__(self, current: S, target: S):
        super().__init__(f"illegal order transition {current.value} -> {target.value}")
        self.current = current
        self.target = target


def can_transition(current: S, target: S) -> bool:
    """Return whether ``current -> target`` is in the table."""
    return target in ORDER_TRANSITIONS[current]


def transition(current: S | str, target: S | str) -> S:
    """Return ``target`` when ``current -> target`` is legal; raise :class:`IllegalTransitionError` otherwise."""
    cur, tgt = S(current), S(target)
    if tgt not in ORDER_TRANSITIONS[cur]:
        raise IllegalTransitionError(cur, tgt)
    return tgt


def is_terminal(status: S) -> bool:
    return status in TERMINAL
