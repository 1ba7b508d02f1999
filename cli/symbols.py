"""``trader symbols``: search IB, resolve a batch, and the contract-details cache (refresh, stats)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import cli_errors, console, db_session, ensure_schema, err_console, fail, one_shot_broker, settings

if TYPE_CHECKING:
    from services.symbols import SearchResult

app = typer.Typer(help="The contract-details cache.", no_args_is_help=True)


@app.command("search")
@cli_errors
def search(
    text: Annotated[str, typer.Argument(help="A ticker's first letters or a word of the company name.")],
    cached: Annotated[bool, typer.Option("--cached", help="Search the cache only; do not ask IB.")] = False,
) -> None:
    """Ask IB which contracts match TEXT and cache their details; without IB (or --cached), search the cache."""
    from services.errors import BrokerConnectionError

    if cached:
        _print_cached(text)
        return
    from services.db import session_scope
    from services.symbols import search as ib_search

    ensure_schema()
    broker = one_shot_broker()
    try:
        broker.connect()
        result = ib_search(lambda: session_scope(settings().database_url()), broker, text)
    except BrokerConnectionError as exc:
        err_console.print(f"IB not reachable ({exc}); showing cached contracts only", markup=False)
        _print_cached(text)
        return
    finally:
        broker.close()
    _print_matches(text, result)


def _print_matches(text: str, result: SearchResult) -> None:
    from rich.table import Table

    if not result.matches:
        console.print(f"IB knows no contract matching {text!r}", markup=False)
        return
    table = Table("conid", "symbol", "contract", "description", "derivatives", "cached")
    for match in result.matches:
        table.add_row(
            str(match.conid),
            match.symbol,
            f"{match.sec_type} {match.primary_exchange or '-'} {match.currency}",
            match.description,
            " ".join(match.derivative_sec_types) or "-",
            "yes" if match.conid in result.cached else "no",
        )
    console.print(table)
    console.print(f"{len(result.matches)} match(es) from IB, {len(result.cached)} cached", markup=False)


def _print_cached(text: str) -> None:
    from rich.table import Table

    from services.repositories import contracts

    table = Table("conid", "symbol", "type", "exchange", "currency", "long name", "fetched (UTC)")
    with db_session() as session:
        rows = contracts.search(session, text)
        for row in rows:
            table.add_row(
                str(row.conid),
                row.symbol,
                row.sec_type,
                f"{row.exchange}/{row.primary_exchange or '-'}",
                row.currency,
                row.long_name or "",
                row.fetched_at.isoformat(timespec="seconds"),
            )
    if not rows:
        console.print(f"no cached contract matches {text!r}", markup=False)
        return
    console.print(table)


@app.command("resolve")
@cli_errors
def resolve(
    symbols: Annotated[list[str], typer.Argument(help="Symbols to resolve, e.g. SPY AAPL.", show_default=False)],
    sec_type: Annotated[str, typer.Option("--sec-type", help="IB security type: STK, IND, FUT, CASH.")] = "STK",
    currency: Annotated[str, typer.Option(help="Currency of the contracts.")] = "USD",
    exchange: Annotated[str, typer.Option(help="Exchange to ask (SMART routes).")] = "SMART",
) -> None:
    """Resolve each symbol to one conid (cache first, then IB, paced); exit 1 if any is not found or ambiguous."""
    import datetime as dt

    from rich.table import Table

    from models.enums import SecType
    from services.db import session_scope
    from services.errors import InputError
    from services.symbols import parse_symbols, resolve_batch

    try:
        kind = SecType(sec_type.upper())
    except ValueError:
        raise InputError("--sec-type", f"{sec_type!r} is not one of {', '.join(SecType)}") from None
    wanted = parse_symbols(symbols)  # bad input fails before connecting
    ensure_schema()
    broker = one_shot_broker()
    try:
        broker.connect()
        results = resolve_batch(
            lambda: session_scope(settings().database_url()),
            broker,
            wanted,
            ttl=dt.timedelta(seconds=settings().ib.contract_cache_ttl_s),
            sec_type=kind,
            currency=currency.upper(),
            exchange=exchange.upper(),
        )
    finally:
        broker.close()
    table = Table("symbol", "status", "conid", "detail")
    for r in results:
        if r.contract is not None:
            source = "cache" if r.cache_hit else "IB"
            detail = f"{r.contract.primary_exchange} {r.contract.long_name} ({source})".strip()
            table.add_row(r.symbol, r.status.value, str(r.contract.conid), detail)
        elif r.candidates:
            listed = ", ".join(f"{c.conid} {c.primary_exchange}" for c in r.candidates)
            table.add_row(r.symbol, r.status.value, "-", f"{len(r.candidates)} contracts: {listed}")
        else:
            table.add_row(r.symbol, r.status.value, "-", r.error or f"no {kind} contract in {currency.upper()}")
    console.print(table)
    failed = [r.symbol for r in results if not r.ok]
    console.print(f"{len(results) - len(failed)} of {len(results)} resolved", markup=False)
    if failed:
        raise fail(f"not resolved: {' '.join(failed)}")


@app.command("stats")
@cli_errors
def stats() -> None:
    """Entries, hits, misses, hit rate and the oldest entry of the cache."""
    from services.repositories import contracts

    with db_session() as session:
        s = contracts.stats(session)
    rate = "-" if s.hit_rate is None else f"{s.hit_rate:.1%}"
    oldest = "-" if s.oldest is None else s.oldest.isoformat(timespec="seconds")
    console.print(f"entries {s.entries}  hits {s.hits}  misses {s.misses}  hit rate {rate}  oldest {oldest}")


@app.command("refresh")
@cli_errors
def refresh() -> None:
    """Re-fetch every cached contract from the configured broker (TRADER_IB__*)."""
    from services.db import session_scope
    from services.runtime import get_runtime
    from services.symbols import refresh_all

    runtime = get_runtime()
    ensure_schema()
    try:
        fresh = refresh_all(lambda: session_scope(runtime.database_url), runtime.broker())
    finally:
        runtime.close()
    console.print(f"refreshed {len(fresh)} contract(s): {', '.join(c.symbol for c in fresh) or '-'}")
