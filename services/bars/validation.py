"""Validate a canonical bar frame: row rules with Great Expectations, calendar and split checks in pandas.

Rules (stable names, used in issues, the CLI and the database):

====================  ======  ===================================================================
rule                  level   meaning
====================  ======  ===================================================================
not_null              row     timestamp, open, high, low, close, volume present (GE)
finite                row     open, high, low, close, volume (and adj_close) not +/-infinity
price_positive        row     open, high, low, close > 0 (GE)
ohlc_consistency      row     high >= open, close, low; low <= open, close (GE)
volume_non_negative   row     volume >= 0 (GE)
timestamp_unique      row     no two bars share a timestamp (GE; every copy is flagged)
timestamp_increasing  row     each timestamp strictly after the previous row's (GE)
non_session_date      row     daily bar on a date that is not an exchange session
missing_session       batch   exchange session between the first and last bar with no bar
split_like_jump       row     close-to-close move that looks like an unadjusted split, see below
====================  ======  ===================================================================

Split-like jumps. With ``adj_close``, a move is suspicious only if ``adj_close`` does not move with
``close``: the *unexplained* factor ``(close_t / close_t-1) / (adj_t / adj_t-1)`` is compared with
``SPLIT_UNEXPLAINED_MAX`` (15%). A real move shows in both columns (ORCL's +31% on 1999-06-16 moves
``adj_close`` by the same +31%, so it is not flagged), while dividends leave an unexplained part of a
few percent only. An unadjusted split in a file whose ``adj_close`` is adjusted shows as e.g. a
factor of 7 (7:1) and is flagged. Without ``adj_close`` nothing can explain a move, so any
close-to-close move beyond ``SPLIT_MOVE_MAX`` (40%) is flagged (AAPL's 7:1 split of 2014-06-09:
-85%); smaller splits such as 3:2 (-33%) are then not detected.

Calendar checks run for daily bars only (``bar_size`` 1 day, given or inferred); a daily bar's date
is its UTC date when labelled 00:00 UTC (the loader's convention), otherwise its New York date.

Great Expectations is imported on first use (6-11 s) and one ephemeral context and suite are kept
per process, so warm validations cost tens of milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from models.bars import FLAGGED, PRICE_COLUMNS, REQUIRED_COLUMNS, TIMESTAMP
from models.enums import BadRowPolicy, BarSize
from services import calendar
from services.bars.sizes import all_midnight_utc, infer_bar_size
from services.errors import DataError, InputError

RULE_NOT_NULL: Final = "not_null"
RULE_FINITE: Final = "finite"
RULE_PRICE_POSITIVE: Final = "price_positive"
RULE_OHLC: Final = "ohlc_consistency"
RULE_VOLUME: Final = "volume_non_negative"
RULE_UNIQUE: Final = "timestamp_unique"
RULE_INCREASING: Final = "timestamp_increasing"
RULE_NON_SESSION: Final = "non_session_date"
RULE_MISSING_SESSION: Final = "missing_session"
RULE_SPLIT: Final = "split_like_jump"
# Bumped when the Great Expectations suite changes what it finds: ValidatedHistory files of another revision are
# not trusted.
_SUITE_REVISION: Final = 1
RULES: Final[tuple[str, ...]] = (
    RULE_NOT_NULL,
    RULE_FINITE,
    RULE_PRICE_POSITIVE,
    RULE_OHLC,
    RULE_VOLUME,
    RULE_UNIQUE,
    RULE_INCREASING,
    RULE_NON_SESSION,
    RULE_MISSING_SESSION,
    RULE_SPLIT,
)
SPLIT_UNEXPLAINED_MAX: Final = 0.15
SPLIT_MOVE_MAX: Final = 0.40
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_OHLC_PAIRS: Final[tuple[tuple[str, str], ...]] = (
    ("high", "open"),
    ("high", "close"),  # high >= low follows from high >= open >= low
    ("open", "low"),
    ("close", "low"),
)


@dataclass(frozen=True)
class BarIssue:
    """One broken rule: the bar's UTC start (None for a batch-level issue), the rule name, the detail."""

    timestamp: datetime | None
    rule: str
    detail: str

    def __str__(self) -> str:
        where = self.timestamp.isoformat().replace("+00:00", "Z") if self.timestamp else "batch"
        return f"{self.rule} at {where}: {self.detail}"


