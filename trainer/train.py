"""One training run, top to bottom: seed, data, base model, LoRA (or full), Trainer, evaluate, export.

The exported folder is the only contract with the worker: a plain transformers sequence-classification model
(merged weights in model.safetensors, id2label negative/neutral/positive) that loads without peft.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer import truncation
from trainer.data import LABEL2ID, LABELS, DataError, LabelledData, load_labelled, parse_label_map, set_name
from trainer.evaluate import (
    classification_metrics,
    mean_over_sets,
    plot_confusion_matrix,
    plot_training_curve,
)
from trainer.models import ModelError, lora_targets, resolve_base_model

log = logging.getLogger("trainer")

DEFAULT_LORA_LR = 1e-3
DEFAULT_FULL_LR = 5e-5


@dataclass
class TrainConfig:
    """Every knob of a run; the CLI defaults are the default recipe. Saved as training_args.json."""

    base_model: str
    train: list[str]
    output: str
    validation: list[str] | None = None  # several: the best checkpoint is chosen on their mean
    validation_fraction: float = 0.05  # split off train when no --validation is given
    text_column: str = "text"
    label_column: str = "label"
    label_map: str | None = None
    label_scheme: str = "auto"
    max_train_samples: int | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    learning_rate: float | None = None  # None: DEFAULT_LORA_LR or DEFAULT_FULL_LR
    batch_size: int = 32
    eval_batch_size: int = 128
    max_length: int = 128
    truncation: str = truncation.DEFAULT_STRATEGY  # how longer texts are cut; recorded in truncation.json
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    lora_r: int = 16
    lora_alpha: int = 32
    # Every dropout of the base model and the adapter's input dropout. Off by default: a run of an epoch or
    # less sees each row once, so there is nothing to regularise, and on the CPU dropout (its random masks,
    # and the unfused attention an attention dropout forces) cost more than half of a step (docs/training.md).
    dropout: float = 0.0
    lora_target_modules: list[str] | None = None
    train_pooler: bool = True
    full: bool = False
    weighted_loss: bool = False
    early_stopping: int | None = None
    eval_steps: int | None = None  # None: about 5 evaluations per run
    metric: str = "macro_recall"
    group_by_length: bool = True
    seed: int = 42
    bf16: bool | None = None  # None: on when CUDA supports it, or the CPU has AMX-BF16
    threads: int | None = None
    data_license: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_FULL_LR if self.full else DEFAULT_LORA_LR


class EncodedDataset(torch.utils.data.Dataset):
    """Tokenised examples, unpadded; DataCollatorWithPadding pads each batch to its own longest row."""

    def __init__(
        self, encodings: dict[str, list[list[int]]], labels: list[int], weights: list[float] | None = None
    ) -> None:
        self.encodings = encodings
        self.labels = labels
        self.weights = weights

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {k: v[i] for k, v in self.encodings.items()}
        item["labels"] = self.labels[i]
        if self.weights is not None:
            item["weight"] = self.weights[i]
        return item


def _merge(parts: list[LabelledData]) -> LabelledData:
    """One set from several files; each row remembers its file (groups), for per-file class weights."""
    return LabelledData(
        texts=[t for p in parts for t in p.texts],
        labels=[y for p in parts for y in p.labels],
        source="+".join(p.source for p in parts),
        groups=[p.source for p in parts for _ in p.texts],
    )


def _subset(data: LabelledData, keep: list[int], source: str) -> LabelledData:
    return LabelledData(
        texts=[data.texts[i] for i in keep],
        labels=[data.labels[i] for i in keep],
        source=source,
        groups=[data.groups[i] for i in keep] if data.groups is not None else None,
    )


def _stratified_split(labels: list[int], size: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices (kept, rest) with `size` kept rows, class shares preserved."""
    from sklearn.model_selection import train_test_split

    index = list(range(len(labels)))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    kept, rest = train_test_split(index, train_size=size, random_state=seed, stratify=stratify)
    return sorted(kept), sorted(rest)


