"""Options shared by ``env.py`` and the schema check in ``services.db`` (so both compare the same way)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Enum as SAEnum
from sqlalchemy.types import JSON, TypeEngine

from models import tables


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render our column types as ``mt.<factory>()`` in generated revisions, enums as plain strings."""
    if type_ != "type":
        return False
    autogen_context.imports.add("from models import tables as mt")
    if isinstance(obj, tables.ExactDecimal):
        return f"mt.ExactDecimal({obj.precision}, {obj.scale})"
    if isinstance(obj, tables.UTCDateTime):
        return "mt.UTCDateTime()"
    if _is_json_doc(obj):
        return "mt.JsonDoc()"
    if isinstance(obj, SAEnum) and not obj.native_enum:
        return f"sa.String(length={obj.length})"
    return False


def _is_json_doc(obj: TypeEngine[Any]) -> bool:
    variants: dict[str, Any] = getattr(obj, "_variant_mapping", None) or {}
    return isinstance(obj, JSON) and "postgresql" in variants


def context_options(dialect_name: str) -> dict[str, Any]:
    """Return the keyword arguments for ``EnvironmentContext.configure`` / ``MigrationContext.configure``."""
    return {
        "target_metadata": tables.Base.metadata,
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
        "compare_server_default": True,
        "render_item": render_item,
    }
