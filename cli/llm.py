"""``trader llm costs``: what the stored LLM calls cost, by strategy, model or UTC day."""

from __future__ import annotations

import json
from typing import Annotated, cast

import typer

from cli.common import cli_errors, console, ensure_schema, settings
from services.errors import InputError

app = typer.Typer(help="LLM calls: what they cost.", no_args_is_help=True)


@app.command("costs")
@cli_errors
def costs(
    by: Annotated[str, typer.Option("--by", help="Group by strategy, model or day (UTC).")] = "strategy",
    days: Annotated[int, typer.Option("--days", help="The last N UTC days, today included.", min=1)] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows.")] = False,
) -> None:
    """USD, calls, requests, cache hits, tokens and mean latency of the LLM calls of the last DAYS days."""
    import datetime as dt
    from decimal import Decimal

    from services.llm.costs import GROUPINGS, Grouping, summarize
    from services.llm.store import DbLlmCallStore, budget_day

    choices = [g for g in GROUPINGS if g != "call"]  # by call is the step 5 artifact's table
    if by not in choices:
        raise InputError("--by", f"must be one of {', '.join(choices)}, not {by!r}")
    today = budget_day(dt.datetime.now(dt.UTC))
    since = today - dt.timedelta(days=days - 1)
    ensure_schema()
    rows = summarize(DbLlmCallStore(settings().database_url()).usage_since(since), cast(Grouping, by))
    if as_json:
        console.print(json.dumps([r.as_dict() for r in rows]), markup=False)
        return
    if not rows:
        console.print(f"no LLM calls since {since.date().isoformat()} (UTC)")
        return
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE, pad_edge=False)
    table.add_column(by, no_wrap=True)
    for name in ("calls", "req", "cached", "errors", "tok in", "tok out"):
        table.add_column(name, justify="right")
    table.add_column("USD", justify="right", no_wrap=True)
    table.add_column("mean ms", justify="right")
    for r in rows:
        latency = "-" if r.mean_latency_ms is None else str(r.mean_latency_ms)
        table.add_row(r.key, str(r.calls), str(r.requests), str(r.cache_hits), str(r.errors),
                      str(r.prompt_tokens), str(r.completion_tokens), str(r.cost_usd), latency)  # fmt: skip
    total = sum((r.cost_usd for r in rows), Decimal(0))
    table.add_row("total", str(sum(r.calls for r in rows)), "", "", "", "", "", str(total), "")
    console.print(table)
    console.print(f"since {since.date().isoformat()} 00:00 UTC; req = requests to the model, cached = cache hits",
                  markup=False)  # fmt: skip