def load_data(cfg: TrainConfig) -> tuple[LabelledData, dict[str, LabelledData]]:
    """The training rows and the validation sets by name (several --validation files: one set each)."""
    label_map = parse_label_map(cfg.label_map)

    def load(source: str, split: str) -> LabelledData:
        return load_labelled(source, cfg.text_column, cfg.label_column, label_map, cfg.label_scheme, split)

    train = _merge([load(src, "train") for src in cfg.train])
    validation: dict[str, LabelledData] = {}
    if cfg.validation:
        taken: set[str] = set()
        for source in cfg.validation:
            validation[set_name(source, taken)] = load(source, "validation")
    else:
        n_val = max(1, round(len(train) * cfg.validation_fraction))
        if n_val >= len(train):
            raise DataError(
                f"too few training rows ({len(train)}) to split off a validation set; pass --validation"
            )
        rest, val_idx = _stratified_split(train.labels, len(train) - n_val, cfg.seed)
        held_out = _subset(train, val_idx, f"{train.source} (held-out {cfg.validation_fraction:.0%})")
        validation["held-out"] = held_out
        train = _subset(train, rest, f"{train.source} (rest)")
    if cfg.max_train_samples and cfg.max_train_samples < len(train):
        keep, _ = _stratified_split(train.labels, cfg.max_train_samples, cfg.seed)
        train = _subset(train, keep, f"{train.source} (stratified subset of {cfg.max_train_samples})")
    return train, validation


def encode(
    tokenizer: Any,
    data: LabelledData,
    cfg: TrainConfig,
    sort: bool = False,
    weights: list[float] | None = None,
) -> EncodedDataset:
    columns = truncation.encode(tokenizer, data.texts, cfg.max_length, cfg.truncation)
    labels = list(data.labels)
    if sort:  # evaluation order does not matter; sorted batches carry almost no padding
        order = sorted(range(len(labels)), key=lambda i: len(columns["input_ids"][i]))
        columns = {k: [v[i] for i in order] for k, v in columns.items()}
        labels = [labels[i] for i in order]
        weights = [weights[i] for i in order] if weights is not None else None
    return EncodedDataset(columns, labels, weights)


def class_weights(labels: list[int]) -> list[float]:
    """'balanced' weights n / (k * n_c) for the k classes present; absent classes get 1."""
    counts = np.bincount(labels, minlength=len(LABELS))
    present = counts > 0
    weights = np.ones(len(LABELS))
    weights[present] = len(labels) / (present.sum() * counts[present])
    return [float(w) for w in weights]


def row_weights(labels: list[int], groups: list[str] | None) -> list[float]:
    """Per-row loss weights that balance the classes within each group (training file) apart.

    One file's balance must not set another's weights: tweets are mostly neutral, clothing reviews mostly
    positive. Each file keeps its share of the total weight; only its classes are evened out."""
    groups = groups or [""] * len(labels)
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    out = [1.0] * len(labels)
    for rows in by_group.values():
        weights = class_weights([labels[i] for i in rows])
        for i in rows:
            out[i] = weights[labels[i]]
    return out


def _scalar_metrics(eval_pred: Any) -> dict[str, float]:
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    m = classification_metrics(labels.tolist(), np.argmax(logits, axis=-1).tolist())
    return {"accuracy": m["accuracy"], "macro_recall": m["macro_recall"], "macro_f1": m["macro_f1"]}


