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

LEGAL = [
    (S.CREATED, S.SUBMITTING),
    (S.CREATED, S.RISK_REJECTED),
    (S.SUBMITTING, S.SUBMITTED),
    (S.SUBMITTING, S.CREATED),
    (S.SUBMITTING, S.FILLED),
    (S.SUBMITTED, S.CANCEL_PENDING),
    (S.SUBMITTED, S.EXPIRED),
    (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED),
    (S.CANCEL_PENDING, S.FILLED),
    (S.FILLED, S.ARCHIVED),
    (S.RISK_REJECTED, S.ARCHIVED),
]

ILLEGAL = [
    (S.CREATED, S.FILLED),
    (S.CREATED, S.SUBMITTED),
    (S.SUBMITTED, S.CREATED),
    (S.SUBMITTED, S.SUBMITTING),
    (S.PARTIALLY_FILLED, S.REJECTED),
    (S.CANCEL_PENDING, S.SUBMITTED),
    (S.FILLED, S.CANCELLED),
    (S.CANCELLED, S.FILLED),
    (S.ARCHIVED, S.CREATED),
    (S.SUBMITTED, S.ARCHIVED),
]


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
