"""The type of the ``trader`` fixture (tests/conftest.py): ``trader(*args)`` runs the CLI and returns the result."""

from __future__ import annotations

from collections.abc import Callable

from click.testing import Result

Invoke = Callable[..., Result]
