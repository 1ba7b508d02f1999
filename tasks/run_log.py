"""The story of a strategy run: one INFO line per step with its key figures, on the Prefect run logger.

Inside a task run the line goes to ``prefect.get_run_logger()`` (shown on the flow run's page, stored by the
server); outside one (a step function called directly, e.g. by the parity script) to this module's logger. Lines
start with the step's name (``resolve:``, ``market data:``, ``indicators:``, ``chart:``, ``analysis:``,
``signal:``, ``order:``). Never put a secret or the account id in a line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

__all__ = ["figures", "step_log"]

_FALLBACK: Final = logging.getLogger(__name__)


def step_log(step: str, message: str) -> None:
    """Log ``"<step>: <message>"`` at INFO on the run logger (this module's logger outside a run)."""
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = _FALLBACK
    logger.info("%s: %s", step, message)


def figures(values: Iterable[tuple[str, float | None]], *, digits: int = 4) -> str:
    """``name value`` pairs (rounded to ``digits`` places), comma separated; ``None`` (warming up) is ``n/a``."""
    return ", ".join(f"{name} {'n/a' if v is None else round(v, digits)}" for name, v in values)
