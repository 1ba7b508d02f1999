"""``trader symbols``: the contract-details cache (search, refresh, stats)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import cli_errors, console, db_session, ensure_schema

app = typer.Typer(help="The contract-details cache.", no_args_is_help=True)


@app.command("search")
@cli_errors
def search(text: Annotated[str, typer.Argument(help="Part of a symbol or company name.")]) -> None:
    """Search cached contracts by symbol or long name."""
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
        console.print(f"no cached contract matches {text!r}")
        return
    console.print(table)


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
