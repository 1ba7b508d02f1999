"""``trader replay``: run a strategy over historical bars, print its metrics and trades, store the run."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import cli_errors, console, db_session, err_console, settings
from services.errors import InputError, Problem

__all__ = ["replay_command"]


def _date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InputError("replay", [Problem(option, f"{value!r} is not a date (YYYY-MM-DD)")]) from None


def _decimal(value: str, option: str) -> Decimal:
    try:
        out = Decimal(value)
    except InvalidOperation:
        raise InputError("replay", [Problem(option, f"{value!r} is not a number")]) from None
    if not out.is_finite():
        raise InputError("replay", [Problem(option, f"{value!r} is not a number")])
    return out


_ACTIONS = ("BUY", "SELL", "HOLD", "ABSTAIN")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f} %"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


@cli_errors
def replay_command(
    name: Annotated[str | None, typer.Argument(help="Stored strategy name (or use --file).")] = None,
    start: Annotated[str, typer.Option("--from", help="First decision date (YYYY-MM-DD).")] = "",
    end: Annotated[str, typer.Option("--to", help="Last bar date (YYYY-MM-DD), inclusive.")] = "",
    decide_every: Annotated[int, typer.Option("--decide-every", help="Decide every N bars.")] = 1,
    analyst: Annotated[str, typer.Option("--analyst", help="offline or llm.")] = "offline",
    file: Annotated[Path | None, typer.Option("--file", help="A strategy file instead of a stored name.")] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Bar file (default: a data/samples file for the symbol).")
    ] = None,
    slippage_bps: Annotated[str, typer.Option("--slippage-bps", help="Market/stop slippage, basis points.")] = "0",
    cash: Annotated[str, typer.Option("--cash", help="Initial cash.")] = "100000",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    all_signals: Annotated[
        bool,
        typer.Option(
            "--all-signals",
            help="Count every decision's signal (stored with the run; makes the decisions that could place no "
            "order, about 0.1 ms each).",
        ),
    ] = False,
) -> None:
    """Replay a strategy over history (no look-ahead), fill with IB commissions, print metrics, store the run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from services.replay.runs import resolve_inputs, run_replay, save_run

    problems = []
    if not start:
        problems.append(Problem("--from", "required"))
    if not end:
        problems.append(Problem("--to", "required"))
    if analyst not in ("offline", "llm"):
        problems.append(Problem("--analyst", f"must be offline or llm, got {analyst!r}"))
    if problems:
        raise InputError("replay", problems)
    start_d, end_d = _date(start, "--from"), _date(end, "--to")
    slip, initial = _decimal(slippage_bps, "--slippage-bps"), _decimal(cash, "--cash")
    cfg = settings()
    with db_session() as session:
        inputs = resolve_inputs(name=name, file=file, data=data, session=session)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True, disable=as_json) as bar:
        task = bar.add_task(f"replay {inputs.definition.name}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = run_replay(
            inputs,
            cfg,
            start=start_d,
            end=end_d,
            decide_every=decide_every,
            analyst="llm" if analyst == "llm" else "offline",
            slippage_bps=slip,
            initial_cash=initial,
            progress=progress,
        )
    with db_session() as session:
        run_id = save_run(session, result, all_signals=all_signals)
    if as_json:
        data_out: dict[str, Any] = result.to_json(equity_points=False, all_signals=all_signals)
        data_out["run_id"] = run_id
        console.print_json(json.dumps(data_out))
        return
    m = result.metrics
    console.print(
        f"{result.strategy} ({inputs.definition.symbol}) {result.params['first_bar'][:10]} .. "
        f"{result.params['last_bar'][:10]}: {len(result.decisions)} decisions, analyst {result.params['analyst']}, "
        f"data {inputs.data_source}",
        markup=False,
    )
    table = Table(title=f"replay run #{run_id}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("total return", _pct(m.total_return)),
        ("annualized return", _pct(m.annualized_return)),
        ("Sharpe (ann.)", _num(m.sharpe)),
        ("Sortino (ann.)", _num(m.sortino)),
        ("max drawdown", _pct(m.max_drawdown)),
        ("max drawdown duration (bars)", str(m.max_drawdown_duration)),
        ("trades (closed)", str(m.trades)),
        ("exits stop / target / signal / time", " / ".join(str(n) for n in result.exit_counts().values())),
        ("win rate", _pct(m.win_rate)),
        ("exposure", _pct(m.exposure)),
        ("commissions", f"{m.commissions:.2f}"),
        ("LLM cost (USD)", f"{m.llm_cost_usd:.4f}"),
        ("end equity", f"{m.end_equity:,.2f}"),
    ]
    summary = result.to_json(equity_points=False, all_signals=all_signals)
    passed = summary["decisions"] - summary["decisions_made"]
    rows.append(("decisions made / passed over", f"{summary['decisions_made']} / {passed}"))
    if "signals" in summary:
        counts = summary["signals"]
        rows.append(("signals BUY / SELL / HOLD / ABSTAIN", " / ".join(str(counts.get(a, 0)) for a in _ACTIONS)))
    if result.params["analyst"] == "llm":
        rows += [
            ("LLM requests / cached", f"{result.llm_requests} / {result.llm_cached}"),
            ("possibly contaminated", f"{result.contaminated} of {len(result.decisions)}"),
        ]
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)
    trades = Table(title="trades")
    for col in ("dir", "qty", "entry", "price", "exit", "price ", "P&L", "why"):
        trades.add_column(col, no_wrap=True)
    shown = result.trades[-15:]
    for t in shown:
        trades.add_row(
            t.direction,
            str(t.quantity),
            t.entry_time.date().isoformat(),
            str(t.entry_price),
            t.exit_time.date().isoformat() if t.exit_time else "",
            str(t.exit_price or ""),
            f"{t.pnl:.2f}" if t.pnl is not None else "",
            t.exit_reason or "",
        )
    if result.open_trade is not None:
        o = result.open_trade
        trades.add_row(o.direction, str(o.quantity), o.entry_time.date().isoformat(), str(o.entry_price),
                       "open", "", f"{o.pnl:.2f}" if o.pnl is not None else "", "(open)")  # fmt: skip
    if len(result.trades) > len(shown):
        console.print(f"(last {len(shown)} of {len(result.trades)} trades; --json for all)")
    console.print(trades)
    for warning in result.warnings:
        console.print(f"note: {warning}", markup=False)
