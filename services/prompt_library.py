"""Shipped prompt templates (``<name>.v<version>.j2`` files) loaded into the versioned DB store."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy.orm import Session

from services.errors import InputError, Problem
from services.llm.prompts import read_prompt_file
from services.repositories import prompt_templates

SHIPPED_DIR: Final = Path(__file__).resolve().parents[1] / "examples" / "prompts"
_FILE_RE: Final = re.compile(r"^(?P<name>[a-z0-9][a-z0-9-]*)\.v(?P<version>\d+)\.j2$")


@dataclass(frozen=True)
class SeedReport:
    created: list[str]
    unchanged: list[str]
    updated: list[str]


def template_files(directory: Path = SHIPPED_DIR) -> list[tuple[str, int, Path]]:
    """Return (name, version, path) for every template file, ordered by name then version."""
    found: list[tuple[str, int, Path]] = []
    problems: list[Problem] = []
    for path in sorted(directory.glob("*.j2")):
        match = _FILE_RE.match(path.name)
        if match is None:
            problems.append(Problem(path.name, "template files are named <name>.v<version>.j2"))
            continue
        found.append((match["name"], int(match["version"]), path))
    if problems:
        raise InputError(str(directory), problems)
    return sorted(found, key=lambda item: (item[0], item[1]))


def seed_templates(session: Session, directory: Path = SHIPPED_DIR) -> SeedReport:
    """Store each file as exactly its version. A used version whose file changed is refused (immutable)."""
    report = SeedReport([], [], [])
    for name, version, path in template_files(directory):
        body = read_prompt_file(path)
        label = f"{name} v{version}"
        row = prompt_templates.get(session, name, version)
        if row is None:
            latest = prompt_templates.latest(session, name)
            expected = 1 if latest is None else latest.version + 1
            if version != expected:
                raise InputError(str(path), f"version {version} cannot be added before version {expected}")
            prompt_templates.new_version(session, name, body, description=f"shipped file {path.name}")
            report.created.append(label)
        elif row.body == body:
            report.unchanged.append(label)
        else:
            prompt_templates.update_body(session, name, version, body)
            report.updated.append(label)
    return report
