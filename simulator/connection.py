"""Per-connection state of the server, and its counters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from simulator import history
from simulator import messages as m
from simulator.catalog import Instrument
from simulator.wire import encode


@dataclass
class SimStats:
    hist_requests: int = 0
    pacing_violations: int = 0
    orders_placed: int = 0
    connections: int = 0
    messages_received: int = 0


@dataclass
class BarStream:
    """A keepUpToDate historical request: re-served on every clock advance."""

    inst: Instrument
    request: history.HistoryRequest
    last_date: str


class Connection:
    """One client socket after the handshake."""

    def __init__(self, writer: asyncio.StreamWriter, version: int) -> None:
        self.writer = writer
        self.version = version
        self.client_id: int | None = None
        self.closed = False
        self.positions_sub = False
        self.account_sub: str | None = None
        self.market_data_type = 1
        self.streams: dict[int, int] = {}  # reqId -> conId of streaming market data
        self.bar_streams: dict[int, BarStream] = {}  # keepUpToDate requests

    def send(self, fields: m.Fields) -> None:
        if self.closed or self.writer.is_closing():
            return
        self.writer.write(encode(fields))

    def abort(self) -> None:
        self.closed = True
        transport = self.writer.transport
        transport.abort()
