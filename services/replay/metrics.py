"""Performance metrics of a replay, with one set of documented conventions.

Conventions (the same as empyrical's, which the tests use as the independent reference):

* **Returns** are simple per-period returns of the equity curve, ``r_t = E_t / E_{t-1} - 1``. A replay marks
  equity to the close of every bar; with the default price adjustment (``services.replay.engine``) those closes
  are dividend- and split-adjusted, so daily returns are returns on adjusted prices.
* **Periods per year** ``periods = 252`` (trading days) unless given.
* **Risk-free rate** ``risk_free`` is an ANNUAL rate; it is turned into a per-period rate
  ``rf_p = (1 + risk_free) ** (1 / periods) - 1`` and subtracted from every return (0 by default).
* **Total return** ``E_end / E_0 - 1``; **annualized return** (CAGR) ``(1 + total) ** (periods / n) - 1`` with
  ``n`` returns.
* **Sharpe** ``mean(r - rf_p) / std(r - rf_p, ddof=1) * sqrt(periods)``.
* **Sortino** ``mean(r - rf_p) / DD * sqrt(periods)`` with the downside deviation
  ``DD = sqrt(mean(min(r - rf_p, 0) ** 2))`` over ALL periods (empyrical's definition, target return 0 after rf).
* **Max drawdown** ``min(E_t / max_{s<=t} E_s - 1)`` (a negative number, 0 without a loss); its **duration** is the
  longest run of periods spent below a previous peak (peak to recovery, or to the end when not recovered).
* **Trades**: a trade is one round trip (entry to exit); ``win_rate`` = trades with a positive net P&L (after
  commissions) / closed trades. **Exposure** = share of periods that END with a non-zero position.
* Undefined values (a Sharpe with zero volatility, a win rate without trades) are ``None``, never NaN or inf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "PERIODS_PER_YEAR",
    "Metrics",
    "annualized_return",
    "compute_metrics",
    "max_drawdown",
    "returns_from_equity",
    "sharpe_ratio",
    "sortino_ratio",
]

PERIODS_PER_YEAR: Final = 252

FloatArray = npt.NDArray[np.float64]


def _clean(value: float) -> float | None:
    return value if math.isfinite(value) else None


def returns_from_equity(equity: Sequence[float] | FloatArray) -> FloatArray:
    """Return simple per-period returns ``E_t / E_{t-1} - 1`` (one fewer than the equity points)."""
    values = np.asarray(equity, dtype=np.float64)
    if values.size < 2:
        return np.empty(0, dtype=np.float64)
    if np.any(values[:-1] == 0):
        raise ValueError("equity touches zero: returns are undefined")
    out: FloatArray = values[1:] / values[:-1] - 1.0
    return out


def _excess(returns: FloatArray, risk_free: float, periods: int) -> FloatArray:
    rf_p = (1.0 + risk_free) ** (1.0 / periods) - 1.0
    out: FloatArray = np.asarray(returns, dtype=np.float64) - rf_p
    return out


def annualized_return(returns: FloatArray, periods: int = PERIODS_PER_YEAR) -> float | None:
    """Compound annual growth rate of the returns (``None`` without returns)."""
    if returns.size == 0:
        return None
    growth = float(np.prod(1.0 + returns))
    if growth <= 0:
        return -1.0
    return _clean(growth ** (periods / returns.size) - 1.0)


def sharpe_ratio(returns: FloatArray, risk_free: float = 0.0, periods: int = PERIODS_PER_YEAR) -> float | None:
    """Annualized Sharpe ratio (sample standard deviation, ddof=1); ``None`` when undefined."""
    if returns.size < 2:
        return None
    excess = _excess(returns, risk_free, periods)
    std = float(np.std(excess, ddof=1))
    if std == 0 or not math.isfinite(std):
        return None
    return _clean(float(np.mean(excess)) / std * math.sqrt(periods))


def sortino_ratio(returns: FloatArray, risk_free: float = 0.0, periods: int = PERIODS_PER_YEAR) -> float | None:
    """Annualized Sortino ratio with the downside deviation over all periods; ``None`` when undefined."""
    if returns.size < 1:
        return None
    excess = _excess(returns, risk_free, periods)
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    if downside == 0:
        return None
    return _clean(float(np.mean(excess)) / downside * math.sqrt(periods))


def max_drawdown(equity: Sequence[float] | FloatArray) -> tuple[float, int]:
    """Return ``(max drawdown <= 0, longest number of periods under water)`` of an equity curve."""
    values = np.asarray(equity, dtype=np.float64)
    if values.size == 0:
        return 0.0, 0
    peaks = np.maximum.accumulate(values)
    drawdowns = values / peaks - 1.0
    longest = run = 0
    for under in drawdowns < 0:
        run = run + 1 if under else 0
        longest = max(longest, run)
    return float(drawdowns.min()), longest


@dataclass(frozen=True)
class Metrics:
    """The replay's figures; ratios as fractions (0.12 = 12 %), money as ``Decimal`` strings in ``to_json``."""

    periods: int
    start_equity: float
    end_equity: float
    total_return: float | None
    annualized_return: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    max_drawdown_duration: int
    trades: int
    win_rate: float | None
    exposure: float
    commissions: Decimal
    llm_cost_usd: Decimal
    risk_free: float
    periods_per_year: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["commissions"] = str(self.commissions)
        data["llm_cost_usd"] = str(self.llm_cost_usd)
        return data


def compute_metrics(
    equity: Sequence[float] | FloatArray,
    *,
    trade_pnls: Sequence[Decimal] = (),
    positions: Sequence[float] | FloatArray = (),
    commissions: Decimal = Decimal(0),
    llm_cost_usd: Decimal = Decimal(0),
    risk_free: float = 0.0,
    periods_per_year: int = PERIODS_PER_YEAR,
) -> Metrics:
    """Compute every metric of the module docstring from an equity curve (one point per bar, close-marked).

    ``trade_pnls`` are the net P&Ls of closed trades; ``positions`` the signed position at each bar's end.
    """
    values = np.asarray(equity, dtype=np.float64)
    if values.size == 0:
        raise ValueError("an equity curve needs at least one point")
    returns = returns_from_equity(values)
    total = _clean(float(values[-1] / values[0] - 1.0)) if values[0] else None
    mdd, duration = max_drawdown(values)
    held = np.asarray(positions, dtype=np.float64)
    exposure = float(np.mean(held != 0)) if held.size else 0.0
    wins = sum(1 for p in trade_pnls if p > 0)
    return Metrics(
        periods=int(returns.size),
        start_equity=float(values[0]),
        end_equity=float(values[-1]),
        total_return=total,
        annualized_return=annualized_return(returns, periods_per_year),
        sharpe=sharpe_ratio(returns, risk_free, periods_per_year),
        sortino=sortino_ratio(returns, risk_free, periods_per_year),
        max_drawdown=mdd,
        max_drawdown_duration=duration,
        trades=len(trade_pnls),
        win_rate=wins / len(trade_pnls) if trade_pnls else None,
        exposure=exposure,
        commissions=commissions,
        llm_cost_usd=llm_cost_usd,
        risk_free=risk_free,
        periods_per_year=periods_per_year,
    )
