"""A TWS-protocol simulator: a pure-stdlib asyncio server that the real ib_async client talks to.

See docs/simulator.md. Public API::

    from simulator import SimServer, SimConfig
    async with SimServer(SimConfig(port=0)) as sim:
        ...  # connect ib_async to 127.0.0.1:sim.port

The names below are imported on first use (PEP 562), so ``simulator.config`` stays cheap: the server, the
catalog and the bar loader need pandas, which ``trader sim start`` imports only after its port is bound.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.config import SimConfig
    from simulator.connection import SimStats
    from simulator.pacing import ManualTime
    from simulator.server import SimServer
    from simulator.state import SimExecution, SimOrder, SimOrderStatus, SimPosition, SimState

_HOMES = {
    "ManualTime": "simulator.pacing",
    "SimConfig": "simulator.config",
    "SimExecution": "simulator.state",
    "SimOrder": "simulator.state",
    "SimOrderStatus": "simulator.state",
    "SimPosition": "simulator.state",
    "SimServer": "simulator.server",
    "SimState": "simulator.state",
    "SimStats": "simulator.connection",
}

__all__ = [
    "ManualTime",
    "SimConfig",
    "SimExecution",
    "SimOrder",
    "SimOrderStatus",
    "SimPosition",
    "SimServer",
    "SimState",
    "SimStats",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'simulator' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value