@dataclass(frozen=True)
class ValidationResult:
    """Issues found, and the frame after the bad-row policy (FLAG adds a bool ``flagged`` column)."""

    frame: pd.DataFrame
    issues: list[BarIssue]
    policy: BadRowPolicy
    bar_size: BarSize | None
    rows_checked: int
    rows_with_issues: int  # distinct rows breaking at least one row-level rule, whatever the policy
    rows_flagged: int  # rows marked flagged=True in ``frame`` (FLAG policy; 0 otherwise)
    rows_dropped: int  # rows removed from ``frame`` (DROP policy; 0 otherwise)
    ge_seconds: float  # time spent inside Great Expectations (batch + validate), import excluded
    total_seconds: float
    rule_counts: dict[str, int] = field(default_factory=dict)
    ge_rows: int | None = None  # rows Great Expectations checked this time (None: all; see ValidatedHistory)

    @property
    def passed(self) -> bool:
        return not self.issues


class BarValidationError(DataError):
    """Validation under ``BadRowPolicy.FAIL`` found issues; ``issues`` lists all of them."""

    def __init__(self, issues: list[BarIssue]):
        self.issues = issues
        shown = "; ".join(str(i) for i in issues[:10])
        more = f"; ... and {len(issues) - 10} more" if len(issues) > 10 else ""
        super().__init__(f"{len(issues)} bar issue(s): {shown}{more}")


