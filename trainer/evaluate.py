"""Metrics (scikit-learn) and the two plots (matplotlib, no display needed).

Macro averages are taken over the classes present in the true labels: on a 3-class set that is all
three; on a 2-class set (uci_sentiment_sentences) a "neutral" prediction counts as an error but there is no
neutral class to average in. ``restricted_predictions`` gives the other honest reading of such a set:
argmax over the present classes only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from trainer.data import LABELS


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, Any]:
    """n, accuracy, macro recall/F1 over present classes, per-class P/R/F1/support, confusion matrix."""
    if len(y_true) == 0:
        raise ValueError("no examples to score")
    all_ids = list(range(len(LABELS)))
    present = sorted(set(int(y) for y in y_true))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=all_ids, zero_division=0
    )
    _, macro_recall, macro_f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=present, average="macro", zero_division=0
    )
    predicted = np.bincount(np.asarray(y_pred, dtype=int), minlength=len(LABELS))
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_recall": float(macro_recall),
        "macro_f1": float(macro_f1),
        "classes_present": [LABELS[i] for i in present],
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "predicted_share": float(predicted[i] / len(y_pred)),
            }
            for i, name in enumerate(LABELS)
        },
        "labels": list(LABELS),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=all_ids).tolist(),
    }


TOKEN_BUCKETS: tuple[int, ...] = (64, 128, 256, 512)
BY_TOKENS = "tokens"  # --by tokens: buckets of a text's token count before truncation, not a data column


def token_bucket(n: int) -> str:
    """'<=64', '65-128', '129-256', '257-512' or '>512' tokens (special tokens included)."""
    low = 1
    for high in TOKEN_BUCKETS:
        if n <= high:
            return f"<={high}" if low == 1 else f"{low}-{high}"
        low = high + 1
    return f">{TOKEN_BUCKETS[-1]}"


def breakdown(
    y_true: Sequence[int], y_pred: Sequence[int], groups: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Metrics per group value (e.g. per review domain or star rating), groups in sorted order."""
    rows: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        rows.setdefault(g, []).append(i)
    out: dict[str, dict[str, Any]] = {}
    for g in sorted(rows, key=_group_order):
        m = classification_metrics([y_true[i] for i in rows[g]], [y_pred[i] for i in rows[g]])
        out[g] = {
            **{k: m[k] for k in ("n", "accuracy", "macro_recall", "macro_f1")},
            "recall": {name: c["recall"] for name, c in m["per_class"].items() if c["support"]},
            "predicted_share": {name: c["predicted_share"] for name, c in m["per_class"].items()},
        }
    return out


def _group_order(g: str) -> tuple[int, float, str]:
    """Numbers (star ratings) and token buckets in numeric order, other values by name."""
    digits = g.lstrip("<=>").split("-")[0]
    try:
        return (0, float(digits) + (0.5 if g.startswith(">") else 0), g)
    except ValueError:
        return (1, 0.0, g)


def mean_over_sets(per_set: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The unweighted mean over data sets (each counts the same, whatever its size), and the lowest recall of
    any class present in any set. sentiment-train train chooses its best checkpoint on this mean."""
    mean: dict[str, Any] = {
        k: float(np.mean([m[k] for m in per_set.values()])) for k in ("macro_recall", "accuracy", "macro_f1")
    }
    mean["min_class_recall"] = min(
        c["recall"] for m in per_set.values() for c in m["per_class"].values() if c["support"] > 0
    )
    mean["n"] = sum(int(m["n"]) for m in per_set.values())
    mean["sets"] = list(per_set)
    return mean


def restricted_predictions(scores: np.ndarray, allowed: Sequence[int]) -> np.ndarray:
    """Argmax over the allowed class columns only (e.g. negative/positive on a 2-class set)."""
    allowed_arr = np.asarray(sorted(allowed))
    return allowed_arr[np.argmax(scores[:, allowed_arr], axis=1)]


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(LABELS)), LABELS)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > threshold else "black",
            )
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curve(
    log_history: Sequence[dict[str, Any]], path: Path, metric: str = "eval_macro_recall"
) -> None:
    """Training loss and the validation metric against the optimiser step (Trainer.state.log_history)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e[metric]) for e in log_history if metric in e and "step" in e]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if train:
        ax.plot(*zip(*train, strict=True), color="tab:blue", label="training loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss", color="tab:blue")
    if evals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*evals, strict=True), color="tab:orange", marker="o", label=metric)
        ax2.set_ylabel(metric.removeprefix("eval_") + " (validation)", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
