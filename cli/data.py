"""``trader data``: inspect bar files (format, range, bar size, validation issues).

Exit codes: 0 the file was read (validation issues are reported, not fatal), 2 the file cannot be read
(one line on stderr naming the file and the problem).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import EXIT_INPUT, cli_errors, console, fail
from services.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from services.bars import LoadedBars
    from services.bars.validation import ValidationResult

app = typer.Typer(help="Inspect bar data files.", no_args_is_help=True)

MAX_ISSUES_SHOWN = 50


@app.callback()
def data() -> None:
    """Inspect bar data files."""
    # A callback keeps ``data`` a command group even while it has a single command.


@app.command("inspect")
@cli_errors
def inspect(
    path: Annotated[Path, typer.Argument(help="Bar file (CSV of a known format, or NinjaTrader ';' export).")],
    source_tz: Annotated[
        str | None, typer.Option("--source-tz", help="IANA zone of naive timestamps (overrides the format default).")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="Force a format: yahoo, zipline, ib, ninjatrader, mplfinance_intraday, csv."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of text.")] = False,
    validate: Annotated[bool, typer.Option("--validate/--no-validate", help="Run the validation rules.")] = True,
) -> None:
    """Print rows, first/last bar (UTC), bar size, format, columns and validation issues of PATH."""
    from services.bars import load_bars
    from services.bars.validation import validate_bars

    try:
        loaded = load_bars(path, fmt=fmt, source_tz=source_tz)
        result = validate_bars(loaded.frame, bar_size=loaded.bar_size) if validate else None
    except InputError as exc:
        raise fail(f"error: {one_line(exc)}", EXIT_INPUT) from None
    report = build_report(loaded, result)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_text(report)


def one_line(exc: InputError) -> str:
    """Return ``source: first problem`` plus how many more there are, on a single line."""
    first = str(exc.problems[0]) if exc.problems else "unreadable"
    more = len(exc.problems) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
    return f"{exc.source}: {first}{suffix}".replace("\n", " ")


def build_report(loaded: LoadedBars, result: ValidationResult | None) -> dict[str, Any]:
    """Return the inspection as plain JSON-ready data."""
    stamps = loaded.frame["timestamp"]
    report: dict[str, Any] = {
        "path": str(loaded.path),
        "format": loaded.fmt,
        "rows": len(loaded.frame),
        "first_bar": _iso(stamps.iloc[0]) if len(stamps) else None,
        "last_bar": _iso(stamps.iloc[-1]) if len(stamps) else None,
        "bar_size": loaded.bar_size.value if loaded.bar_size else None,
        "source_tz": loaded.source_tz,
        "columns": list(loaded.frame.columns),
        "notes": list(loaded.notes),
        "validated": result is not None,
    }
    if result is not None:
        report |= {
            "passed": result.passed,
            "rows_with_issues": result.rows_with_issues,
            "rule_counts": result.rule_counts,
            "issues": [
                {"timestamp": _iso(i.timestamp) if i.timestamp else None, "rule": i.rule, "detail": i.detail}
                for i in result.issues
            ],
        }
    return report


def print_text(report: dict[str, Any]) -> None:
    rows = [
        ("file", report["path"]),
        ("format", report["format"]),
        ("rows", f"{report['rows']:,}"),
        ("first bar", report["first_bar"]),
        ("last bar", report["last_bar"]),
        ("bar size", report["bar_size"] or "irregular"),
        ("source tz", report["source_tz"] or "none (dates are session dates, 00:00 UTC)"),
        ("columns", ", ".join(report["columns"])),
    ]
    rows += [("note", note) for note in report["notes"]]
    for label, value in rows:
        console.print(f"{label:<10} {value}", markup=False)
    if not report["validated"]:
        return
    issues = report["issues"]
    counts = ", ".join(f"{rule}: {n}" for rule, n in report["rule_counts"].items())
    console.print(f"{'issues':<10} {len(issues)}" + (f" ({counts})" if counts else ""), markup=False)
    for issue in issues[:MAX_ISSUES_SHOWN]:
        console.print(f"  {issue['rule']:<21} {issue['timestamp'] or 'batch':<21} {issue['detail']}", markup=False)
    if len(issues) > MAX_ISSUES_SHOWN:
        console.print(f"  ... and {len(issues) - MAX_ISSUES_SHOWN} more (use --json for all)", markup=False)


def _iso(value: datetime | pd.Timestamp) -> str:
    import pandas as pd

    text: str = pd.Timestamp(value).tz_convert("UTC").isoformat()
    return text.replace("+00:00", "Z")
