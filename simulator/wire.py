"""TWS socket framing and field encoding (the legacy text protocol, server versions 157-178).

Every message is a 4-byte big-endian length followed by ``\\0``-terminated text fields. The handshake is the
only unframed part: the client first sends the raw bytes ``API\\0``, then one framed ``vMIN..MAX[ options]``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

API_PREFIX: Final = b"API\0"
UNSET_DOUBLE: Final = "1.7976931348623157E308"
UNSET_INTEGER: Final = "2147483647"
MAX_FRAME: Final = 16 * 1024 * 1024

Field = str | int | float | Decimal | bool | None


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid TWS API frame."""


def fmt(value: Field) -> str:
    """Return the wire text of one field: bools as 1/0, None as empty, floats in shortest round-trip form."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if value != value:  # NaN never goes on the wire
            return ""
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("-0", "") else text
    return str(value)


def encode(fields: Sequence[Field]) -> bytes:
    """Return one framed message: length prefix plus ``\\0``-terminated fields."""
    payload = "".join(fmt(f) + "\0" for f in fields).encode()
    return struct.pack(">I", len(payload)) + payload


def encode_raw(payload: bytes) -> bytes:
    """Frame an already encoded payload (used for the handshake reply)."""
    return struct.pack(">I", len(payload)) + payload


class FrameReader:
    """Incremental decoder: feed bytes, take complete messages as field lists."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[list[str]]:
        self._buffer += data
        messages: list[list[str]] = []
        while len(self._buffer) >= 4:
            (size,) = struct.unpack(">I", self._buffer[:4])
            if size > MAX_FRAME:
                raise ProtocolError(f"frame of {size} bytes exceeds the {MAX_FRAME} byte limit")
            if len(self._buffer) < 4 + size:
                break
            payload = self._buffer[4 : 4 + size].decode(errors="backslashreplace")
            self._buffer = self._buffer[4 + size :]
            fields = payload.split("\0")
            if fields and fields[-1] == "":
                fields.pop()
            messages.append(fields)
        return messages


def parse_version_range(text: str) -> tuple[int, int, str]:
    """Parse the client's ``vMIN..MAX[ options]`` greeting into (min, max, options)."""
    head, _, options = text.partition(" ")
    if not head.startswith("v"):
        raise ProtocolError(f"bad version greeting {text!r}")
    low, sep, high = head[1:].partition("..")
    try:
        lo = int(low)
        hi = int(high) if sep else lo
    except ValueError:
        raise ProtocolError(f"bad version greeting {text!r}") from None
    return lo, hi, options


def ib_time(ts: datetime, zone: str = "UTC") -> str:
    """Return ``YYYYmmdd HH:MM:SS <zone>`` for an aware datetime shown in ``zone``."""
    from zoneinfo import ZoneInfo

    local = ts.astimezone(ZoneInfo(zone))
    return f"{local:%Y%m%d %H:%M:%S} {zone}"


def epoch_seconds(ts: datetime) -> int:
    return int(ts.astimezone(UTC).timestamp())


def ints(values: Iterable[str]) -> list[int]:
    return [int(v) for v in values]
