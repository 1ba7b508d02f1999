"""The send lock: a shared/exclusive lock across processes that orders every send against every halt.

Each send of an order to a broker holds the lock *shared* from its risk-gate decision until the broker call has
returned; whatever changes what the gate judges in a way that must stop sends at once (engaging the kill switch,
deactivating or deleting a strategy) holds it *exclusive* while it commits. So a send whose gate passed has
reached the broker before the halt commits, and no send that starts after the halt commits can pass the gate.

* PostgreSQL: a session-level advisory lock (``pg_advisory_lock_shared`` / ``pg_advisory_lock``) on a dedicated
  connection; the server releases it when the connection dies (a killed process never leaves it held).
* SQLite: ``flock`` on ``<database file>.sendlock`` (the kernel releases it when the process dies); an in-memory
  database uses a process-local lock.

Always take the send lock *before* opening a database transaction (SQLite serializes writers: taking it inside a
write transaction could deadlock with a sender that holds it and waits for the write lock).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from sqlalchemy import make_url, text

from services.db import make_engine
from services.errors import StopError

SEND_LOCK_KEY: Final = 0x7472_6164_5345  # advisory lock id ("tradSE")
DEFAULT_WAIT_S: Final = 60.0
_POLL_S: Final = 0.005


class _ProcessRWLock:
    """A shared/exclusive lock within one process (in-memory SQLite); writers are preferred."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire(self, exclusive: bool, deadline: float) -> bool:
        with self._cond:
            if exclusive:
                self._writers_waiting += 1
            try:
                while self._writer or (self._readers if exclusive else self._writers_waiting):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                if exclusive:
                    self._writer = True
                else:
                    self._readers += 1
                return True
            finally:
                if exclusive:
                    self._writers_waiting -= 1

    def release(self, exclusive: bool) -> None:
        with self._cond:
            if exclusive:
                self._writer = False
            else:
                self._readers -= 1
            self._cond.notify_all()


_memory_locks: dict[str, _ProcessRWLock] = {}
_memory_guard = threading.Lock()


def _timeout(what: str, wait_s: float) -> StopError:
    return StopError(f"send lock ({what}) not acquired within {wait_s:.0f} s: another send or halt holds it")


@contextmanager
def send_lock(db_url: str, *, exclusive: bool = False, wait_s: float = DEFAULT_WAIT_S) -> Iterator[None]:
    """Hold the send lock of ``db_url``'s database: shared for a send, exclusive for a halt / deactivation."""
    url = make_url(db_url)
    deadline = time.monotonic() + wait_s
    what = "exclusive" if exclusive else "shared"
    if url.get_backend_name() == "postgresql":
        with make_engine(url).connect() as conn:
            fn = "pg_try_advisory_lock" if exclusive else "pg_try_advisory_lock_shared"
            while not conn.execute(text(f"SELECT {fn}(:k)"), {"k": SEND_LOCK_KEY}).scalar():
                conn.commit()
                if time.monotonic() >= deadline:
                    raise _timeout(what, wait_s)
                time.sleep(_POLL_S)
            conn.commit()
            try:
                yield
            finally:
                unlock = "pg_advisory_unlock" if exclusive else "pg_advisory_unlock_shared"
                conn.execute(text(f"SELECT {unlock}(:k)"), {"k": SEND_LOCK_KEY})
                conn.commit()
        return
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        key = url.render_as_string(hide_password=False)
        with _memory_guard:
            lock = _memory_locks.setdefault(key, _ProcessRWLock())
        if not lock.acquire(exclusive, deadline):
            raise _timeout(what, wait_s)
        try:
            yield
        finally:
            lock.release(exclusive)
        return
    fd = os.open(f"{database}.sendlock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _timeout(what, wait_s) from None
                time.sleep(_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
