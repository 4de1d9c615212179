"""bf16 against fp32 on the CPU, on an exported folder's validation set(s): the evidence the worker's
SENTIMENT_PRECISION=auto reads from the folder's precision.json before it serves bf16 on a CPU with AMX.

Measured at export (trainer/train.py) and, for a folder exported before this existed:

    python -m trainer.precision MODEL_DIR --validation FILE [--validation FILE ...]

The worker's conditions, as far as they shape the numbers: batches of 32 texts, length-sorted, cut at 128
tokens (its CPU defaults), weights cast to bf16 (``model.to(torch.bfloat16)``, as the worker does). The
recorded loss is the largest over the sets, in points of macro recall (fp32 - bf16; negative when bf16 did
better). A registry version folder is never modified: its manifest would no longer match.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data import DataError, LabelledData, load_labelled
from trainer.evaluate import classification_metrics
from trainer.models import ModelError

EVIDENCE_FILE = "precision.json"  # the worker reads this name (worker/classifier.py)
BATCH = 32  # the worker's CPU batch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def amx_bf16() -> bool:
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False


def compare(fp32: dict[str, float], bf16: dict[str, float]) -> dict[str, float]:
    """PURE: the difference of two runs' metrics on one set, in points (fp32 - bf16)."""
    return {
        "fp32_macro_recall": fp32["macro_recall"],
        "bf16_macro_recall": bf16["macro_recall"],
        "macro_recall_loss_points": round(100 * (fp32["macro_recall"] - bf16["macro_recall"]), 4),
        "fp32_macro_f1": fp32["macro_f1"],
        "bf16_macro_f1": bf16["macro_f1"],
    }


def measure_bf16(model_dir: Path, sets: Sequence[LabelledData]) -> dict[str, Any]:
    """Score every set with fp32 and bf16 weights on the CPU; the evidence to write as precision.json."""
    return measure(model_dir, sets)[0]


def measure(model_dir: Path, sets: Sequence[LabelledData]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The evidence, and the fp32 metrics of each set (the export's own validation figures)."""
    from trainer.inference import load_classifier, predict_scores

    if not sets:
        raise DataError("no validation set to measure bf16 on")
    started = time.monotonic()
    models = {p: load_classifier(str(model_dir), device="cpu", precision=p) for p in ("fp32", "bf16")}
    rows: list[dict[str, Any]] = []
    fp32_metrics: list[dict[str, Any]] = []
    for data in sets:
        metrics: dict[str, dict[str, Any]] = {}
        predictions: dict[str, np.ndarray] = {}
        for name, clf in models.items():
            scores = predict_scores(clf, data.texts, batch_size=BATCH)  # cut as truncation.json says
            predictions[name] = np.argmax(scores, axis=1)
            metrics[name] = classification_metrics(data.labels, predictions[name].tolist())
        fp32_metrics.append(metrics["fp32"])
        rows.append(
            {
                "source": data.source,
                "n": len(data.labels),
                **compare(metrics["fp32"], metrics["bf16"]),
                "same_label_share": float(np.mean(predictions["fp32"] == predictions["bf16"])),
            }
        )
    worst = max(float(r["macro_recall_loss_points"]) for r in rows)
    evidence = {
        "bf16": {
            "macro_recall_loss_points": worst,
            "sets": rows,
            "method": "weights cast to bf16 (model.to(torch.bfloat16)) against fp32, on the CPU",
            "batch": BATCH,
            "max_length": models["fp32"].max_length,
            "truncation": models["fp32"].truncation,
            "cpu": cpu_name(),
            "amx_bf16": amx_bf16(),
            "seconds": round(time.monotonic() - started, 1),
        }
    }
    return evidence, fp32_metrics


def write(model_dir: Path, evidence: dict[str, Any]) -> Path:
    path = model_dir / EVIDENCE_FILE
    path.write_text(json.dumps(evidence, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.precision", description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="an exported model folder (not a registry version)")
    p.add_argument("--validation", action="append", required=True, help="a labelled set (repeatable)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    args = p.parse_args(argv)
    if (args.model / "manifest.json").exists():
        print(
            f"trainer.precision: {args.model} is a registry version (it has a manifest); measure the folder "
            "before it is registered",
            file=sys.stderr,
        )
        return 2
    try:
        sets = [
            load_labelled(v, args.text_column, args.label_column, None, "auto", "validation")
            for v in args.validation
        ]
        evidence = measure_bf16(args.model, sets)
    except (DataError, ModelError) as exc:
        print(f"trainer.precision: {exc}", file=sys.stderr)
        return 1
    path = write(args.model, evidence)
    print(
        json.dumps(
            {"wrote": str(path), "macro_recall_loss_points": evidence["bf16"]["macro_recall_loss_points"]}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
