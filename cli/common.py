"""Shared CLI plumbing: settings, the DB session, and one place that turns errors into exit codes.

Exit codes: 0 success, 1 an operation failed (broker down, run failed), 2 bad input (file, option, setting).
No command prints a traceback for an expected error.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import typer
from rich.console import Console

from services.errors import InputError, StopError, TraderError

if TYPE_CHECKING:  # the CLI imports the data stack only in the command that runs (``trader --help`` stays fast)
    from sqlalchemy.orm import Session

    from services.broker.loop_owner import SyncBroker
    from services.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_FAILED = 1
EXIT_INPUT = 2


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise."""
    err_console.print(message, markup=False)
    return typer.Exit(code)


def cli_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Map our exception tree to exit codes and one-line messages (InputError may list several problems)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            raise fail(f"error: {exc.summary()}", EXIT_INPUT) from None
        except StopError as exc:
            raise fail(f"stopped: {exc}", EXIT_FAILED) from None
        except TraderError as exc:
            raise fail(f"error: {exc}", EXIT_FAILED) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper


@functools.cache
def settings() -> Settings:
    """Settings for this CLI process (read once, on first use; bad settings exit 2)."""
    from services.settings import load_settings

    try:
        return load_settings()
    except InputError as exc:
        err_console.print(f"error: {exc.summary()}", markup=False)
        sys.exit(EXIT_INPUT)


def ensure_schema() -> None:
    """Create or upgrade the configured database's schema (cheap when already current)."""
    from services.db import init_database

    init_database(settings())


@contextmanager
def db_session() -> Iterator[Session]:
    """A unit of work on the configured database, schema upgraded on first use."""
    from services.db import session_scope

    ensure_schema()
    with session_scope(settings().database_url()) as session:
        yield session


def one_shot_broker() -> SyncBroker:
    """A broker session for one command: connects once without retries or reconnects (caller connects and closes)."""
    from services.broker.ib_adapter import IBBroker
    from services.broker.loop_owner import SyncBroker
    from services.broker.pacing import Backoff

    ib = settings().ib
    return SyncBroker(lambda: IBBroker.from_settings(ib, reconnect=Backoff(attempts=0), auto_reconnect=False))
