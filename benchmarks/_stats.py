"""Latency summary shared by the benchmark scripts (imported as a sibling module: run them as files)."""

from __future__ import annotations

import statistics


def ms_summary(samples: list[float]) -> dict[str, float]:
    """Count, p50, p95 and max of ``samples`` (seconds), in milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(samples),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(p95 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }
