"""Prompt templates: numbered versions per name, immutable once used.

A version is "used" as soon as a prompt rendered from it was sent (:func:`mark_used`); from then on its body can
never change, so every stored signal can be traced to the exact text that produced it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.tables import PromptTemplate, utc_now
from services.errors import InputError, Problem
from services.llm.prompts import check_template
from services.repositories._common import check_text, raise_problems, require_aware

_SOURCE = "prompt template"


def body_sha256(body: str) -> str:
    """Return the hex SHA-256 of ``body`` (UTF-8)."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _validate(name: str, body: str) -> None:
    problems: list[Problem] = []
    check_text(problems, "name", name, max_len=128)
    check_text(problems, "body", body)
    raise_problems(f"{_SOURCE} {name!r}", problems)
    check_template(body, name=name)  # syntax and the render bounds, with a sample context


def get(session: Session, name: str, version: int) -> PromptTemplate | None:
    """Return version ``version`` of template ``name``, or ``None``."""
    return session.scalars(
        select(PromptTemplate).where(PromptTemplate.name == name, PromptTemplate.version == version)
    ).one_or_none()


def latest(session: Session, name: str) -> PromptTemplate | None:
    """Return the highest version of template ``name``, or ``None``."""
    return session.scalars(
        select(PromptTemplate).where(PromptTemplate.name == name).order_by(PromptTemplate.version.desc()).limit(1)
    ).one_or_none()


def require(session: Session, name: str, version: int | None = None) -> PromptTemplate:
    """Return the given version (the latest when ``None``); raise :class:`InputError` if missing."""
    row = latest(session, name) if version is None else get(session, name, version)
    if row is None:
        wanted = f"{name!r}" if version is None else f"{name!r} version {version}"
        raise InputError(_SOURCE, [Problem("name", f"no prompt template {wanted}")])
    return row


def versions(session: Session, name: str) -> Sequence[PromptTemplate]:
    """Return every version of template ``name``, oldest first."""
    return session.scalars(
        select(PromptTemplate).where(PromptTemplate.name == name).order_by(PromptTemplate.version)
    ).all()


def names(session: Session) -> Sequence[str]:
    """Return the distinct template names, sorted."""
    return session.scalars(select(PromptTemplate.name).distinct().order_by(PromptTemplate.name)).all()


def _insert(session: Session, name: str, version: int, body: str, description: str | None) -> PromptTemplate:
    row = PromptTemplate(name=name, version=version, body=body, body_sha256=body_sha256(body), description=description)
    session.add(row)
    session.flush()
    return row


def create(session: Session, name: str, body: str, description: str | None = None) -> PromptTemplate:
    """Create version 1 of a new template; raise :class:`InputError` if the name exists."""
    _validate(name, body)
    if latest(session, name) is not None:
        raise InputError(_SOURCE, [Problem("name", f"prompt template {name!r} already exists; add a new version")])
    return _insert(session, name, 1, body, description)


def new_version(session: Session, name: str, body: str, description: str | None = None) -> PromptTemplate:
    """Add the next version of ``name`` (version 1 if new). An unchanged body returns the latest version as is."""
    _validate(name, body)
    current_max = session.scalar(select(func.max(PromptTemplate.version)).where(PromptTemplate.name == name))
    if current_max is not None:
        newest = get(session, name, current_max)
        if newest is not None and newest.body_sha256 == body_sha256(body):
            return newest
    return _insert(session, name, (current_max or 0) + 1, body, description)


def update_body(session: Session, name: str, version: int, body: str, description: str | None = None) -> PromptTemplate:
    """Change the body of a version never used; raise :class:`InputError` once it has been used."""
    _validate(name, body)
    row = require(session, name, version)
    if row.body == body and description in (None, row.description):
        return row
    if row.first_used_at is not None:
        raise InputError(
            _SOURCE,
            [
                Problem(
                    f"{name} v{version}",
                    f"used since {row.first_used_at.isoformat()}: immutable, create a new version instead",
                )
            ],
        )
    row.body = body
    row.body_sha256 = body_sha256(body)
    if description is not None:
        row.description = description
    session.flush()
    return row


def mark_used(session: Session, template: PromptTemplate, at: dt.datetime | None = None) -> PromptTemplate:
    """Record the first use of ``template`` (later calls keep the first time)."""
    if template.first_used_at is None:
        template.first_used_at = utc_now() if at is None else require_aware(_SOURCE, "at", at)
        session.flush()
    return template
