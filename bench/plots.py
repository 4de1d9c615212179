"""The two figures: throughput vs batch size, latency vs offered load (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def throughput_vs_batch(
    path: Path,
    inference: Sequence[dict[str, Any]],
    *,
    e2e: dict[str, Any] | None,
    baseline_msg_s: float | None,
    title: str,
) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for variant, style in (("fp32", "o-"), ("int8", "s--"), ("bf16", "^:"), ("fp16", "v:")):
        rows = sorted((r for r in inference if r.get("variant", "fp32") == variant), key=lambda r: r["batch"])
        if rows:
            ax.plot(
                [r["batch"] for r in rows],
                [r["msg_s"] for r in rows],
                style,
                label=f"pure inference, {variant}",
            )
    if e2e:
        ax.plot([e2e["batch"]], [e2e["msg_s"]], "r*", markersize=14, label=e2e.get("label", "end to end"))
    if baseline_msg_s:
        ax.axhline(baseline_msg_s, color="grey", linestyle=":", label="baseline consumer (1 msg at a time)")
    ax.set_xscale("log", base=2)
    sizes = sorted({r["batch"] for r in inference})
    ax.set_xticks(sizes, [str(x) for x in sizes])
    ax.set_xlabel("batch size (messages)")
    ax.set_ylabel("throughput (messages / s)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency_vs_load(path: Path, phases: Sequence[dict[str, Any]], *, title: str) -> None:
    """Paced phases: x = offered load in % of the full-speed throughput measured just before each phase."""
    plt = _plt()
    paced = sorted(phases, key=lambda p: p["load"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = [100 * p["load"] for p in paced]
    for q, style in (("p50_ms", "o-"), ("p95_ms", "s-"), ("p99_ms", "^-")):
        ax.plot(x, [p[q] for p in paced], style, label=q.removesuffix("_ms"))
    ax.plot(x, [p["bound_ms"] for p in paced], "r:", label="p99 target: max wait + 2 batches (at that time)")
    ax.set_xlabel("offered load (% of the full-speed throughput just before)")
    ax.set_ylabel("latency, produce -> result (ms, log scale)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
