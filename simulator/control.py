"""The clock control endpoint: step the simulator's market clock from another process (``trader sim step``).

Protocol: newline-delimited JSON over TCP, on a loopback address only (no authentication: anyone who can open a
loopback socket on this machine can move the clock). One request per line, one reply per line, in order; a
connection may carry many requests::

    {"cmd": "status", "symbol": "SPY"}                 symbol optional: next bar of its clock series
    {"cmd": "step", "bars": 3, "symbol": "SPY", "until_fill": false}
    {"cmd": "advance_to", "ts": "2012-06-27T20:00:00Z"}

    {"ok": true, "result": {...}}
    {"ok": false, "kind": "input", "error": "cannot advance backwards to ..."}

``step`` and ``advance_to`` go through :class:`simulator.clock.MarketClock` exactly as an in-process
``sim.clock.advance`` does: resting orders are matched against every bar passed, DAY orders expire, and the
connected API clients get their orderStatus / execDetails / commissionReport, ticks and account updates. Their
result carries the clock before and after, the fills and the order endings of the step, and the status after it.

A line that is not a JSON object ends the connection after its error reply: an HTTP request sent here by a web
page (a cross-protocol attack on a loopback port) fails on its request line and never reaches a body.

This module imports only light standard-library modules at import time (not even asyncio): the ``trader sim``
client commands use :func:`request` without loading pandas or an event loop.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from simulator.server import SimServer
    from simulator.state import SimExecution, SimOrder

log = logging.getLogger("simulator.control")

DEFAULT_CONTROL_PORT = 7498  # the default simulator port 7497 + 1
MAX_LINE = 64 * 1024
COMMANDS = ("status", "step", "advance_to")


class ControlError(Exception):
    """A refused request. ``kind`` is ``"input"`` (bad request: the CLI exits 2) or ``"failed"`` (exit 1)."""

    def __init__(self, message: str, kind: str = "input") -> None:
        super().__init__(message)
        self.kind = kind


def require_loopback(host: str) -> None:
    """Refuse any address that is not loopback (127.0.0.0/8, ::1 or ``localhost``)."""
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"control host must be a loopback address, not {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"control host must be a loopback address (127.0.0.1, ::1), not {host}")


def bind_control(host: str, port: int) -> socket.socket:
    """A listening socket for the control endpoint on loopback ``host:port`` (0 = any free port)."""
    require_loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


# ---- server side ---------------------------------------------------------------------------------------------


class ClockControl:
    """Serves the control protocol for one :class:`SimServer`, on the server's own event loop."""

    def __init__(self, sim: SimServer) -> None:
        self.sim = sim
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, sock: socket.socket) -> None:
        import asyncio  # here, not at the top: the client side (`trader sim step`) needs none of it

        self._server = await asyncio.start_server(self._serve, sock=sock, limit=MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_LINE
                    writer.write(_reply_error(ControlError(f"request longer than {MAX_LINE} bytes")))
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    request = json.loads(line)
                except ValueError:
                    request = None
                if not isinstance(request, dict):
                    writer.write(_reply_error(ControlError("not a JSON object (one request per line)")))
                    break
                writer.write(self.handle_line(request))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def handle_line(self, request: dict[str, Any]) -> bytes:
        try:
            result = self.handle(request)
        except ControlError as exc:
            return _reply_error(exc)
        except Exception as exc:
            log.exception("control request %r failed", request)
            return _reply_error(ControlError(f"simulator error: {exc}", "failed"))
        return (json.dumps({"ok": True, "result": result}) + "\n").encode()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one request on the server loop; return its result or raise :class:`ControlError`."""
        cmd = request.get("cmd")
        symbol = _symbol(request)
        if cmd == "status":
            return self.status(symbol)
        if cmd == "step":
            bars = request.get("bars", 1)
            if not isinstance(bars, int) or isinstance(bars, bool) or bars < 1:
                raise ControlError(f"bars must be a whole number >= 1, not {bars!r}")
            return self.step(bars, symbol, until_fill=bool(request.get("until_fill", False)))
        if cmd == "advance_to":
            ts = request.get("ts")
            if not isinstance(ts, str):
                raise ControlError("advance_to needs ts, an ISO timestamp with a zone")
            return self.advance_to(ts)
        raise ControlError(f"unknown command {cmd!r} (one of: {', '.join(COMMANDS)})")

    # ---- commands ------------------------------------------------------------------------------------------

    def status(self, symbol: str | None = None) -> dict[str, Any]:
        sim = self.sim
        next_bar = _clock_call(lambda: sim.clock.next_bar_end(symbol=symbol))
        open_orders = sorted(sim.state.open_orders(), key=lambda o: o.perm_id)
        positions = [
            {
                "account": p.account,
                "symbol": sim.catalog.by_con_id[p.con_id].symbol,
                "quantity": _num(p.quantity),
                "avg_cost": _num(p.avg_cost),
            }
            for (_acct, _con), p in sorted(sim.state.positions.items())
            if p.quantity != 0
        ]
        return {
            "now": sim.clock.now.isoformat(),
            "next_bar": next_bar.isoformat() if next_bar is not None else None,
            "symbol": symbol,
            "open_orders": len(open_orders),
            "orders": [self._order(o) for o in open_orders],
            "positions": positions,
            "cash": {account: _num(cash) for account, cash in sorted(sim.state.cash.items())},
            "clients": sorted(sim.active_clients),
        }

    def step(self, bars: int, symbol: str | None, *, until_fill: bool = False) -> dict[str, Any]:
        before = self._snapshot()
        start = self.sim.clock.now
        if not until_fill:
            _clock_call(lambda: self.sim.clock.advance(bars, symbol=symbol))
            stepped, stopped = bars, None
        else:
            stepped, stopped = 0, "no fill"
            fills = len(self.sim.state.executions)
            while stepped < bars:
                if stepped and self.sim.clock.next_bar_end(symbol=symbol) is None:
                    stopped = "no more bars"
                    break
                _clock_call(lambda: self.sim.clock.advance(1, symbol=symbol))
                stepped += 1
                if len(self.sim.state.executions) > fills:
                    stopped = "filled"
                    break
        return self._stepped(start, before, stepped, stopped, symbol)

    def advance_to(self, ts: str) -> dict[str, Any]:
        from simulator.clock import to_utc  # pandas: loaded by the server already

        target = _clock_call(lambda: to_utc(ts))
        before = self._snapshot()
        start = self.sim.clock.now
        _clock_call(lambda: self.sim.clock.advance_to(target))
        return self._stepped(start, before, None, None, None)

    # ---- helpers -------------------------------------------------------------------------------------------

    def _snapshot(self) -> tuple[int, dict[int, str]]:
        return len(self.sim.state.executions), {p: o.status.value for p, o in self.sim.state.orders.items()}

    def _stepped(
        self,
        start: datetime,
        before: tuple[int, dict[int, str]],
        bars: int | None,
        stopped: str | None,
        symbol: str | None,
    ) -> dict[str, Any]:
        state = self.sim.state
        n_fills, statuses = before
        fills = [self._execution(ex) for ex in state.executions[n_fills:]]
        ended = [
            self._order(o)
            for p, o in sorted(state.orders.items())
            if o.is_done and statuses.get(p) != o.status.value and o.status.value != "Filled"
        ]
        return {
            "before": start.isoformat(),
            "now": self.sim.clock.now.isoformat(),
            "bars": bars,
            "stopped": stopped,
            "fills": fills,
            "ended": ended,
            "status": self.status(symbol),
        }

    def _order(self, order: SimOrder) -> dict[str, Any]:
        return {
            "client_id": order.client_id,
            "order_id": order.order_id,
            "perm_id": order.perm_id,
            "symbol": self.sim.catalog.by_con_id[order.con_id].symbol,
            "action": order.action,
            "quantity": _num(order.quantity),
            "order_type": order.order_type,
            "lmt_price": _num(order.lmt_price),
            "aux_price": _num(order.aux_price),
            "tif": order.tif,
            "status": order.status.value,
            "filled": _num(order.filled),
            "order_ref": order.order_ref,
        }

    def _execution(self, ex: SimExecution) -> dict[str, Any]:
        return {
            "client_id": ex.client_id,
            "order_id": ex.order_id,
            "perm_id": ex.perm_id,
            "exec_id": ex.exec_id,
            "symbol": self.sim.catalog.by_con_id[ex.con_id].symbol,
            "side": ex.side,
            "shares": _num(ex.shares),
            "price": _num(ex.price),
            "time": ex.time.isoformat(),
            "commission": _num(ex.commission),
        }


def _symbol(request: dict[str, Any]) -> str | None:
    symbol = request.get("symbol")
    if symbol is None:
        return None
    if not isinstance(symbol, str) or not symbol.strip():
        raise ControlError(f"symbol must be a non-empty string, not {symbol!r}")
    return symbol.strip().upper()


def _clock_call(fn: Any) -> Any:
    """Call into the clock; its ValueErrors (naive or backwards time, unknown symbol, no more bars) are bad input."""
    try:
        return fn()
    except ValueError as exc:
        raise ControlError(str(exc)) from None


def _num(value: Decimal | None) -> str | None:
    """A Decimal as its plain string (``"132.8"``, ``"10"``): exact, and JSON has no decimal type."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _reply_error(exc: ControlError) -> bytes:
    return (json.dumps({"ok": False, "kind": exc.kind, "error": str(exc)}) + "\n").encode()


# ---- client side ---------------------------------------------------------------------------------------------


class ControlUnavailable(Exception):
    """Nothing (or not a simulator) answers on the control port."""


def request(payload: dict[str, Any], port: int = DEFAULT_CONTROL_PORT, *, host: str = "127.0.0.1",
            timeout_s: float = 30.0) -> dict[str, Any]:  # fmt: skip
    """Send one request and return the reply (``{"ok": ..., ...}``); :class:`ControlUnavailable` when no simulator
    control endpoint answers on ``host:port`` within ``timeout_s``."""
    require_loopback(host)
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            conn.sendall((json.dumps(payload) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
    except ConnectionRefusedError:
        raise ControlUnavailable(
            f"no simulator is listening on {where} (start one with `trader sim start`, or pass its --control-port)"
        ) from None
    except TimeoutError:
        raise ControlUnavailable(f"the simulator on {where} did not answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise ControlUnavailable(f"cannot reach the simulator on {where}: {exc.strerror or exc}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ControlUnavailable(f"{where} is not a simulator control endpoint (no JSON reply)")
    return reply
