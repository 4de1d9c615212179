"""Batched scoring of texts with an exported model folder, using plain transformers (no peft)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from trainer import truncation
from trainer.data import LABELS
from trainer.models import ModelError

DEFAULT_MAX_LENGTH = 128  # for a folder that records no truncation.json (made before it existed)


@dataclass
class Classifier:
    model: PreTrainedModel
    tokenizer: object
    columns: list[int]  # model output index for each entry of LABELS
    device: torch.device
    max_length: int  # the folder's truncation.json, unless the caller overrides it
    truncation: str


def load_classifier(model_dir: str, device: str | None = None, precision: str = "fp32") -> Classifier:
    """Load an exported folder. precision: fp32, bf16 (weights cast), or int8 (CPU only: dynamic quantization
    of every nn.Linear with one weight scale per output channel, as the worker's SENTIMENT_PRECISION=int8)."""
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
    if precision == "int8":
        if dev.type != "cpu":
            raise ModelError("--precision int8 runs on the CPU only; on a GPU use bf16")
        model = _quantize_int8(model)
    elif precision == "bf16":
        model = model.to(torch.bfloat16)
    elif precision != "fp32":
        raise ModelError(f"unknown precision {precision!r}: use fp32, bf16 or int8")
    model.to(dev).eval()
    try:
        max_length, strategy = truncation.read(path) or (DEFAULT_MAX_LENGTH, "right")
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    return Classifier(
        model=model,
        tokenizer=tokenizer,
        columns=[by_name[n] for n in LABELS],
        device=dev,
        max_length=max_length,
        truncation=strategy,
    )


def _quantize_int8(model: PreTrainedModel) -> PreTrainedModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice: the API still works in torch 2.x
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig})


@torch.inference_mode()
def predict_scores(
    clf: Classifier,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int | None = None,
    progress: bool = False,
    strategy: str | None = None,
) -> np.ndarray:
    """Softmax scores, shape (len(texts), 3), columns in LABELS order, rows in input order.

    Texts are cut as the model folder says (truncation.json) unless max_length / strategy override it."""
    enc = truncation.encode(clf.tokenizer, texts, max_length or clf.max_length, strategy or clf.truncation)
    lengths = [len(ids) for ids in enc["input_ids"]]
    # Sorting by length keeps padding (and so wasted compute) small; results go back to input order.
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    out = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress):
        idx = order[start : start + batch_size]
        width = max(lengths[i] for i in idx)
        batch = {
            k: torch.tensor(
                [column[i] + [_pad(clf, k)] * (width - lengths[i]) for i in idx], device=clf.device
            )
            for k, column in enc.items()
        }
        logits = clf.model(**batch).logits.float()
        out[idx] = torch.softmax(logits, dim=-1)[:, clf.columns].cpu().numpy()
    return out


def _pad(clf: Classifier, column: str) -> int:
    if column == "input_ids":
        return int(getattr(clf.tokenizer, "pad_token_id", None) or 0)
    return 0  # attention_mask, token_type_ids


def label_of(row: np.ndarray) -> str:
    return LABELS[int(np.argmax(row))]
