"""Waiting on a condition with a deadline (never a fixed sleep): the one synchronous helper the tests share."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(check: Callable[[], bool], timeout_s: float = 20.0, poll_s: float = 0.01) -> None:
    """Poll ``check`` until it returns True; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(poll_s)
