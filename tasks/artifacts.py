"""Lineage artifacts: one per step, under stable keys, so the Prefect UI shows each step's in and out.

Keys are ``<strategy>-<step>`` (lowercase, digits, dashes), so the Artifacts page keeps the latest
version of each and its history across runs. Nothing secret is ever put in an artifact.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import TaskRunContext

_KEY_BAD = re.compile(r"[^a-z0-9-]+")


def artifact_key(*parts: str) -> str:
    """Return a valid artifact key made of ``parts`` (lowercase, dashes)."""
    return _KEY_BAD.sub("-", "-".join(parts).lower()).strip("-")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Render rows as a GitHub-flavoured markdown table."""
    if not rows:
        return "_none_"
    cols = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(lines)


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    return markdown_table([{"field": k, "value": v} for k, v in pairs])


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def fenced(text: str, lang: str = "") -> str:
    fence = "````" if "```" in text else "```"
    return f"{fence}{lang}\n{text}\n{fence}"


def _in_run() -> bool:
    return TaskRunContext.get() is not None


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """Create a markdown artifact when running inside a task (a no-op when called directly)."""
    if _in_run():
        create_markdown_artifact(markdown, key=key, description=description)


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """Create a table artifact when running inside a task (a no-op when called directly)."""
    if _in_run():
        create_table_artifact(rows, key=key, description=description)
