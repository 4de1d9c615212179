"""Batched scoring of texts with an exported model folder, using plain transformers (no peft)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from trainer.data import LABELS
from trainer.models import ModelError


@dataclass
class Classifier:
    model: PreTrainedModel
    tokenizer: object
    columns: list[int]  # model output index for each entry of LABELS
    device: torch.device


def load_classifier(model_dir: str, device: str | None = None) -> Classifier:
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ModelError(f"not a model folder (no config.json): {model_dir}")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), use_safetensors=True, trust_remote_code=False
        )
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model from {model_dir}: {str(exc).splitlines()[0]}") from None
    names = {int(i): str(name).casefold() for i, name in model.config.id2label.items()}
    if sorted(names.values()) != sorted(LABELS):
        raise ModelError(f"model labels {sorted(names.values())} are not {list(LABELS)}")
    by_name = {name: i for i, name in names.items()}
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev).eval()
    return Classifier(model=model, tokenizer=tokenizer, columns=[by_name[n] for n in LABELS], device=dev)


@torch.inference_mode()
def predict_scores(
    clf: Classifier, texts: Sequence[str], batch_size: int = 64, max_length: int = 128, progress: bool = False
) -> np.ndarray:
    """Softmax scores, shape (len(texts), 3), columns in LABELS order, rows in input order."""
    # Sorting by length keeps padding (and so wasted compute) small; results go back to input order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress):
        idx = order[start : start + batch_size]
        enc = clf.tokenizer(  # type: ignore[operator]
            [texts[i] for i in idx], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        ).to(clf.device)
        logits = clf.model(**enc).logits.float()
        out[idx] = torch.softmax(logits, dim=-1)[:, clf.columns].cpu().numpy()
    return out


def label_of(row: np.ndarray) -> str:
    return LABELS[int(np.argmax(row))]
