"""A TWS-protocol simulator: a pure-stdlib asyncio server that the real ib_async client talks to.

See docs/simulator.md. Public API::

    from simulator import SimServer, SimConfig
    async with SimServer(SimConfig(port=0)) as sim:
        ...  # connect ib_async to 127.0.0.1:sim.port
"""

from simulator.config import SimConfig
from simulator.connection import SimStats
from simulator.pacing import ManualTime
from simulator.server import SimServer
from simulator.state import SimExecution, SimOrder, SimOrderStatus, SimPosition, SimState

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