class ValidatedHistory:
    """What Great Expectations validated before, per key (a strategy's request): fingerprints and issues.

    A strategy on a one-minute cron fetches the same lookback again and again; all of it but the newest bar(s) was
    validated by the previous run. For a key seen before, :func:`validate_bars` looks for the rows of the new
    frame that are the rows validated last time (same timestamps and values, in the same order: a block of the
    previous frame that the new one starts with; the previous newest bar may have been revised), reuses their GE
    issues and runs GE on the rest only (with the last known row before them, for the timestamp order). Every
    other case is a full batch: first sight, any change of history (a row revised, inserted or removed inside
    the block), timestamps that are not strictly increasing. The fingerprint of a row is
    ``pandas.util.hash_pandas_object`` of its canonical columns (64 bits). The result is the same as a full
    validation's; GE's rules are per row but for uniqueness and order, which the strictly increasing timestamps
    settle. Bounded (least recently used keys go first; 8 bytes a row plus the issues, so 200 strategies with a
    year of daily bars hold about 400 KB) and thread-safe.
    """

    def __init__(self, max_keys: int = 1024, *, directory: Path | None = None) -> None:
        """``directory``: also keep each key's entry in a file there, so another process finds it (a replay run
        again from the CLI validates nothing, and does not even import Great Expectations)."""
        if max_keys < 1:
            raise InputError("max_keys", f"must be at least 1, got {max_keys}")
        self.max_keys = max_keys
        self.directory = directory
        self._entries: OrderedDict[str, tuple[np.ndarray[Any, Any], list[tuple[int, BarIssue]]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[np.ndarray[Any, Any], list[tuple[int, BarIssue]]] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
        entry = self._load(key)
        if entry is not None:
            self._remember(key, entry)
        return entry

    def put(self, key: str, hashes: np.ndarray[Any, Any], issues: list[tuple[int, BarIssue]]) -> None:
        self._remember(key, (hashes, issues))
        self._store(key, hashes, issues)

    def _remember(self, key: str, entry: tuple[np.ndarray[Any, Any], list[tuple[int, BarIssue]]]) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_keys:
                self._entries.popitem(last=False)

    def _file(self, key: str) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.npz"

    def _store(self, key: str, hashes: np.ndarray[Any, Any], issues: list[tuple[int, BarIssue]]) -> None:
        path = self._file(key)
        if path is None:
            return
        rows = [[p, i.timestamp.isoformat() if i.timestamp else None, i.rule, i.detail] for p, i in issues]
        meta = json.dumps({"key": key, "revision": _SUITE_REVISION, "issues": rows})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        with tmp.open("wb") as out:
            np.savez(out, hashes=hashes, meta=np.array(meta))
        os.replace(tmp, path)  # atomic: a reader sees the old entry or the new one

    def _load(self, key: str) -> tuple[np.ndarray[Any, Any], list[tuple[int, BarIssue]]] | None:
        """The key's file entry, or None (none, another suite revision, another key, or unreadable: validate)."""
        path = self._file(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                hashes, meta = data["hashes"], json.loads(str(data["meta"]))
            if meta.get("revision") != _SUITE_REVISION or meta.get("key") != key:
                return None
            issues = [
                (int(p), BarIssue(datetime.fromisoformat(t) if t else None, str(rule), str(detail)))
                for p, t, rule, detail in meta["issues"]
            ]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return hashes, issues


def _fingerprints(data: pd.DataFrame) -> np.ndarray[Any, Any]:
    hashes: np.ndarray[Any, Any] = pd.util.hash_pandas_object(data[list(REQUIRED_COLUMNS)], index=False).to_numpy()
    return hashes


def _seen_rows(old: np.ndarray[Any, Any], new: np.ndarray[Any, Any]) -> tuple[int, int] | None:
    """``(k, m)``: ``new[:m]`` is ``old[k:k + m]`` and reaches old's end (or its last row, revised); else None."""
    for k in np.flatnonzero(old == new[0]) if len(new) and len(old) else ():
        m = min(len(old) - int(k), len(new))
        if np.array_equal(old[k : k + m], new[:m]):
            return int(k), m
        if m >= 2 and int(k) + m == len(old) and np.array_equal(old[k : k + m - 1], new[: m - 1]):
            return int(k), m - 1  # the previous newest bar was revised (a forming bar): it is checked again
    return None


def _ge_row_issues_incremental(
    data: pd.DataFrame, history: ValidatedHistory, key: str
) -> tuple[list[tuple[int | None, BarIssue]], float, int]:
    """GE row issues of ``data`` as :func:`_ge_row_issues` finds them, checking only the rows not seen before."""
    hashes = _fingerprints(data)
    stamps = data[TIMESTAMP]
    ordered = bool(stamps.notna().all() and stamps.is_monotonic_increasing and stamps.is_unique)
    known = history.get(key) if ordered else None
    seen = _seen_rows(known[0], hashes) if known is not None else None
    if known is None or seen is None:
        issues, seconds = _ge_row_issues(data)
        checked = len(data)
    else:
        k, m = seen
        issues = [(p - k, issue) for p, issue in known[1] if k <= p < k + m]
        seconds, checked = 0.0, len(data) - m
        if checked:
            part = data.iloc[m - 1 :].reset_index(drop=True)  # the last seen row gives the timestamp order
            fresh, seconds = _ge_row_issues(part)
            issues += [(m - 1 + p, issue) for p, issue in fresh if p is not None and p > 0]
    if ordered:
        history.put(key, hashes, [(p, issue) for p, issue in issues if p is not None])
    return list(issues), seconds, checked


def validate_bars(
    frame: pd.DataFrame,
    *,
    bar_size: BarSize | None = None,
    exchange: str = calendar.DEFAULT_EXCHANGE,
    policy: BadRowPolicy = BadRowPolicy.FLAG,
    history: ValidatedHistory | None = None,
    history_key: str = "",
) -> ValidationResult:
    """Check ``frame`` against every rule and apply ``policy`` to the rows that break one.

    With ``history`` Great Expectations checks only the rows not validated before under ``history_key`` (see
    :class:`ValidatedHistory`); the pandas rules (finite values, calendar, splits) always see the whole frame.
    Raises ``InputError`` if a canonical column is missing, ``BarValidationError`` (a ``DataError``)
    under ``BadRowPolicy.FAIL`` when any issue is found.
    """
    started = time.perf_counter()
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError("bars", f"frame lacks column(s) {', '.join(missing)}")
    wrong = [c for c in REQUIRED_COLUMNS[1:] if not pd.api.types.is_numeric_dtype(frame[c])]
    if not isinstance(frame[TIMESTAMP].dtype, pd.DatetimeTZDtype):
        wrong.insert(0, TIMESTAMP)
    if wrong:
        kinds = ", ".join(f"{c} ({frame[c].dtype})" for c in wrong)
        raise InputError("bars", f"not a canonical bar frame: wrong dtype for {kinds}")
    data = frame.drop(columns=[FLAGGED], errors="ignore").reset_index(drop=True)
    size = bar_size if bar_size is not None else infer_bar_size(data[TIMESTAMP])
    ge_rows: int | None = None
    if history is None:
        row_issues, ge_seconds = _ge_row_issues(data)
    else:
        row_issues, ge_seconds, ge_rows = _ge_row_issues_incremental(data, history, history_key)
    row_issues += _finite_issues(data)
    if size is BarSize.DAY_1 and len(data):
        row_issues += _calendar_issues(data, exchange)
    row_issues += _split_issues(data)
    row_issues.sort(
        key=lambda pair: (pair[1].timestamp or _EPOCH, -1 if pair[0] is None else pair[0], RULES.index(pair[1].rule))
    )
    issues = [issue for _, issue in row_issues]
    flagged = np.zeros(len(data), dtype=bool)
    for position, _ in row_issues:
        if position is not None:
            flagged[position] = True
    if policy is BadRowPolicy.FAIL and issues:
        raise BarValidationError(issues)
    if policy is BadRowPolicy.DROP:
        out = data.loc[~flagged].reset_index(drop=True)
    else:
        out = data.assign(**{FLAGGED: flagged})
    return ValidationResult(
        frame=out,
        issues=issues,
        policy=policy,
        bar_size=size,
        rows_checked=len(data),
        rows_with_issues=int(flagged.sum()),
        rows_flagged=int(flagged.sum()) if policy is BadRowPolicy.FLAG else 0,
        rows_dropped=int(flagged.sum()) if policy is BadRowPolicy.DROP else 0,
        ge_seconds=ge_seconds,
        total_seconds=time.perf_counter() - started,
        rule_counts=dict(Counter(i.rule for i in issues)),
        ge_rows=ge_rows,
    )


# ---- Great Expectations: row rules ----------------------------------------------------------------

_ge_lock = threading.Lock()
_ge_state: dict[str, Any] = {}


def _ge_suite() -> tuple[Any, Any]:
    # One ephemeral context, batch definition and suite per process (the import alone costs seconds).
    if not _ge_state:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        import great_expectations.expectations as gxe_module
        from great_expectations.data_context.types.base import ProgressBarsConfig

        gxe: Any = gxe_module  # expectation classes are not re-exported for mypy
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("bars").add_dataframe_asset("frame")
        batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add(gx.ExpectationSuite(name="canonical_bars"))
        for column in REQUIRED_COLUMNS:
            suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column, meta={"rule": RULE_NOT_NULL}))
        for column in PRICE_COLUMNS:
            suite.add_expectation(
                gxe.ExpectColumnValuesToBeBetween(
                    column=column, min_value=0, strict_min=True, meta={"rule": RULE_PRICE_POSITIVE}
                )
            )
        for a, b in _OHLC_PAIRS:
            suite.add_expectation(
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A=a,
                    column_B=b,
                    or_equal=True,
                    ignore_row_if="either_value_is_missing",
                    meta={"rule": RULE_OHLC},
                )
            )
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeBetween(column="volume", min_value=0, meta={"rule": RULE_VOLUME})
        )
        suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=TIMESTAMP, meta={"rule": RULE_UNIQUE}))
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeIncreasing(column=TIMESTAMP, strictly=True, meta={"rule": RULE_INCREASING})
        )
        _ge_state.update(batch_definition=batch_definition, suite=suite)
    return _ge_state["batch_definition"], _ge_state["suite"]


