"""The composition root: the broker session ``Runtime`` builds from settings (no broker_factory) carries them."""

from __future__ import annotations

from pathlib import Path

from services.broker.ib_adapter import IBBroker
from services.runtime import Runtime
from services.settings import load_settings


def test_the_runtime_builds_the_ib_session_with_the_configured_historical_pacing(tmp_path: Path) -> None:
    settings = load_settings({"TRADER_DATA_DIR": str(tmp_path), "TRADER_IB__HIST_REQUESTS_PER_10MIN": "17"})
    built = Runtime(settings)._factory()()  # the factory the runtime connects through (not connected here)
    assert isinstance(built, IBBroker)
    assert built.hist_limiter.max_requests == 17
    assert (built.port, built.client_id) == (settings.ib.port, settings.ib.client_id)
