"""Pure inference with the worker's own classifier (worker.classifier), no Kafka: the reference throughput.

A batch of B texts is what the worker hands the model for one micro-batch of B records: the texts in arrival
order are cut into chunks of B, and each chunk is tokenized (``encode``) and classified (``classify``, which
sorts by length inside the chunk and splits it into passes of at most the worker's default padded tokens per
pass: 1,024 on CPU, 16,384 on CUDA), exactly as the worker with its defaults. Times include tokenization,
the forward pass and building the score objects.

int8 and bf16 are the worker's own ``precision`` option (SENTIMENT_PRECISION), so the figures are what the
worker gets: int8 is ``quantize_dynamic`` on every nn.Linear with one weight scale per output channel.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import stats


def load(
    model_dir: Path, *, device: str, batch: int, max_length: int, threads: int, precision: str = "auto"
) -> Any:
    from worker.classifier import Classifier

    clf = Classifier(model_dir, device=device, max_length=max_length, threads=threads, precision=precision)
    set_batch(clf, batch)
    return clf


def set_batch(clf: Any, batch: int) -> None:
    """The worker's settings for a batch of B: B rows at most, and its default padded tokens per pass."""
    from worker.batching import default_forward_tokens

    clf.max_rows = batch
    clf.max_tokens = min(batch * clf.max_length, default_forward_tokens(clf.device.type))


def sync(clf: Any) -> None:
    if clf.device.type == "cuda":
        import torch

        torch.cuda.synchronize()


def measure(clf: Any, texts: Sequence[str], batch: int, *, min_seconds: float = 0.0) -> dict[str, Any]:
    """Throughput of encode + classify over texts in chunks of ``batch`` (one warm-up chunk not timed)."""
    set_batch(clf, batch)
    chunks = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    clf.classify(clf.encode(chunks[0]))
    sync(clf)
    n = 0
    tokenize_s = 0.0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    while True:
        for chunk in chunks:
            a = time.perf_counter()
            encoded = clf.encode(chunk)
            tokenize_s += time.perf_counter() - a
            clf.classify(encoded)
            n += len(chunk)
        sync(clf)
        if time.perf_counter() - t0 >= min_seconds:
            break
    elapsed = time.perf_counter() - t0
    cpu_s = time.process_time() - cpu0  # all threads of this process
    return {
        "batch": batch,
        "n": n,
        "msg_s": n / elapsed,
        "batch_ms": 1000 * elapsed * batch / n,
        "tokenize_share": tokenize_s / elapsed,
        "cpu_s": cpu_s,
        "msg_per_cpu_s": n / cpu_s if cpu_s > 0 else float("nan"),
    }


def macro_recall(clf: Any, texts: Sequence[str], labels: Sequence[str], batch: int) -> float:
    """Macro-averaged recall over the classes present, computed from the worker classifier's labels."""
    set_batch(clf, batch)
    predicted: list[str] = []
    for i in range(0, len(texts), batch):
        predicted += [s.label for s in clf.classify(clf.encode(texts[i : i + batch]))]
    return recall_macro(labels, predicted)


def recall_macro(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """PURE: the mean over true classes of (correct predictions of the class / examples of the class)."""
    classes = sorted(set(truth))
    recalls = []
    for c in classes:
        idx = [i for i, t in enumerate(truth) if t == c]
        recalls.append(sum(1 for i in idx if predicted[i] == c) / len(idx))
    return sum(recalls) / len(recalls) if recalls else float("nan")


def table(rows: Sequence[dict[str, Any]]) -> str:
    return stats.md_table(
        ["variant", "batch", "msg/s", "ms / batch", "tokenize share"],
        [
            [r.get("variant", "fp32"), r["batch"], r["msg_s"], r["batch_ms"], r["tokenize_share"]]
            for r in rows
        ],
        digits=2,
    )