def _ge_row_issues(data: pd.DataFrame) -> tuple[list[tuple[int | None, BarIssue]], float]:
    # Two passes: the whole suite with BOOLEAN_ONLY (half the cost of COMPLETE), then COMPLETE only for
    # the expectations that failed, to get their unexpected_index_list. Clean batches pay the first pass.
    if data.empty:
        return [], 0.0
    with _ge_lock:
        batch_definition, suite = _ge_suite()
        started = time.perf_counter()
        batch = batch_definition.get_batch(batch_parameters={"dataframe": data})
        summary = batch.validate(suite, result_format="BOOLEAN_ONLY")
        by_id = {expectation.id: expectation for expectation in suite.expectations}
        failed = [result for result in summary.results if not result.success]
        _raise_on_exception(failed)
        complete = [batch.validate(by_id[r.expectation_config.id], result_format="COMPLETE") for r in failed]
        ge_seconds = time.perf_counter() - started
    _raise_on_exception(complete)
    details: dict[tuple[int, str], list[str]] = {}
    for result in complete:
        config = result.expectation_config
        rule = str(config.meta["rule"])
        for position in result.result.get("unexpected_index_list") or []:
            row = data.iloc[int(position)]
            details.setdefault((int(position), rule), []).append(_describe(rule, config.kwargs, row))
    issues: list[tuple[int | None, BarIssue]] = [
        (position, BarIssue(_stamp(data, position), rule, "; ".join(texts)))
        for (position, rule), texts in sorted(details.items())
    ]
    return issues, ge_seconds


def _raise_on_exception(results: list[Any]) -> None:
    # exception_info is flat ({"raised_exception": ...}) or keyed by metric id ({metric_id: {...}}).
    for result in results:
        info = result.exception_info or {}
        entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
        for entry in entries:
            if entry.get("raised_exception"):
                rule = result.expectation_config.meta.get("rule", result.expectation_config.type)
                raise DataError(f"validation rule {rule} could not run: {entry.get('exception_message', '')}")