def _load_base(cfg: TrainConfig, base_path: str, attention: str | None = None) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    extra = {"attn_implementation": attention} if attention else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_path, trust_remote_code=False)
        model = AutoModelForSequenceClassification.from_pretrained(
            base_path,
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id=dict(LABEL2ID),
            problem_type="single_label_classification",
            dtype=torch.float32,  # mixed precision, when on, is autocast; master weights stay fp32
            use_safetensors=True,
            trust_remote_code=False,
            **extra,
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load base model {cfg.base_model!r}: {str(exc).splitlines()[0]}") from None
    set_dropout(model, cfg.dropout)
    # Sentence-transformers checkpoints still say architectures=["BertModel"]; the export must name the head.
    model.config.architectures = [type(model).__name__]
    return tokenizer, model


def set_dropout(model: nn.Module, p: float) -> int:
    """Every nn.Dropout of the model (attention dropout included: BERT's attention reads its module's p);
    the config keeps the base's values, so a model trained from the export starts from them again."""
    modules = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for m in modules:
        m.p = p
    return len(modules)


def _wrap_lora(cfg: TrainConfig, model: Any) -> tuple[Any, dict[str, Any]]:
    from peft import LoraConfig, TaskType, get_peft_model

    targets = cfg.lora_target_modules or lora_targets(model.config.model_type)
    # The head is new, and the pooler of a sentence-transformers checkpoint was never trained for
    # classification (those models mean-pool), so both are trained in full next to the adapter.
    to_save = ["classifier"]
    if cfg.train_pooler and getattr(model.base_model, "pooler", None) is not None:
        to_save.append("pooler")
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        modules_to_save=list(to_save),  # peft appends its own defaults to this list
    )
    return get_peft_model(model, lora), {"lora_target_modules": targets, "modules_to_save": to_save}


