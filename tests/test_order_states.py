from __future__ import annotations

import itertools

import pytest

from models.enums import OrderStatus as S
from models.order_states import (
    ORDER_TRANSITIONS,
    TERMINAL,
    IllegalTransitionError,
    can_transition,
    is_terminal,
    transition,
)

# The whole lifecycle, written out pair by pair (the specification the table must equal): every pair listed is
# legal, every other pair of the 12 x 12 is illegal.
LEGAL = [
    # unsent: the send-time gate refuses it, it is sent, its signal expires, or it is cancelled (by hand, by halt)
    (S.CREATED, S.RISK_REJECTED),
    (S.CREATED, S.SUBMITTING),
    (S.CREATED, S.EXPIRED),
    (S.CREATED, S.CANCELLED),
    # sent, outcome unknown until the broker answers or reconciliation finds it
    (S.SUBMITTING, S.SUBMITTED),
    (S.SUBMITTING, S.REJECTED),
    (S.SUBMITTING, S.CANCELLED),
    (S.SUBMITTING, S.FILLED),
    (S.SUBMITTING, S.PARTIALLY_FILLED),
    (S.SUBMITTING, S.CREATED),  # certainly never reached IB
    (S.SUBMITTED, S.PARTIALLY_FILLED),
    (S.SUBMITTED, S.FILLED),
    (S.SUBMITTED, S.CANCEL_PENDING),
    (S.SUBMITTED, S.CANCELLED),
    (S.SUBMITTED, S.REJECTED),
    (S.SUBMITTED, S.INACTIVE),
    (S.SUBMITTED, S.EXPIRED),
    (S.SUBMITTED, S.CREATED),  # a bracket child the broker lost: re-attached by the retry flow
    (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED),  # another partial fill
    (S.PARTIALLY_FILLED, S.FILLED),
    (S.PARTIALLY_FILLED, S.CANCEL_PENDING),
    (S.PARTIALLY_FILLED, S.CANCELLED),
    (S.PARTIALLY_FILLED, S.EXPIRED),
    (S.CANCEL_PENDING, S.CANCELLED),
    (S.CANCEL_PENDING, S.FILLED),  # fills can arrive while a cancel is pending
    (S.CANCEL_PENDING, S.PARTIALLY_FILLED),
    (S.FILLED, S.ARCHIVED),
    (S.CANCELLED, S.ARCHIVED),
    (S.REJECTED, S.ARCHIVED),
    (S.RISK_REJECTED, S.ARCHIVED),
    (S.INACTIVE, S.ARCHIVED),
    (S.EXPIRED, S.ARCHIVED),
]
ILLEGAL = [pair for pair in itertools.product(S, S) if pair not in LEGAL]


def test_the_table_is_exactly_the_specification() -> None:
    assert len(LEGAL) == len(set(LEGAL)) == 32
    assert len(ILLEGAL) == len(S) ** 2 - 32
    table = {(a, b) for a, targets in ORDER_TRANSITIONS.items() for b in targets}
    assert table == set(LEGAL)


@pytest.mark.parametrize(("current", "target"), LEGAL)
def test_legal_transitions(current: S, target: S) -> None:
    assert transition(current, target) is target
    assert can_transition(current, target)


@pytest.mark.parametrize(("current", "target"), ILLEGAL)
def test_illegal_transitions_raise(current: S, target: S) -> None:
    with pytest.raises(IllegalTransitionError, match=f"{current.value} -> {target.value}"):
        transition(current, target)


def test_every_status_has_a_row_and_terminal_only_archives() -> None:
    assert set(ORDER_TRANSITIONS) == set(S)
    for status in TERMINAL:
        assert ORDER_TRANSITIONS[status] == {S.ARCHIVED}
        assert is_terminal(status)
    assert not ORDER_TRANSITIONS[S.ARCHIVED]


def test_no_path_leaves_a_terminal_state_except_archive() -> None:
    for current, target in itertools.product(TERMINAL, S):
        assert can_transition(current, target) == (target is S.ARCHIVED)


def test_strings_are_accepted_and_validated() -> None:
    assert transition("created", "submitting") is S.SUBMITTING
    with pytest.raises(ValueError):
        transition("created", "bogus")
