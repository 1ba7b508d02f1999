"""``trader prompts``: versioned prompt templates (list, show, create, new-version, edit) and their performance.

A version is immutable once a signal used it: ``edit`` only changes versions never used; anything else is a
``new-version``. Every body must compile in the sandboxed Jinja2 environment the analyst renders with.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import cli_errors, console, db_session
from services.errors import InputError, Problem

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from services.prompt_performance import PromptScore

app = typer.Typer(help="Versioned prompt templates and how well their signals did.", no_args_is_help=True)

FileOption = Annotated[Path, typer.Option("--file", "-f", help="Jinja2 template file.")]
DescriptionOption = Annotated[str | None, typer.Option("--description", help="What this version changes.")]


def read_body(file: Path, name: str) -> str:
    """Read ``file`` and trial-render it in the bounded sandbox; raise :class:`InputError` naming the file or line."""
    from services.llm.prompts import check_template, read_prompt_file

    body = read_prompt_file(file)
    if not body.strip():
        raise InputError(str(file), "the template is empty")
    check_template(body, name=f"{name} ({file})")
    return body


@app.command("list")
@cli_errors
def list_() -> None:
    """List every template version: used or not, and its body's sha256."""
    from rich.table import Table

    from services.repositories import prompt_templates as repo

    table = Table("name", "version", "used since", "sha256", "description")
    count = 0
    with db_session() as session:
        for name in repo.names(session):
            for row in repo.versions(session, name):
                used = row.first_used_at.isoformat(timespec="seconds") if row.first_used_at else "unused"
                table.add_row(row.name, str(row.version), used, row.body_sha256[:12], row.description or "")
                count += 1
    if count:
        console.print(table)
    else:
        console.print("no prompt templates (run `trader init` to load the shipped ones)")


@app.command("show")
@cli_errors
def show(
    name: str,
    version: Annotated[int | None, typer.Option("--version", "-v", help="Version (default: the latest).")] = None,
) -> None:
    """Print one template version (the latest by default) and its body."""
    from services.repositories import prompt_templates as repo

    with db_session() as session:
        row = repo.require(session, name, version)
        used = row.first_used_at.isoformat(timespec="seconds") if row.first_used_at else "never (editable)"
        console.print(f"{row.name} v{row.version}  sha256 {row.body_sha256}", markup=False)
        console.print(f"used since: {used}", markup=False)
        if row.description:
            console.print(f"description: {row.description}", markup=False)
        console.print("")
        console.print(row.body, markup=False, end="" if row.body.endswith("\n") else "\n")


@app.command("create")
@cli_errors
def create(name: str, file: FileOption, description: DescriptionOption = None) -> None:
    """Store FILE as version 1 of a new template NAME."""
    from services.repositories import prompt_templates as repo

    body = read_body(file, name)
    with db_session() as session:
        row = repo.create(session, name, body, description)
        console.print(f"created {row.name} v{row.version} (sha256 {row.body_sha256[:12]})", markup=False)


@app.command("new-version")
@cli_errors
def new_version(name: str, file: FileOption, description: DescriptionOption = None) -> None:
    """Store FILE as the next version of the existing template NAME (an unchanged body adds nothing)."""
    from services.repositories import prompt_templates as repo

    body = read_body(file, name)
    with db_session() as session:
        latest = repo.require(session, name)
        row = repo.new_version(session, name, body, description)
        if row.id == latest.id:
            console.print(f"unchanged: {name} v{row.version} has the same body; nothing added", markup=False)
        else:
            console.print(f"added {row.name} v{row.version} (sha256 {row.body_sha256[:12]})", markup=False)


@app.command("edit")
@cli_errors
def edit(
    name: str,
    version: Annotated[int, typer.Option("--version", "-v", help="The (unused) version to change.")],
    file: FileOption,
    description: DescriptionOption = None,
) -> None:
    """Replace the body of a version no signal has used yet (a used version is immutable: add a new version)."""
    from services.repositories import prompt_templates as repo

    body = read_body(file, name)
    with db_session() as session:
        row = repo.update_body(session, name, version, body, description)
        console.print(f"updated {row.name} v{row.version} (sha256 {row.body_sha256[:12]})", markup=False)


