"""Alembic migrations for ``models.tables``; run them through ``services.db.upgrade_schema``."""

from __future__ import annotations

from pathlib import Path
from typing import Final

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent
