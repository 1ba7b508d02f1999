"""Retry policy shared by the I/O tasks: retry only what our exception tree calls retryable."""

from __future__ import annotations

from typing import Any

from services.errors import RetryableError

IO_RETRIES = 2
IO_RETRY_DELAYS = [2.0, 10.0]


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a task only when it failed with a ``RetryableError``."""
    try:
        state.result()
    except RetryableError:
        return True
    except Exception:
        return False
    return False