def _trainer_class(metric_names: list[str]) -> Any:
    """Trainer with per-row loss weights (a 'weight' column, when the dataset has one) and, over several
    validation sets, their mean metrics logged as eval_<metric> so the best checkpoint is chosen on them."""
    from transformers import Trainer

    class SentimentTrainer(Trainer):
        loss_is_scaled_for_ga = False  # a per-batch mean: let Trainer divide by the accumulation steps

        def compute_loss(
            self,
            model: nn.Module,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            weight = inputs.pop("weight", None)
            if weight is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            losses = nn.functional.cross_entropy(outputs.logits.float(), labels, reduction="none")
            weight = weight.to(losses.device, torch.float32)
            loss = (losses * weight).sum() / weight.sum()  # as cross_entropy(weight=...) normalises
            return (loss, outputs) if return_outputs else loss

        def evaluate(
            self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval"
        ) -> Any:
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            names = (
                self.eval_dataset if eval_dataset is None and isinstance(self.eval_dataset, dict) else None
            )
            if names and len(names) > 1:
                mean = {
                    f"{metric_key_prefix}_{m}": float(
                        np.mean([metrics[f"{metric_key_prefix}_{name}_{m}"] for name in names])
                    )
                    for m in metric_names
                }
                self.log(mean)
                metrics.update(mean)
            return metrics

    return SentimentTrainer


def count_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def verify_export(out: Path, texts: list[str], expected: np.ndarray, max_length: int) -> None:
    """Reload the folder with plain transformers: no missing/unexpected weights, same predictions."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, info = AutoModelForSequenceClassification.from_pretrained(
        str(out), use_safetensors=True, trust_remote_code=False, output_loading_info=True
    )
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        raise RuntimeError(f"exported model does not reload cleanly: {bad}")
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    model.eval()
    with torch.inference_mode():
        enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        got = torch.softmax(model(**enc).logits.float(), dim=-1).numpy()
    if not np.allclose(got, expected, atol=2e-3):
        raise RuntimeError(
            f"reloaded model disagrees with the trained one (max diff {np.abs(got - expected).max()})"
        )


def _device_and_precision(cfg: TrainConfig) -> tuple[str, bool]:
    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported() if cfg.bf16 is None else cfg.bf16
        return "cuda", bool(bf16)
    # On a CPU, bf16 autocast pays only with native bf16 matrix units (AMX).
    from trainer.precision import amx_bf16

    return "cpu", amx_bf16() if cfg.bf16 is None else cfg.bf16


def attention_for(device: str, bf16: bool) -> str | None:
    """PURE: the attention to train with. torch's CPU flash attention is about 7x slower backwards in bf16
    than in fp32 (measured, torch 2.15), more than bf16 gains in the matrix products, so bf16 on a CPU
    trains with the eager attention; elsewhere the model's default."""
    return "eager" if device == "cpu" and bf16 else None


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train, evaluate on validation, export to cfg.output; returns the summary written to metrics.json.

    Everything is written to a staging folder next to the output and swapped in at the end, so a failed or
    interrupted run leaves an existing model folder as it was.
    """
    final = Path(cfg.output)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        summary = _run(cfg, staging)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
            staging.rename(final)
            shutil.rmtree(old)
        else:
            staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %s", final)
    return summary


def _run(cfg: TrainConfig, out: Path) -> dict[str, Any]:
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, TrainingArguments, set_seed

    started = time.monotonic()
    threads = cfg.threads or min(8, len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)
    set_seed(cfg.seed)
    device, bf16 = _device_and_precision(cfg)

    train_data, val_sets = load_data(cfg)
    log.info("train: %d rows %s", len(train_data), train_data.counts())
    for name, data in val_sets.items():
        log.info("validation %s: %d rows %s", name, len(data), data.counts())
    base_path = resolve_base_model(cfg.base_model)
    log.info("loading %s; its new classification head is reported as MISSING (newly initialised)", base_path)
    attention = attention_for(device, bf16)
    tokenizer, model = _load_base(cfg, base_path, attention)
    use_cache = getattr(model.config, "use_cache", None)  # not every config has it (MPNet)
    resolved: dict[str, Any] = {"base_model_path": base_path, "model_type": model.config.model_type}
    if not cfg.full:
        model, lora_info = _wrap_lora(cfg, model)
        resolved.update(lora_info)
    trainable, total = count_parameters(model)
    log.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)

    weights = row_weights(train_data.labels, train_data.groups) if cfg.weighted_loss else None
    train_ds = encode(tokenizer, train_data, cfg, weights=weights)
    # Metric names may not hold "/": one key per set, in the order given.
    val_ds = {
        name.replace("/", "_"): encode(tokenizer, data, cfg, sort=True) for name, data in val_sets.items()
    }
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
    eval_steps = cfg.eval_steps or max(10, math.ceil(total_steps / 5))
    resolved.update(
        learning_rate=cfg.lr,
        total_steps=total_steps,
        eval_steps=eval_steps,
        device=device,
        bf16=bf16,
        attention=model.config._attn_implementation,
        threads=threads,
        class_weights=_weights_by_file(train_data, weights),
        train_rows=len(train_data),
        validation_rows=sum(len(d) for d in val_sets.values()),
        train_counts=train_data.counts(),
        train_counts_by_file=_counts_by_file(train_data),
        validation_counts={name: d.counts() for name, d in val_sets.items()},
        trainable_params=trainable,
        total_params=total,
    )

    ckpt_dir = out / "checkpoints"
    args = TrainingArguments(
        **_version_dependent_arguments(TrainingArguments, cfg),
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="linear",
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model=cfg.metric,
        greater_is_better=True,
        logging_steps=max(1, min(50, total_steps // 25)),
        seed=cfg.seed,
        bf16=bf16,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        report_to="none",
        disable_tqdm=False,
        remove_unused_columns=False,  # else Trainer's collator drops the per-row "weight" column
    )
    callbacks = (
        [EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping)] if cfg.early_stopping else []
    )
    trainer = _trainer_class(["macro_recall", "accuracy", "macro_f1"])(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds if len(val_ds) > 1 else next(iter(val_ds.values())),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_scalar_metrics,
        callbacks=callbacks,
    )
    train_result = trainer.train()

    model = trainer.model
    if not cfg.full:
        adapter_dir = out / "adapter"
        model.save_pretrained(str(adapter_dir))
        model = model.merge_and_unload()
    model = model.to("cpu").float().eval()
    if use_cache is not None:
        model.config.use_cache = use_cache  # Trainer turns it off while training; keep the base's setting
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    truncation.write(out, cfg.max_length, cfg.truncation)
    shutil.rmtree(ckpt_dir, ignore_errors=True)

    sample = next(iter(val_sets.values())).texts[:16]
    with torch.inference_mode():
        enc = tokenizer(sample, truncation=True, max_length=cfg.max_length, padding=True, return_tensors="pt")
        expected = torch.softmax(model(**enc).logits.float(), dim=-1).numpy()
    verify_export(out, sample, expected, cfg.max_length)
    # The export's own fp32 scores, as `evaluate` and the worker compute them (training may have been bf16);
    # bf16 against them is the evidence the worker needs to serve bf16 on a CPU with AMX (precision.json).
    from trainer.precision import measure, write

    precision, fp32_metrics = measure(out, list(val_sets.values()))
    write(out, precision)
    per_set = {
        name: {"source": data.source, **m}
        for (name, data), m in zip(val_sets.items(), fp32_metrics, strict=True)
    }
    for name, m in per_set.items():
        log.info(
            "validation %s: macro_recall %.4f accuracy %.4f macro_f1 %.4f",
            name,
            m["macro_recall"],
            m["accuracy"],
            m["macro_f1"],
        )
    metrics = mean_over_sets(per_set)
    log.info(
        "bf16 on CPU: %+.2f points of validation macro recall", -precision["bf16"]["macro_recall_loss_points"]
    )

    wall = time.monotonic() - started
    state = trainer.state
    summary = {
        "validation": metrics,  # the mean over the sets (the same as the set itself when there is one)
        "validation_sets": per_set,
        "best_step": _best_step(state),
        "steps": state.global_step,
        "epochs": round(float(state.epoch or 0.0), 4),
        "train_loss": float(train_result.training_loss),
        "train_runtime_s": round(float(train_result.metrics.get("train_runtime", 0.0)), 1),
        "wall_time_s": round(wall, 1),
        "trainable_params": trainable,
        "total_params": total,
        "bf16_macro_recall_loss_points": precision["bf16"]["macro_recall_loss_points"],
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    record = {
        "config": {k: v for k, v in asdict(cfg).items() if k != "extra"},
        "resolved": resolved,
        "environment": _environment(),
        "trainer_arguments": json.loads(args.to_json_string()),
    }
    (out / "training_args.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    for i, (name, m) in enumerate(per_set.items()):
        # confusion_matrix.png is the first set's; each further set gets confusion_matrix.<name>.png
        suffix = "" if i == 0 else "." + name.replace("/", "_")
        plot_confusion_matrix(
            m["confusion_matrix"],
            out / f"confusion_matrix{suffix}.png",
            f"{name} ({m['n']} rows), macro recall {m['macro_recall']:.3f}",
        )
    plot_training_curve(state.log_history, out / "training_curve.png", f"eval_{cfg.metric}")
    (out / "log_history.json").write_text(json.dumps(state.log_history, indent=1) + "\n")

    from trainer.card import model_card

    (out / "README.md").write_text(model_card(cfg, resolved, summary))
    _make_readable(out)
    return summary


def _counts_by_file(data: LabelledData) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for label, group in zip(data.labels, data.groups or [data.source] * len(data), strict=True):
        counts = out.setdefault(group, dict.fromkeys(LABELS, 0))
        counts[LABELS[label]] += 1
    return out


def _weights_by_file(data: LabelledData, weights: list[float] | None) -> dict[str, dict[str, float]] | None:
    if weights is None:
        return None
    out: dict[str, dict[str, float]] = {}
    for label, group, w in zip(data.labels, data.groups or [data.source] * len(data), weights, strict=True):
        out.setdefault(group, {})[LABELS[label]] = round(w, 4)
    return out


def _make_readable(folder: Path) -> None:
    """mkdtemp and safetensors leave owner-only modes; the worker may run as another user."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _version_dependent_arguments(arguments_class: Any, cfg: TrainConfig) -> dict[str, Any]:
    """transformers 5 renamed group_by_length and folded warmup_ratio into warmup_steps (a float < 1)."""
    fields = arguments_class.__dataclass_fields__
    kwargs: dict[str, Any] = {}
    if "train_sampling_strategy" in fields:
        kwargs["train_sampling_strategy"] = "group_by_length" if cfg.group_by_length else "random"
    else:
        kwargs["group_by_length"] = cfg.group_by_length
    if "warmup_ratio" in fields:
        kwargs["warmup_ratio"] = cfg.warmup_ratio
    else:
        kwargs["warmup_steps"] = cfg.warmup_ratio
    return kwargs


def _best_step(state: Any) -> int | None:
    ckpt = state.best_model_checkpoint
    if not ckpt:
        return None
    try:
        return int(str(ckpt).rsplit("-", 1)[-1])
    except ValueError:
        return None


def _environment() -> dict[str, str]:
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        import peft

        env["peft"] = peft.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env
