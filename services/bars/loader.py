"""Load a bar file of any known format into the canonical bar frame (see ``models.bars``).

The format is recognised from the first line(s) or given by name (see ``services.bars.formats``).
Output timestamps are bar starts, ``datetime64[ns, UTC]``; prices and volume are float64 in the
file's own units (split/dividend adjustment as in the file: ``adj_close`` is kept when present).
Rows keep the file's order, duplicates included, so validation can report them.

Every unreadable input raises ``services.errors.InputError(source, problems)``: each problem names
the line (1-based, header included) where a value is wrong.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from models.bars import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, TIMESTAMP
from models.enums import BarSize
from services.bars.formats import (
    COLUMN_ALIASES,
    FORMATS,
    NINJATRADER_COLUMNS,
    FormatSpec,
    detect_format,
    guess_delimiter,
    normalise_header,
)
from services.bars.sizes import epoch_ns, infer_bar_size, modal_step_seconds
from services.errors import InputError, Problem
from services.files import MAX_BAR_FILE_BYTES, read_bytes_capped

MAX_PROBLEMS: Final = 20
NUMERIC_COLUMNS: Final[tuple[str, ...]] = tuple(c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c != TIMESTAMP)
_TZ_SUFFIX: Final = re.compile(r"^(\d{8}\s+\d{2}:\d{2}:\d{2})\s+(\S+)$")
_OFFSET_SUFFIX: Final = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")
_ISO_DATE_ONLY: Final = r"\d{4}-\d{2}-\d{2}"
_TOKENIZE_ERROR: Final = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
# Bar timestamps are nanoseconds (valid 1677..2262); the exchange calendars start in the 1880s.
FIRST_YEAR: Final = 1900
LAST_YEAR: Final = 2199


@dataclass(frozen=True)
class LoadedBars:
    """A loaded bar file: the canonical frame plus what was detected while reading it."""

    frame: pd.DataFrame
    fmt: str
    path: Path | None
    bar_size: BarSize | None
    source_tz: str | None  # zone naive timestamps were read in; None for date-only (daily) files
    notes: list[str] = field(default_factory=list)


def load_bars(path: str | Path, *, fmt: str | None = None, source_tz: str | None = None) -> LoadedBars:
    """Read the bar file at ``path`` into the canonical frame.

    ``fmt`` forces a format name (``yahoo``, ``zipline``, ``ib``, ``ninjatrader``,
    ``mplfinance_intraday``, ``csv``); ``source_tz`` is the IANA zone of naive timestamps and
    overrides the format's default. Raises ``InputError`` naming the file and the problem.
    """
    file = Path(path)
    source = str(path)
    if not file.exists():
        raise InputError(source, "file not found")
    if not file.is_file():
        raise InputError(source, "not a regular file")
    data = read_bytes_capped(file, MAX_BAR_FILE_BYTES, what="a bar file")
    return parse_bars(data, source=source, fmt=fmt, source_tz=source_tz, path=file)


def parse_bars(
    data: str | bytes,
    *,
    source: str = "<memory>",
    fmt: str | None = None,
    source_tz: str | None = None,
    path: Path | None = None,
) -> LoadedBars:
    """Parse bar file content given as text or bytes; same rules and errors as :func:`load_bars`."""
    text = _decode(data, source)
    lines = text.splitlines()
    if not text.strip():
        raise InputError(source, "file is empty")
    if not lines[0].strip():
        raise InputError(source, "line 1: blank first line (expected a header or a bar)")
    zone = _check_zone(source_tz, source) if source_tz is not None else None
    spec = _resolve_format(fmt, lines, source)
    _check_field_counts(lines, spec, source)
    raw, first_data_line = _read_table(text, spec, source)
    notes: list[str] = []
    blank = raw.isna().all(axis=1).to_numpy()
    line_numbers = np.arange(len(raw)) + first_data_line
    if blank.any():
        notes.append(f"skipped {int(blank.sum())} blank line(s)")
        raw = raw.loc[~blank]
        line_numbers = line_numbers[~blank]
    if raw.empty:
        raise InputError(source, "no data rows")
    raw = raw.reset_index(drop=True)
    problems: list[Problem] = []
    numbers = _numeric_columns(raw, line_numbers, problems)
    stamps, used_tz, stamp_notes = _timestamps(raw[TIMESTAMP], line_numbers, spec, zone, source_tz, problems)
    if problems:
        raise InputError(source, _capped(problems))
    assert stamps is not None  # no problems means every timestamp parsed
    notes += stamp_notes
    if spec.bar_end_labelled and used_tz is not None:
        step = modal_step_seconds(stamps) or 60
        stamps = stamps - pd.Timedelta(seconds=step)
        notes.append(f"bar-end labels shifted back one bar ({step} s) to bar start")
    frame = pd.DataFrame({TIMESTAMP: stamps.astype("datetime64[ns, UTC]")})
    for name, values in numbers.items():
        frame[name] = values
    dropped = [c for c in raw.attrs.get("unmapped", []) if c]
    if dropped:
        notes.append(f"ignored columns: {', '.join(dropped)}")
    if spec.name == "ib":
        notes.append("volume as in the file (IB reported US stock volume in lots of 100 shares)")
    _order_notes(frame, notes)
    return LoadedBars(
        frame=frame,
        fmt=spec.name,
        path=path,
        bar_size=infer_bar_size(frame[TIMESTAMP]),
        source_tz=used_tz,
        notes=notes,
    )


def _decode(data: str | bytes, source: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(source, f"not UTF-8 text (bad byte at offset {exc.start})") from None


def _check_zone(name: str, source: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            source, f"unknown timezone {name!r} (expected an IANA name such as America/New_York)"
        ) from None
    return name


def _resolve_format(fmt: str | None, lines: Sequence[str], source: str) -> FormatSpec:
    if fmt is not None:
        spec = FORMATS.get(fmt)
        if spec is None:
            raise InputError(source, f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
        return spec
    first = lines[0]
    name = detect_format(first, lines[1] if len(lines) > 1 else None)
    if name is not None:
        return FORMATS[name]
    delimiter = guess_delimiter(first)
    if delimiter is None:
        raise InputError(source, f"line 1: unrecognised format, no delimiter found in {first[:60]!r}")
    if delimiter not in (",", ";"):
        raise InputError(source, f"line 1: unsupported delimiter {delimiter!r} (expected ',' or NinjaTrader ';')")
    if delimiter == ";":
        raise InputError(
            source, "line 1: ';'-separated but not the NinjaTrader layout 'yyyyMMdd HHmmss;open;high;low;close;volume'"
        )
    raise InputError(source, f"line 1: unrecognised header, no date/timestamp column in {first[:80]!r}")


def _check_field_counts(lines: Sequence[str], spec: FormatSpec, source: str) -> None:
    # pandas silently drops or shifts extra fields in some layouts; a ragged row is an input error.
    expected = lines[0].count(spec.delimiter) if spec.has_header else len(NINJATRADER_COLUMNS) - 1
    problems = [
        Problem(f"line {n}", f"expected {expected + 1} fields, found {line.count(spec.delimiter) + 1}")
        for n, line in enumerate(lines, start=1)
        if line.strip() and line.count(spec.delimiter) != expected
    ]
    if problems:
        raise InputError(source, _capped(problems))


def _read_table(text: str, spec: FormatSpec, source: str) -> tuple[pd.DataFrame, int]:
    # Returns the raw table with canonical column names and the file line of its first row.
    try:
        if spec.has_header:
            header = [str(c) for c in pd.read_csv(io.StringIO(text), sep=spec.delimiter, nrows=0).columns]
            mapping = _map_header(header, source)
            date_col = next(h for h, c in mapping.items() if c == TIMESTAMP)
            raw = pd.read_csv(
                io.StringIO(text),
                sep=spec.delimiter,
                dtype={date_col: str},
                skip_blank_lines=False,
                usecols=list(mapping),
            )
            raw = raw.rename(columns=mapping)
            raw.attrs["unmapped"] = [h.strip() for h in header if h not in mapping]
            return raw, 2
        raw = pd.read_csv(
            io.StringIO(text),
            sep=spec.delimiter,
            header=None,
            names=list(NINJATRADER_COLUMNS),
            dtype={TIMESTAMP: str},
            skip_blank_lines=False,
        )
        return raw, 1
    except pd.errors.ParserError as exc:
        match = _TOKENIZE_ERROR.search(str(exc))
        if match:
            expected, line, saw = match.groups()
            raise InputError(source, [Problem(f"line {line}", f"expected {expected} fields, found {saw}")]) from None
        raise InputError(source, f"cannot parse as {spec.name}: {exc}") from None
    except pd.errors.EmptyDataError:
        raise InputError(source, "file is empty") from None


def _map_header(header: list[str], source: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for name in header:
        canonical = COLUMN_ALIASES.get(normalise_header(name))
        if canonical is None:
            continue
        if canonical in mapping.values():
            other = next(h for h, c in mapping.items() if c == canonical)
            raise InputError(source, f"line 1: columns {other.strip()!r} and {name.strip()!r} both mean {canonical}")
        mapping[name] = canonical
    missing = [c for c in REQUIRED_COLUMNS if c not in mapping.values()]
    if missing:
        found = ", ".join(h.strip() for h in header)
        raise InputError(source, f"line 1: missing required column(s) {', '.join(missing)} (header: {found})")
    return mapping


def _numeric_columns(raw: pd.DataFrame, lines: np.ndarray, problems: list[Problem]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in NUMERIC_COLUMNS:
        if name not in raw.columns:
            continue
        column = raw[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            out[name] = column.to_numpy(dtype=np.float64)
            continue
        as_text = column.astype("string").str.strip()
        values = pd.to_numeric(as_text, errors="coerce")
        bad = values.isna() & as_text.notna() & (as_text != "")
        for i in np.flatnonzero(bad.to_numpy()):
            problems.append(Problem(f"line {lines[i]}", f"{name} {as_text.iloc[i]!r} is not a number"))
        out[name] = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _timestamps(
    column: pd.Series,
    lines: np.ndarray,
    spec: FormatSpec,
    zone: str | None,
    given_tz: str | None,
    problems: list[Problem],
) -> tuple[pd.Series | None, str | None, list[str]]:
    notes: list[str] = []
    text = column.astype("string").str.strip()
    missing = text.isna() | (text == "")
    for i in np.flatnonzero(missing.to_numpy()):
        problems.append(Problem(f"line {lines[i]}", "missing timestamp"))
    if spec.name == "ib":
        text, zone = _ib_zone_suffix(text, zone, notes)
    if spec.date_formats == ("",):
        _mixed_offsets(text, lines, problems)
        if problems:
            return None, None, notes
    parsed, date_only, aware = _parse_stamps(text, spec)
    bad = parsed.isna() & ~missing
    expected = " or ".join(f or "ISO 8601" for f in spec.date_formats)
    for i in np.flatnonzero(bad.to_numpy()):
        problems.append(Problem(f"line {lines[i]}", f"cannot read timestamp {text.iloc[i]!r} (expected {expected})"))
    years = parsed.dt.year
    for i in np.flatnonzero(((years < FIRST_YEAR) | (years > LAST_YEAR)).to_numpy()):
        problems.append(
            Problem(
                f"line {lines[i]}",
                f"timestamp {text.iloc[i]!r} is outside the supported years {FIRST_YEAR}..{LAST_YEAR}",
            )
        )
    if problems:
        return None, None, notes
    if aware:
        if given_tz is not None:
            notes.append("source_tz ignored: timestamps carry their own UTC offset")
        return parsed.dt.tz_convert("UTC"), "UTC", notes
    if date_only:
        if given_tz is not None:
            notes.append("source_tz ignored: dates are session dates, labelled 00:00 UTC")
        return parsed.dt.tz_localize("UTC"), None, notes
    tz = zone or spec.default_tz
    if tz is None:
        problems.append(Problem("", "timestamps have no timezone: pass source_tz (e.g. America/New_York)"))
        return None, None, notes
    try:
        local = parsed.dt.tz_localize(tz, ambiguous="infer", nonexistent="raise")
    except ValueError as exc:
        problems.append(Problem("", f"timestamps do not fit timezone {tz}: {exc}"))
        return None, None, notes
    if zone is None and spec.default_tz not in (None, "UTC"):
        notes.append(f"naive timestamps read as {tz} (default for format {spec.name})")
    return local.dt.tz_convert("UTC"), tz, notes


def _mixed_offsets(text: pd.Series, lines: np.ndarray, problems: list[Problem]) -> None:
    # A file mixing "…+00:00" and offset-free timestamps has no one reading: naive rows are not silently UTC.
    present = text.notna() & (text != "")
    aware = text.str.contains(_OFFSET_SUFFIX, na=False).to_numpy()
    positions = np.flatnonzero(present.to_numpy())
    if len(positions) == 0 or aware[positions].all() or not aware[positions].any():
        return
    first = int(positions[0])
    differs = "has no UTC offset while line {} has one" if aware[first] else "has a UTC offset while line {} has none"
    for i in positions[aware[positions] != aware[first]]:
        problems.append(
            Problem(
                f"line {lines[i]}",
                f"timestamp {text.iloc[i]!r} {differs.format(lines[first])} "
                "(mixed timezone-aware and naive timestamps)",
            )
        )


def _ib_zone_suffix(text: pd.Series, zone: str | None, notes: list[str]) -> tuple[pd.Series, str | None]:
    # Newer TWS versions append the zone name: "20120627 10:10:00 US/Eastern".
    first = text.dropna()
    match = _TZ_SUFFIX.match(first.iloc[0]) if len(first) else None
    if match is None:
        return text, zone
    parts = text.str.extract(_TZ_SUFFIX.pattern)
    zones = parts[1].dropna().unique()
    if len(zones) == 1 and zone is None:
        try:
            ZoneInfo(str(zones[0]))
        except (ZoneInfoNotFoundError, ValueError):
            return text, zone
        notes.append(f"timestamps carry zone {zones[0]}")
        return parts[0].fillna(text), str(zones[0])
    return parts[0].fillna(text), zone


def _parse_stamps(text: pd.Series, spec: FormatSpec) -> tuple[pd.Series, bool, bool]:
    # Returns (parsed, date_only, tz_aware).
    if spec.date_formats == ("",):
        first = text.dropna()
        sample = first.iloc[0] if len(first) else ""
        if _OFFSET_SUFFIX.search(sample):
            return pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce"), False, True
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
        if parsed.dt.tz is not None:
            return parsed, False, True
        date_only = bool(text.dropna().str.fullmatch(_ISO_DATE_ONLY).all())
        return parsed, date_only, False
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us]")
    used_time = False
    for fmt in spec.date_formats:
        todo = parsed.isna() & text.notna()
        if not todo.any():
            break
        attempt = pd.to_datetime(text[todo], format=fmt, errors="coerce")
        if attempt.notna().any():
            parsed.loc[todo] = attempt.astype("datetime64[us]")
            used_time = used_time or "%H" in fmt
    return parsed, not used_time, False


def _order_notes(frame: pd.DataFrame, notes: list[str]) -> None:
    steps = np.diff(epoch_ns(frame[TIMESTAMP]))
    if (steps < 0).any():
        notes.append(f"rows are not in time order ({int((steps < 0).sum())} step(s) go back)")
    if (steps == 0).any():
        notes.append(f"{int((steps == 0).sum())} duplicate timestamp(s)")


def _capped(problems: list[Problem]) -> list[Problem]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[:MAX_PROBLEMS], Problem("", f"... and {len(problems) - MAX_PROBLEMS} more problem(s)")]
