"""The broker layer: our types, the broker port, the ib_async adapter and an in-memory broker.

``IBBroker`` lives in :mod:`services.broker.ib_adapter` (the only ib_async importer) and is not re-exported here,
so importing the package never imports ib_async.
"""

from services.broker.loop_owner import LoopOwner, SyncBroker
from services.broker.memory import MemoryBroker
from services.broker.port import BrokerPort
from services.broker.types import (
    AccountValues,
    BarRequest,
    BrokerOrder,
    BrokerPosition,
    Connectivity,
    ContractInfo,
    ContractSpec,
    Execution,
    OrderRequest,
    Quote,
)

__all__ = [
    "AccountValues",
    "BarRequest",
    "BrokerOrder",
    "BrokerPort",
    "BrokerPosition",
    "Connectivity",
    "ContractInfo",
    "ContractSpec",
    "Execution",
    "LoopOwner",
    "MemoryBroker",
    "OrderRequest",
    "Quote",
    "SyncBroker",
]
