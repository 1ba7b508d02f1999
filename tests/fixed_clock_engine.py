"""``python -m prefect.engine`` with the trader runtime's market clock fixed at ``$IBKR_TEST_MARKET_NOW``.

A test points a process worker's per-run ``command`` job variable here (see :func:`job_variables`), so a deployed
run decides at a chosen market time instead of the wall clock: the market gate and the signal rules then have one
definite answer. The variable is not ``TRADER_*`` because the settings reject unknown ``TRADER_*`` names.
"""

from __future__ import annotations

import os
import runpy
import sys
from datetime import datetime
from typing import Any

ENV = "IBKR_TEST_MARKET_NOW"


def job_variables(now: datetime) -> dict[str, Any]:
    """The process-worker job variables that run a flow run through this module at market time ``now``."""
    assert now.tzinfo is not None
    return {"command": f"{sys.executable} -m tests.fixed_clock_engine", "env": {ENV: now.isoformat()}}


def main() -> None:
    from services.runtime import Runtime, use_runtime
    from services.settings import load_settings

    now = datetime.fromisoformat(os.environ[ENV])
    runtime = Runtime(load_settings(), clock=lambda: now)
    try:
        with use_runtime(runtime):
            runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    finally:
        runtime.close()


if __name__ == "__main__":
    main()
