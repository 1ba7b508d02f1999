"""The TWS-protocol server: asyncio on 127.0.0.1, spoken to by the real ib_async client.

Lifecycle: ``await sim.start()`` / ``await sim.stop()``, ``async with SimServer(cfg) as sim``, or
``with SimServer.in_thread(cfg) as sim`` (own event loop in a daemon thread). Every public method may be called
from any thread: calls from outside the server's loop thread are marshalled onto it and waited for.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from simulator import messages as m
from simulator.catalog import Catalog, bar_files, load_catalog
from simulator.clock import MarketClock
from simulator.config import MIN_SERVER_VERSION, SimConfig
from simulator.connection import Connection, SimStats
from simulator.control import ClockControl, bind_control
from simulator.faults import FailRule, Faults, request_id
from simulator.handlers import RequestHandlers
from simulator.matching import Matcher
from simulator.orders import Builder, OrderDesk
from simulator.pacing import HistoricalPacer
from simulator.state import SimState
from simulator.wire import API_PREFIX, FrameReader, ProtocolError, encode_raw, parse_version_range

log = logging.getLogger("simulator")
T = TypeVar("T")

FARM_NOTICES = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)
DUPLICATE_CLIENT = "Unable to connect as the client id is already in use. Retry with a unique client id."
_CATALOG_CACHE: dict[tuple[Path, tuple[tuple[str, float], ...]], Catalog] = {}


def cached_catalog(data_dir: Path) -> Catalog:
    """Load a catalog once per directory content (name and mtime of each file); catalogs are read-only."""
    path = data_dir.resolve()
    if not path.is_dir():
        return load_catalog(path)  # raises InputError naming the directory
    key = (path, tuple((p.name, p.stat().st_mtime) for p in bar_files(path)))
    if key not in _CATALOG_CACHE:
        _CATALOG_CACHE[key] = load_catalog(path)
    return _CATALOG_CACHE[key]


class SimServer(RequestHandlers):
    """A simulated TWS / IB Gateway over real sockets. See docs/simulator.md."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.catalog = cached_catalog(self.config.resolved_data_dir())
        start = self.config.now or self.catalog.daily_end() or datetime.now(UTC)
        self.clock = MarketClock(self.catalog, start)
        self.state = SimState(
            accounts=self.config.accounts, cash={a: self.config.initial_cash for a in self.config.accounts}
        )
        self.stats = SimStats()
        self.received: list[tuple[int, list[str]]] = []
        self.pacer = HistoricalPacer(self.config.pacing_time)
        self.faults = Faults()
        self.reply_delay_s = 0.0
        self.close_after_place_order = False
        self.desk = OrderDesk(
            self.state,
            self.catalog,
            self.clock,
            Matcher(
                self.config.partial_fill_participation,
                self.config.slippage,
                self.config.mkt_fill,
                placement_fill=self.config.placement_fill,
            ),
            self,
        )
        self.clock.bind(self._on_advance, self._call)
        self._connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._port = self.config.port
        self._stopped = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.control: ClockControl | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def early_commission_report(self) -> bool:
        return self.desk.early_commission_report

    @early_commission_report.setter
    def early_commission_report(self, value: bool) -> None:
        self.desk.early_commission_report = value

    async def start(self, sock: socket.socket | None = None) -> SimServer:
        """Serve on ``config.host:port``, or on ``sock``, a listening socket bound beforehand (``trader sim start``
        binds before it imports the data stack; connections queued by the kernel meanwhile are served now)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self._listen(sock)
        log.info(
            "simulator listening on %s:%d (server version %d)", self.config.host, self._port, self.config.server_version
        )
        return self

    async def _listen(self, sock: socket.socket | None = None) -> None:
        if sock is not None:
            self._server = await asyncio.start_server(self._serve, sock=sock)
        else:
            self._server = await asyncio.start_server(self._serve, self.config.host, self._port, reuse_address=True)
        self._port = self._server.sockets[0].getsockname()[1]

    async def serve_control(self, sock: socket.socket | None = None, *, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve the clock control endpoint (:mod:`simulator.control`) on ``sock``, a listening loopback socket, or
        on loopback ``host:port`` (0 = any free port); return its port. Call on the server loop, after :meth:`start`."""
        if self.control is not None:
            raise RuntimeError("the control endpoint is already served")
        control = ClockControl(self)
        await control.start(sock if sock is not None else bind_control(host, port))
        self.control = control
        return control.port

    async def stop(self) -> None:
        self._stopped = True
        if self.control is not None:
            await self.control.stop()
            self.control = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._connections):
            conn.abort()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> SimServer:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    @classmethod
    @contextmanager
    def in_thread(cls, config: SimConfig | None = None) -> Iterator[SimServer]:
        """Run a server on its own event loop in a daemon thread for the duration of the ``with`` block."""
        sim = cls(config)
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(sim.start())
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="tws-simulator", daemon=True)
        thread.start()
        ready.wait(30)
        if failure:
            loop.close()
            raise failure[0]
        try:
            yield sim
        finally:
            with suppress(Exception):
                asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the server loop (directly when already there) and return its result."""
        loop = self._loop
        if loop is None or not loop.is_running() or threading.get_ident() == self._loop_thread:
            return fn(*args)

        async def call() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), loop).result(30)

    # ---- fault injection -------------------------------------------------------------------------------------

    def drop_connections(self) -> None:
        """Abort every client socket (the client sees the peer close)."""
        self._call(self._drop_all)

    def _drop_all(self) -> None:
        for conn in list(self._connections):
            conn.abort()

    def refuse_connections(self, seconds: float | None = None) -> None:
        """Emulate the daily restart: drop every socket and stop listening for ``seconds`` (``None``: until
        :meth:`accept_connections`, which tests use instead of a real-time window)."""
        self._call(self._refuse, seconds)

    def _refuse(self, seconds: float | None) -> None:
        self._drop_all()
        if self._server is not None:
            self._server.close()
            self._server = None
        assert self._loop is not None
        if seconds is not None:
            self._loop.call_later(seconds, lambda: self._spawn(self._relisten()))

    async def accept_connections(self) -> None:
        """Listen again after :meth:`refuse_connections` (on the same port); returns once connections are accepted."""
        loop = self._loop
        assert loop is not None, "server not started"
        if threading.get_ident() == self._loop_thread:
            await self._relisten()
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._relisten(), loop))

    def accept_connections_from_thread(self, timeout_s: float = 30.0) -> None:
        """:meth:`accept_connections` for a caller on another thread (``SimServer.in_thread``); returns once the
        port accepts connections again."""
        loop = self._loop
        assert loop is not None and threading.get_ident() != self._loop_thread, "use `await accept_connections()`"
        asyncio.run_coroutine_threadsafe(self._relisten(), loop).result(timeout_s)

    async def _relisten(self) -> None:
        if self._server is None and not self._stopped:
            await self._listen()

    def send_error(self, code: int, message: str, req_id: int = -1, client_id: int | None = None) -> None:
        """Send an error/notice (e.g. 1100, 1101, 1102) to every client, or to one clientId."""
        self._call(self._broadcast_error, code, message, req_id, client_id)

    def connectivity_lost(self) -> None:
        self.send_error(1100, "Connectivity between IB and Trader Workstation has been lost.")

    def connectivity_restored(self, *, data_lost: bool = False) -> None:
        if data_lost:
            self.send_error(1101, "Connectivity between IB and TWS has been restored- data lost.*")
        else:
            self.send_error(1102, "Connectivity between IB and Trader Workstation has been restored - data maintained.")

    def _broadcast_error(self, code: int, message: str, req_id: int, client_id: int | None) -> None:
        for conn in self._connections:
            if client_id is None or conn.client_id == client_id:
                conn.send(m.error(conn.version, req_id, code, message))

    def reject_next_order(self, reason: str) -> None:
        """The next placeOrder (any client) is rejected with error 201 and ``reason``."""
        self._call(self.desk.reject_reasons.append, reason)

    def fail_request(self, code: int, message: str, *, req_id: int | None = None, msg_type: int | None = None) -> None:
        """Answer the next request with this id and/or message type with error ``code`` instead of its reply."""
        if req_id is None and msg_type is None:
            raise ValueError("fail_request needs req_id or msg_type")
        self._call(self.faults.rules.append, FailRule(code, message, req_id, msg_type))

    # ---- outbox (used by the order desk) ---------------------------------------------------------------------

    def to_client(self, client_id: int, build: Builder) -> None:
        for conn in self._connections:
            if conn.client_id == client_id:
                conn.send(build(conn.version))

    def account_changed(self, account: str, con_id: int) -> None:
        inst = self.catalog.by_con_id[con_id]
        pos = self.state.position(account, con_id)
        for conn in self._connections:
            if conn.positions_sub:
                conn.send(m.position(account, inst, pos.quantity, pos.avg_cost))
            if conn.account_sub == account:
                self._send_account(conn, account, end=False)

    # ---- connections -----------------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        conn: Connection | None = None
        try:
            frames = FrameReader()
            version, pending = await self._handshake(reader, writer, frames)
            if version is None:
                writer.transport.abort()
                return
            conn = Connection(writer, version)
            self._connections.append(conn)
            while not conn.closed:
                for fields in pending:
                    if conn.closed:
                        break
                    await self._dispatch(conn, fields)
                data = await reader.read(65536)
                if not data:
                    break
                pending = frames.feed(data)
        except (ConnectionError, ProtocolError, asyncio.IncompleteReadError) as exc:
            log.debug("connection ended: %r", exc)
        except asyncio.CancelledError:
            pass
        finally:
            if conn is not None:
                conn.closed = True
                if conn in self._connections:
                    self._connections.remove(conn)
            if not writer.is_closing():
                writer.close()

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frames: FrameReader
    ) -> tuple[int | None, list[list[str]]]:
        """Read ``API\\0`` and the version greeting; reply ``version, time``. Return the version and any frames
        that arrived behind the greeting."""
        prefix = await reader.readexactly(len(API_PREFIX))
        if prefix != API_PREFIX:
            log.warning("not a TWS API client (got %r)", prefix)
            return None, []
        greeting: list[list[str]] = []
        while not greeting:
            data = await reader.read(4096)
            if not data:
                return None, []
            greeting = frames.feed(data)
        low, high, _options = parse_version_range(greeting[0][0] if greeting[0] else "")
        version = min(high, self.config.server_version)
        if version < max(low, MIN_SERVER_VERSION):
            log.warning("refusing client versions v%d..%d (server speaks %d)", low, high, self.config.server_version)
            return None, []
        stamp = f"{self.clock.now:%Y%m%d %H:%M:%S} UTC"
        writer.write(encode_raw(f"{version}\0{stamp}\0".encode()))
        return version, greeting[1:]

    async def _dispatch(self, conn: Connection, fields: list[str]) -> None:
        self.stats.messages_received += 1
        cid = conn.client_id if conn.client_id is not None else -1
        if cid == -1 and fields[:1] == ["71"] and len(fields) > 2 and fields[2].lstrip("-").isdigit():
            cid = int(fields[2])
        self.received.append((cid, fields))
        try:
            msg_id = int(fields[0])
        except (IndexError, ValueError):
            log.warning("malformed frame %r", fields)
            return
        if conn.client_id is None:
            if msg_id == 71:
                self._start_api(conn, fields)
            return
        if self.reply_delay_s > 0:
            await asyncio.sleep(self.reply_delay_s)
        req_id = request_id(fields)
        rule = self.faults.take(msg_id, req_id)
        if rule is not None:
            conn.send(m.error(conn.version, req_id if req_id is not None else -1, rule.code, rule.message))
            return
        handler = self.HANDLERS.get(msg_id)
        if handler is None:
            log.debug("ignoring message %d: %r", msg_id, fields)
            return
        try:
            handler(self, conn, fields)
        except Exception:
            log.exception("handler for message %d failed on %r", msg_id, fields)
            rid = req_id if req_id is not None else -1
            conn.send(m.error(conn.version, rid, 321, "Error validating request.- simulator could not handle it"))

    def _start_api(self, conn: Connection, fields: list[str]) -> None:
        client_id = int(fields[2])
        if any(c.client_id == client_id for c in self._connections if c is not conn and not c.closed):
            conn.send(m.error(conn.version, -1, 326, DUPLICATE_CLIENT))
            conn.closed = True
            conn.writer.close()
            return
        conn.client_id = client_id
        self.stats.connections += 1
        conn.send(m.managed_accounts(self.state.accounts))
        conn.send(m.next_valid_id(self.state.next_order_id.get(client_id, 1)))
        if self.config.farm_notices:
            for code, text in FARM_NOTICES:
                conn.send(m.error(conn.version, -1, code, text))

    # ---- clock -----------------------------------------------------------------------------------------------

    def _on_advance(self, before: datetime, after: datetime) -> None:
        self.desk.on_advance(before, after)
        for conn in self._connections:
            for req_id, con_id in conn.streams.items():
                self._send_ticks(conn, req_id, self.catalog.by_con_id[con_id])
            for stream in conn.bar_streams.values():
                self._send_bar_updates(conn, stream)
            if conn.account_sub is not None:
                self._send_account(conn, conn.account_sub, end=False)

    # ---- introspection ---------------------------------------------------------------------------------------

    @property
    def active_clients(self) -> list[int]:
        return [c.client_id for c in self._connections if c.client_id is not None and not c.closed]

    def describe(self) -> list[str]:
        """One line per instrument: symbol, conId, sec type, series and their ranges."""
        lines = []
        for inst in self.catalog:
            series = ", ".join(
                f"{s.bar_size.value} {s.frame['timestamp'].iloc[0]:%Y-%m-%d}..{s.frame['timestamp'].iloc[-1]:%Y-%m-%d}"
                f" ({len(s.frame)} bars, {s.source.name})"
                for s in inst.finest_first()
            )
            lines.append(f"{inst.symbol:5} conId={inst.con_id:<9} {inst.sec_type} {inst.primary_exchange:6} {series}")
        return lines
