"""Request handlers: one method per client message id (client.py layouts), mixed into :class:`SimServer`.

Startup sync: 61 -> 61*/62, 5 -> 5*/3*/53, 99 -> 101*/102, 6 -> 6*/7*/8/54, 76 -> 73*/74, 7 -> 11*/59*/55.
Data: 9 -> 10*/52 or 200, 81 -> 79, 20 -> 17 or 162/321/200, 1 -> 58, ticks [, 57]. Orders: 3, 4, 58 via the order desk.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import ClassVar

from simulator import history
from simulator import messages as m
from simulator.catalog import Catalog, Instrument
from simulator.clock import MarketClock
from simulator.config import SimConfig
from simulator.connection import BarStream, Connection, SimStats
from simulator.matching import bar_at
from simulator.orders import OrderDesk, parse_place
from simulator.pacing import HistoricalPacer
from simulator.state import SimState
from simulator.wire import ib_time

NO_SECURITY = "No security definition has been found for the request"


class RequestHandlers:
    """The server's answers to client requests; attributes are provided by :class:`simulator.server.SimServer`."""

    config: SimConfig
    catalog: Catalog
    clock: MarketClock
    state: SimState
    stats: SimStats
    pacer: HistoricalPacer
    desk: OrderDesk
    close_after_place_order: bool

    def _resolve(self, fields: list[str], first: int) -> list[Instrument]:
        """Match the 12-field contract starting at ``fields[first]`` against the catalog."""
        con_id = int(fields[first] or 0)
        symbol, sec_type = fields[first + 1], fields[first + 2]
        exchange, currency, local = fields[first + 7], fields[first + 9], fields[first + 10]
        found = self.catalog.find(con_id, symbol, sec_type, currency, exchange)
        if local:
            found = [i for i in found if i.local_symbol == local]
        return found

    def _positions(self, conn: Connection, _fields: list[str]) -> None:
        conn.positions_sub = True
        for (account, con_id), pos in sorted(self.state.positions.items()):
            if pos.quantity != 0:
                conn.send(m.position(account, self.catalog.by_con_id[con_id], pos.quantity, pos.avg_cost))
        conn.send(m.position_end())

    def _cancel_positions(self, conn: Connection, _fields: list[str]) -> None:
        conn.positions_sub = False

    def _open_orders(self, conn: Connection, fields: list[str]) -> None:
        everyone = fields[0] == "16"
        for order in sorted(self.state.open_orders(), key=lambda o: o.perm_id):
            if everyone or order.client_id == conn.client_id:
                inst = self.catalog.by_con_id[order.con_id]
                conn.send(m.open_order(conn.version, order, inst))
                conn.send(m.order_status(order))
        conn.send(m.open_order_end())

    def _completed_orders(self, conn: Connection, _fields: list[str]) -> None:
        for order in sorted(self.state.completed_orders(), key=lambda o: o.perm_id):
            conn.send(m.completed_order(conn.version, order, self.catalog.by_con_id[order.con_id]))
        conn.send(m.completed_orders_end())

    def _send_account(self, conn: Connection, account: str, *, end: bool) -> None:
        for key, value, currency in self.desk.account_values(account):
            conn.send(m.account_value(key, value, currency, account))
        for inst, qty, price, avg_cost, realized in self.desk.portfolio(account):
            conn.send(m.portfolio_value(inst, account, qty, price, avg_cost, realized))
        conn.send(m.account_time(self.clock.now))
        if end:
            conn.send(m.account_download_end(account))

    def _account_updates(self, conn: Connection, fields: list[str]) -> None:
        subscribe = fields[2] == "1"
        account = fields[3] or self.state.accounts[0]
        if not subscribe:
            conn.account_sub = None
            return
        if account not in self.state.accounts:
            conn.send(m.error(conn.version, -1, 321, f"Error validating request.- account {account} not found"))
            return
        conn.account_sub = account
        self._send_account(conn, account, end=True)

    def _account_updates_multi(self, conn: Connection, fields: list[str]) -> None:
        req_id, account = int(fields[2]), fields[3]
        accounts = self.state.accounts if account in ("", "All") else (account,)
        for acct in accounts:
            if acct in self.state.accounts:
                for key, value, currency in self.desk.account_values(acct):
                    conn.send(m.account_update_multi(req_id, acct, key, value, currency))
        conn.send(m.account_update_multi_end(req_id))

    def _account_summary(self, conn: Connection, fields: list[str]) -> None:
        req_id, tags = int(fields[2]), {t.strip() for t in fields[4].split(",") if t.strip()}
        for account in self.state.accounts:
            for key, value, currency in self.desk.account_values(account):
                if key in tags:
                    conn.send(m.account_summary(req_id, account, key, value, currency))
        conn.send(m.account_summary_end(req_id))

    def _executions(self, conn: Connection, fields: list[str]) -> None:
        req_id = int(fields[2])
        client_filter = int(fields[3] or 0)
        account, since, symbol, sec_type, _exchange, side = (fields + [""] * 10)[4:10]
        for ex in self.state.executions:
            inst = self.catalog.by_con_id[ex.con_id]
            if client_filter and ex.client_id != client_filter:
                continue
            if (account and ex.account != account) or (symbol and inst.symbol != symbol.upper()):
                continue
            if (sec_type and inst.sec_type != sec_type) or (side and ex.side != side.upper()):
                continue
            if since and f"{ex.time:%Y%m%d %H:%M:%S}" < since.replace("-", " ")[:17]:
                continue
            conn.send(m.exec_details(conn.version, req_id, ex, inst))
            conn.send(m.commission_report(ex, inst.currency))
        conn.send(m.exec_details_end(req_id))

    def _req_ids(self, conn: Connection, _fields: list[str]) -> None:
        assert conn.client_id is not None
        conn.send(m.next_valid_id(self.state.next_order_id.get(conn.client_id, 1)))

    def _managed_accounts(self, conn: Connection, _fields: list[str]) -> None:
        conn.send(m.managed_accounts(self.state.accounts))

    def _current_time(self, conn: Connection, _fields: list[str]) -> None:
        conn.send(m.current_time(int(self.clock.now.timestamp())))

    def _contract_details(self, conn: Connection, fields: list[str]) -> None:
        req_id = int(fields[2])
        found = [] if (len(fields) > 16 and fields[16]) else self._resolve(fields, 3)
        if not found:
            conn.send(m.error(conn.version, req_id, 200, NO_SECURITY))
            return
        requested = fields[10]
        for inst in found:
            exchange = requested if requested and requested != "SMART" else inst.exchange
            if inst.sec_type == "IND":
                exchange = inst.primary_exchange
            conn.send(m.contract_details(conn.version, req_id, inst, exchange, self.clock.now.date()))
        conn.send(m.contract_details_end(req_id))

    def _matching_symbols(self, conn: Connection, fields: list[str]) -> None:
        req_id = int(fields[1])
        conn.send(m.symbol_samples(conn.version, req_id, self.catalog.matching(fields[2])))

    def _historical(self, conn: Connection, fields: list[str]) -> None:
        req = history.parse_request(fields)
        found = self._resolve(fields, 2)
        if not found:
            conn.send(m.error(conn.version, req.req_id, 200, NO_SECURITY))
            return
        inst = found[0]
        try:
            target = history.parse_bar_size(req.bar_size)
            count, unit = history.parse_duration(req.duration)
            history.check_limits(count, unit, target)
            verdict = self.pacer.check(req.identity(inst.con_id), (inst.con_id, req.what_to_show))
            if not verdict.ok:
                self.stats.pacing_violations += 1
                raise history.HistoryError(162, f"{history.HMDS}Historical data request pacing violation")
            result = history.serve(inst, req, self.clock.now)
        except history.HistoryError as exc:
            conn.send(m.error(conn.version, req.req_id, exc.code, exc.message))
            return
        self.stats.hist_requests += 1
        zone = inst.time_zone_id
        conn.send(m.historical_data(req.req_id, ib_time(result.start, zone), ib_time(result.end, zone), result.rows))
        if req.keep_up_to_date:
            conn.bar_streams[req.req_id] = BarStream(inst, req, result.rows[-1][0] if result.rows else "")

    def _send_bar_updates(self, conn: Connection, stream: BarStream) -> None:
        """historicalDataUpdate (90) for the last sent bar (it may have grown) and every newer one."""
        try:
            result = history.serve(stream.inst, stream.request, self.clock.now)
        except history.HistoryError:
            return
        for date, open_, high, low, close, volume, wap, count in result.rows:
            if len(date) == len(stream.last_date) and date < stream.last_date:
                continue
            conn.send([90, stream.request.req_id, count, date, open_, close, high, low, wap, volume])
            stream.last_date = date

    def _cancel_historical(self, conn: Connection, fields: list[str]) -> None:
        conn.bar_streams.pop(int(fields[2]), None)

    def _market_data(self, conn: Connection, fields: list[str]) -> None:
        req_id = int(fields[2])
        found = self._resolve(fields, 3)
        if not found:
            conn.send(m.error(conn.version, req_id, 200, NO_SECURITY))
            return
        i = 15
        if fields[4] == "BAG":
            i += 1 + 4 * int(fields[i] or 0)
        i += 4 if fields[i] == "1" else 1
        snapshot = fields[i + 1] == "1" if len(fields) > i + 1 else False
        inst = found[0]
        conn.send(m.market_data_type(req_id, conn.market_data_type))
        self._send_ticks(conn, req_id, inst)
        if snapshot:
            conn.send(m.tick_snapshot_end(req_id))
        else:
            conn.streams[req_id] = inst.con_id

    def _send_ticks(self, conn: Connection, req_id: int, inst: Instrument) -> None:
        last = inst.last_bar(self.clock.now)
        if last is None:
            return
        series, index = last
        bar = bar_at(series, index, inst.con_id)
        session = series.completed(self.clock.now)
        first = index
        while first > 0 and bar_at(series, first - 1, inst.con_id).session == bar.session:
            first -= 1
        today = session.iloc[first : index + 1]
        prev_close = float(session["close"].iloc[first - 1]) if first > 0 else float(bar.close)
        spread = Decimal(self.config.spread_ticks) * Decimal(str(inst.min_tick))
        delayed = conn.market_data_type in (3, 4)
        last_price = float(bar.close)
        prices = [
            (66 if delayed else 1, float(bar.close - spread), 100.0),
            (67 if delayed else 2, float(bar.close + spread), 100.0),
            (68 if delayed else 4, last_price, 100.0),
            (72 if delayed else 6, float(today["high"].max()), 0.0),
            (73 if delayed else 7, float(today["low"].min()), 0.0),
            (76 if delayed else 14, float(today["open"].iloc[0]), 0.0),
            (75 if delayed else 9, prev_close, 0.0),
        ]
        if inst.sec_type == "IND":
            prices = [p for p in prices if p[0] not in (1, 2, 66, 67)]
        for tick_type, price, size in prices:
            conn.send(m.tick_price(req_id, tick_type, price, size))
        conn.send(m.tick_size(req_id, 74 if delayed else 8, float(today["volume"].sum())))

    def _cancel_market_data(self, conn: Connection, fields: list[str]) -> None:
        conn.streams.pop(int(fields[2]), None)

    def _market_data_type(self, conn: Connection, fields: list[str]) -> None:
        conn.market_data_type = int(fields[2] or 1)

    def _place_order(self, conn: Connection, fields: list[str]) -> None:
        assert conn.client_id is not None
        if self.close_after_place_order:
            self.close_after_place_order = False
            conn.abort()  # the order is still processed; the client never hears about it
        if self.desk.place(conn.client_id, parse_place(fields, conn.version)):
            self.stats.orders_placed += 1

    def _cancel_order(self, conn: Connection, fields: list[str]) -> None:
        assert conn.client_id is not None
        self.desk.cancel(conn.client_id, int(fields[2]))

    def _global_cancel(self, _conn: Connection, _fields: list[str]) -> None:
        self.desk.global_cancel()

    def _ignore(self, _conn: Connection, _fields: list[str]) -> None:
        return

    HANDLERS: ClassVar[dict[int, Callable[[RequestHandlers, Connection, list[str]], None]]] = {
        1: _market_data,
        2: _cancel_market_data,
        3: _place_order,
        4: _cancel_order,
        5: _open_orders,
        6: _account_updates,
        7: _executions,
        8: _req_ids,
        9: _contract_details,
        15: _ignore,  # reqAutoOpenOrders
        16: _open_orders,
        17: _managed_accounts,
        20: _historical,
        25: _cancel_historical,
        49: _current_time,
        58: _global_cancel,
        59: _market_data_type,
        61: _positions,
        62: _account_summary,
        63: _ignore,  # cancelAccountSummary
        64: _cancel_positions,
        76: _account_updates_multi,
        77: _ignore,  # cancelAccountUpdatesMulti
        81: _matching_symbols,
        99: _completed_orders,
    }