def _describe(rule: str, kwargs: dict[str, Any], row: pd.Series) -> str:
    if rule == RULE_OHLC:
        a, b = kwargs["column_A"], kwargs["column_B"]
        return f"{a} {row[a]:g} < {b} {row[b]:g}"
    if rule in (RULE_UNIQUE, RULE_INCREASING):
        return "duplicate timestamp" if rule == RULE_UNIQUE else "not after the previous bar"
    column = kwargs["column"]
    if rule == RULE_NOT_NULL:
        return f"{column} missing"
    return f"{column} {row[column]}"


def _stamp(data: pd.DataFrame, position: int) -> datetime | None:
    value = data[TIMESTAMP].iloc[position]
    if pd.isna(value):
        return None
    stamp: datetime = pd.Timestamp(value).tz_convert("UTC").to_pydatetime()
    return stamp


# ---- finite values, calendar and split checks (pandas) -----------------------------------------------


def _finite_issues(data: pd.DataFrame) -> list[tuple[int | None, BarIssue]]:
    # +inf passes every GE range rule (inf > 0, inf >= low), so infinities are a rule of their own.
    columns = [c for c in (*REQUIRED_COLUMNS[1:], "adj_close") if c in data.columns]
    values = data[columns].to_numpy(dtype=np.float64)
    infinite = np.isinf(values)
    issues: list[tuple[int | None, BarIssue]] = []
    for position in np.flatnonzero(infinite.any(axis=1)):
        names = [f"{c} {values[position, j]:g}" for j, c in enumerate(columns) if infinite[position, j]]
        issues.append((int(position), BarIssue(_stamp(data, int(position)), RULE_FINITE, ", ".join(names))))
    return issues


def _calendar_issues(data: pd.DataFrame, exchange: str) -> list[tuple[int | None, BarIssue]]:
    stamps = data[TIMESTAMP].dropna()
    if stamps.empty:
        return []
    if all_midnight_utc(stamps):
        days = stamps.dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    else:
        days = stamps.dt.tz_convert("America/New_York").dt.tz_localize(None).dt.normalize()
    first, last = days.min().date(), days.max().date()
    bounds = calendar.get_calendar(exchange, start=first)
    last = min(last, bounds.last_session.date())
    sessions = calendar.sessions_index(first, last, exchange)
    is_session = days.isin(sessions).to_numpy()
    issues: list[tuple[int | None, BarIssue]] = []
    for position in np.flatnonzero(~is_session):
        index = int(days.index[position])
        day = days.iloc[position].date()
        issue = BarIssue(_stamp(data, index), RULE_NON_SESSION, f"{day} ({day:%A}) is not an {exchange} session")
        issues.append((index, issue))
    for session in sessions.difference(pd.DatetimeIndex(days.unique())):
        stamp = session.tz_localize("UTC").to_pydatetime()
        issue = BarIssue(stamp, RULE_MISSING_SESSION, f"no bar for {exchange} session {session.date()}")
        issues.append((None, issue))
    return issues


def _split_issues(data: pd.DataFrame) -> list[tuple[int | None, BarIssue]]:
    if len(data) < 2:
        return []
    close = data["close"].to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = close[1:] / close[:-1]
        has_adj = "adj_close" in data.columns
        if has_adj:
            adj = data["adj_close"].to_numpy(dtype=np.float64)
            unexplained = ratio / (adj[1:] / adj[:-1])
            suspect = np.abs(np.log(unexplained)) > math.log1p(SPLIT_UNEXPLAINED_MAX)
        else:
            suspect = np.abs(ratio - 1.0) > SPLIT_MOVE_MAX
    suspect &= np.isfinite(ratio) & (ratio > 0)
    issues: list[tuple[int | None, BarIssue]] = []
    for i in np.flatnonzero(suspect):
        position = int(i) + 1
        move = f"close {close[i]:g} -> {close[position]:g} ({ratio[i] - 1:+.1%})"
        if has_adj:
            adj_move = adj[position] / adj[i] - 1
            detail = f"{move} while adj_close moved {adj_move:+.1%}: unadjusted split?"
        else:
            detail = f"{move}, over {SPLIT_MOVE_MAX:.0%} with no adj_close: unadjusted split?"
        issues.append((position, BarIssue(_stamp(data, position), RULE_SPLIT, detail)))
    return issues
