"""Injected failures: one-shot request errors and the knobs tests flip on the server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

# Index of the request id in each client message that carries one (client.py field layouts).
REQ_ID_INDEX: Final[dict[int, int]] = {1: 2, 3: 1, 4: 2, 7: 2, 9: 2, 20: 1, 25: 2, 62: 2, 76: 2}


def request_id(fields: list[str]) -> int | None:
    """Return the request (or order) id of a client message, if it has one."""
    try:
        index = REQ_ID_INDEX[int(fields[0])]
        return int(fields[index])
    except (KeyError, IndexError, ValueError):
        return None


@dataclass
class FailRule:
    """Answer the next matching request with error ``code`` instead of its normal reply."""

    code: int
    message: str
    req_id: int | None = None
    msg_type: int | None = None

    def matches(self, msg_type: int, req_id: int | None) -> bool:
        if self.msg_type is not None and self.msg_type != msg_type:
            return False
        return self.req_id is None or self.req_id == req_id


@dataclass
class Faults:
    rules: list[FailRule] = field(default_factory=list)

    def take(self, msg_type: int, req_id: int | None) -> FailRule | None:
        for i, rule in enumerate(self.rules):
            if rule.matches(msg_type, req_id):
                return self.rules.pop(i)
        return None
