"""Reading input files with a size cap: a wrong path (``/dev/zero``, a disk image) is an error, never a MemoryError.

Each kind of input has one limit, defined here: :func:`read_bytes_capped` reads at most ``limit + 1`` bytes and
refuses the file when there are more, so nothing larger than the limit is ever held in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from services.errors import InputError

__all__ = [
    "MAX_BAR_FILE_BYTES",
    "MAX_PROMPT_FILE_BYTES",
    "MAX_STRATEGY_FILE_BYTES",
    "read_bytes_capped",
    "read_text_capped",
]

MAX_STRATEGY_FILE_BYTES: Final = 1 << 20  # 1 MiB: the shipped strategies are ~1 kB
MAX_PROMPT_FILE_BYTES: Final = 256 << 10  # 256 KiB: the rendered prompt itself is capped at 200,000 characters
MAX_BAR_FILE_BYTES: Final = 128 << 20  # 128 MiB: ~2 million one-minute bars; parsing takes ~10x that in memory


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n >> 10} KiB"


def read_bytes_capped(path: Path, limit: int, *, what: str) -> bytes:
    """Return the content of ``path``; raise :class:`InputError` when it is missing, unreadable or over ``limit``."""
    source = str(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise InputError(source, "file not found") from None
    except IsADirectoryError:
        raise InputError(source, "is a directory, not a file") from None
    except OSError as exc:
        raise InputError(source, f"cannot read file: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(source, f"larger than the {_size(limit)} limit for {what}")
    return data


def read_text_capped(path: Path, limit: int, *, what: str) -> str:
    """Like :func:`read_bytes_capped`, decoded as UTF-8 (a BOM is dropped); undecodable bytes are an error."""
    data = read_bytes_capped(path, limit, what=what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
