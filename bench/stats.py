"""Numbers from timings (PURE): throughput, latency percentiles, the issue's targets, Markdown tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

TARGET_E2E_VS_MODEL = 0.85
TARGET_E2E_VS_BASELINE = 4.0  # issue 15: against the per-message consumer
TARGET_INT8_SPEEDUP = 1.5
TARGET_INT8_RECALL_LOSS = 0.005  # 0.5 point of macro recall


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(latencies_ms, 50),
        "p95_ms": percentile(latencies_ms, 95),
        "p99_ms": percentile(latencies_ms, 99),
        "max_ms": max(latencies_ms) if latencies_ms else math.nan,
    }


def throughput(n: int, start_ms: float, end_ms: float) -> float:
    """Messages per second over [start, end]; NaN when the span is not positive."""
    span = (end_ms - start_ms) / 1000.0
    return n / span if span > 0 else math.nan


def match_latencies(
    produced: Mapping[tuple[str, int, int], float], results: Mapping[tuple[str, int, int], float]
) -> tuple[list[float], int]:
    """Latency (result time - produce time, ms) of each produced record with a result; how many lack one."""
    latencies: list[float] = []
    missing = 0
    for key, t_in in produced.items():
        t_out = results.get(key)
        if t_out is None:
            missing += 1
        else:
            latencies.append(t_out - t_in)
    return latencies, missing


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def targets(
    *,
    e2e_vs_model: float,
    e2e_vs_baseline: float,
    p99_at_half_ms: float,
    max_wait_ms: float,
    batch_inference_ms: float,
    int8_speedup: float | None = None,
    int8_recall_loss: float | None = None,
) -> list[dict[str, Any]]:
    """The issue's targets as rows: name, measured value, target, met."""
    bound = max_wait_ms + 2 * batch_inference_ms
    rows: list[dict[str, Any]] = [
        _row(
            "end-to-end / model alone at its best batch and precision",
            e2e_vs_model,
            TARGET_E2E_VS_MODEL,
            ">=",
        ),
        _row("end-to-end / baseline consumer", e2e_vs_baseline, TARGET_E2E_VS_BASELINE, ">="),
        _row("p99 latency at 50% load (ms) vs max wait + 2 batches", p99_at_half_ms, bound, "<="),
    ]
    if int8_speedup is not None:
        rows.append(_row("int8 / fp32 inference speed", int8_speedup, TARGET_INT8_SPEEDUP, ">="))
    if int8_recall_loss is not None:
        rows.append(
            _row(
                "int8 macro-recall loss (points)", 100 * int8_recall_loss, 100 * TARGET_INT8_RECALL_LOSS, "<="
            )
        )
    return rows


def _row(name: str, value: float, target: float, op: str) -> dict[str, Any]:
    ok = (value >= target) if op == ">=" else (value <= target)
    return {
        "name": name,
        "value": value,
        "target": target,
        "op": op,
        "met": bool(ok) and not math.isnan(value),
    }


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"
    return str(value)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 1) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c, digits) for c in row) + " |" for row in rows]
    return "\n".join(lines)
