"""Simulator configuration (validated on construction)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Final

from services.errors import InputError, Problem
from simulator.pacing import TimeSource

MIN_SERVER_VERSION: Final = 157
MAX_SERVER_VERSION: Final = 178
REPO_SAMPLES: Final = Path(__file__).resolve().parents[1] / "data" / "samples"


def default_data_dir() -> Path:
    """The repo's ``data/samples/`` (the shipped bar files; nothing outside the repository is read)."""
    return REPO_SAMPLES


@dataclass(frozen=True)
class SimConfig:
    """How the simulator behaves. Every field has a working default.

    ``partial_fill_participation``: max share of a bar's volume one bar can fill (None = no limit).
    ``mkt_fill``: ``"close"`` (MKT fills at once at the current bar's close) or ``"next_open"`` (on advance).
    ``placement_fill``: False = no order fills at placement against the last completed bar (MKT, LMT and triggered
    stops all wait for the next bar to complete): a trader that decides on a bar's close and sends at the next
    session's open, as the replay fills (a daily bar's close is a day old at the next open).
    ``slippage``: price added against the trader on MKT and triggered STP fills.
    ``now``: initial market clock (default: the end of the latest daily bar).
    ``pacing_time``: time source for historical pacing (default ``time.monotonic``).
    """

    data_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    server_version: int = MAX_SERVER_VERSION
    accounts: tuple[str, ...] = ("DU1234567",)
    initial_cash: Decimal = Decimal("1000000")
    partial_fill_participation: float | None = None
    mkt_fill: str = "close"
    placement_fill: bool = True
    slippage: Decimal = Decimal(0)
    spread_ticks: int = 1
    now: datetime | None = None
    pacing_time: TimeSource | None = None
    farm_notices: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not MIN_SERVER_VERSION <= self.server_version <= MAX_SERVER_VERSION:
            problems.append(f"server_version must be {MIN_SERVER_VERSION}..{MAX_SERVER_VERSION}")
        if not self.accounts or any(not a or "," in a for a in self.accounts):
            problems.append("accounts must be non-empty codes without commas")
        if not 0 <= self.port <= 65535:
            problems.append("port must be 0..65535")
        if self.initial_cash < 0:
            problems.append("initial_cash must be >= 0")
        p = self.partial_fill_participation
        if p is not None and not 0 < p <= 1:
            problems.append("partial_fill_participation must be in (0, 1] or None")
        if self.mkt_fill not in ("close", "next_open"):
            problems.append("mkt_fill must be 'close' or 'next_open'")
        if self.slippage < 0:
            problems.append("slippage must be >= 0")
        if self.now is not None and self.now.tzinfo is None:
            problems.append("now must be timezone-aware")
        if problems:
            raise InputError("simulator config", [Problem("", p) for p in problems])

    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else default_data_dir()
