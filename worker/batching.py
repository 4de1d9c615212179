"""PURE batching decisions and offset maths.

A micro-batch closes when it holds ``max_records`` records, OR its texts hold ``max_tokens`` tokens, OR
``max_wait_s`` has passed since its first record arrived, whichever comes first. Inside a batch the
classifier runs the texts sorted by length, in chunks whose padded size (rows x longest row) stays within
the token budget, so short texts are not padded to the length of long ones; results are put back in
arrival order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Limits:
    max_records: int
    max_tokens: int
    max_wait_s: float

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_tokens < 1 or self.max_wait_s < 0:
            raise ValueError("batch limits must be positive")


def default_batch_size(device_type: str) -> int:
    """Records per batch when not set. A batch closes at the max wait, so this cap binds only when the worker
    is behind. On a CPU 64 is the model's own best batch (python -m bench: end to end 0.90x the model alone,
    against 0.70 at 32; docs/performance.md)."""
    return 128 if device_type == "cuda" else 64


def default_forward_tokens(device_type: str) -> int:
    """Padded tokens per forward pass when not set. On CPU, cost grows with padded tokens and a pass has
    little fixed cost, so small length-sorted passes waste less padding (measured: 1.2-1.4x the throughput
    of one pass per batch of 32 tweets). On a GPU a pass has a fixed cost, so one large pass is as fast or
    faster."""
    return 16384 if device_type == "cuda" else 1024


def is_full(n_records: int, n_tokens: int, limits: Limits) -> bool:
    return n_records >= limits.max_records or n_tokens >= limits.max_tokens


def wait_left_s(started: float, now: float, limits: Limits) -> float:
    """Seconds the batch begun at ``started`` may still wait for more records (0 when it must close)."""
    return max(0.0, started + limits.max_wait_s - now)


def plan_chunks(lengths: Sequence[int], *, max_rows: int, max_tokens: int) -> list[list[int]]:
    """Indices into ``lengths`` grouped into forward passes, shortest texts first.

    Each chunk has at most max_rows rows and rows x its longest length <= max_tokens (a single text longer
    than the budget still gets a chunk of its own). Every index appears exactly once.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    chunks: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted ascending, so lengths[i] is the longest row once i joins the chunk.
        if current and (len(current) >= max_rows or (len(current) + 1) * lengths[i] > max_tokens):
            chunks.append(current)
            current = []
        current.append(i)
    if current:
        chunks.append(current)
    return chunks


def restore_order(chunks: Sequence[Sequence[int]], chunk_results: Sequence[Sequence[T]]) -> list[T]:
    """Put per-chunk results back at their original indices."""
    n = sum(len(c) for c in chunks)
    out: list[T | None] = [None] * n
    for chunk, results in zip(chunks, chunk_results, strict=True):
        for i, result in zip(chunk, results, strict=True):
            if not 0 <= i < n or out[i] is not None:
                raise ValueError("chunks do not cover every index exactly once")
            out[i] = result
    if any(r is None for r in out):
        raise ValueError("chunks do not cover every index exactly once")
    return out  # type: ignore[return-value]


def run_halving(
    rows: Sequence[R], run: Callable[[Sequence[R]], Sequence[T]], retryable: Callable[[Exception], bool]
) -> list[T | Exception]:
    """``run(rows)``; when it fails with a retryable error (out of memory), run each half, recursively.

    A row that still fails on its own gets the exception as its result (it becomes a dead letter) instead of
    failing the whole batch over and over. Errors that are not retryable propagate.
    """
    try:
        return list(run(rows))
    except Exception as exc:
        if not retryable(exc):
            raise
        if len(rows) <= 1:
            return [exc] * len(rows)
    mid = len(rows) // 2
    return run_halving(rows[:mid], run, retryable) + run_halving(rows[mid:], run, retryable)


def next_offsets(positions: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
    """(topic, partition, offset) of every record in a batch -> {(topic, partition): highest offset + 1}.

    This is what Kafka commits (the next record to read) and what the Redis watermark stores.
    """
    out: dict[tuple[str, int], int] = {}
    for topic, partition, offset in positions:
        key = (topic, partition)
        out[key] = max(out.get(key, 0), offset + 1)
    return out


def first_offsets(positions: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
    """{(topic, partition): lowest offset}: where to seek back to when a batch has to be processed again."""
    out: dict[tuple[str, int], int] = {}
    for topic, partition, offset in positions:
        key = (topic, partition)
        out[key] = min(out.get(key, offset), offset)
    return out