# ---------------------------------------------------------------------------------------------------------------------
# Performance


def _pct(value: Any, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{float(value) * 100:+.2f} %" if signed else f"{float(value) * 100:.1f} %"


def score_lines(score: PromptScore) -> list[str]:
    """The printed form of one stored score (also used by the flow's markdown)."""
    m = score.metrics
    actions = ", ".join(f"{k} {v}" for k, v in m.get("by_action", {}).items())
    lines = [
        f"{score.template_name} v{score.template_version}  day {score.day.isoformat()}",
        f"  signals {m.get('signals', 0)} ({actions}); abstain rate {_pct(m.get('abstain_rate'))}; "
        f"unscorable {m.get('unscorable', 0)}",
    ]
    for horizon, h in m.get("horizons", {}).items():
        lines.append(
            f"  +{horizon} bars: hit rate {_pct(h['hit_rate'])} of {h['scored']} scored, {h['pending']} pending; "
            f"mean return {_pct(h['mean_return'], signed=True)}"
        )
    buckets = [b for b in m.get("calibration", []) if b["count"] or b["pending"]]
    if buckets:
        lines.append(f"  calibration at +{m.get('calibration_horizon')} bars:")
        for b in buckets:
            mean = "-" if b["mean_confidence"] is None else f"{b['mean_confidence']:.3f}"
            lines.append(
                f"    confidence {b['bucket']}: {b['count']} scored, mean confidence {mean}, "
                f"hit rate {_pct(b['hit_rate'])}, {b['pending']} pending"
            )
    cost = m.get("cost_per_signal")
    lines.append(
        f"  LLM: {m.get('llm_calls', 0)} calls ({m.get('cached_calls', 0)} cached), "
        f"total ${m.get('llm_cost_usd', '0')}, per signal {'-' if cost is None else '$' + cost}"
    )
    return lines


@app.command("performance")
@cli_errors
def performance(
    template: Annotated[str | None, typer.Option("--template", "-t", help="Only this template name.")] = None,
    day: Annotated[
        str | None,
        typer.Option("--day", "-d", help="Day YYYY-MM-DD (default: the newest stored day; with --compute today, ET)."),
    ] = None,
    compute: Annotated[
        bool, typer.Option("--compute", help="Score the day now (forward prices from the configured broker).")
    ] = False,
) -> None:
    """Print the stored prompt scores of a day (hit rate, forward returns, calibration, LLM cost per signal)."""
    from services.prompt_performance import parse_day, stored_scores
    from services.repositories import prompt_templates as repo

    wanted = parse_day(day) if (day is not None or compute) else None
    with db_session() as session:
        if template is not None and template not in repo.names(session):
            raise InputError("prompts performance", [Problem("--template", f"no prompt template {template!r}")])
        if compute:
            assert wanted is not None
            _compute(session, wanted)
        scores = stored_scores(session, day=wanted, template=template)
    if wanted is None and scores:  # newest stored day only
        scores = [s for s in scores if s.day == scores[0].day]
    if not scores:
        where = f" for {wanted.isoformat()}" if wanted else ""
        console.print(f"no stored prompt scores{where}; compute them with --compute", markup=False)
        return
    for score in scores:
        for line in score_lines(score):
            console.print(line, markup=False)


def _compute(session: Session, day: dt.date) -> None:
    from services.prompt_performance import BrokerForwardBars, score_prompts
    from services.runtime import get_runtime

    runtime = get_runtime()
    try:
        scores = score_prompts(session, day, BrokerForwardBars(runtime.broker(), runtime.clock))
    finally:
        runtime.close()
    console.print(f"scored {len(scores)} template versions for {day.isoformat()}", markup=False)
