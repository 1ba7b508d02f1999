"""The broker layer: our types, the broker port, the ib_async adapter and an in-memory broker."""

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
    "OrderRequest",
    "Quote",
]
