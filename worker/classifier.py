"""The only module that imports torch and transformers: load a model folder and classify token ids.

A model folder (what the trainer exports) must hold config.json with id2label naming negative, neutral and
positive, the tokenizer files, and *.safetensors weights. Folders with only pickle weights (*.bin, *.pt,
*.ckpt) are refused, and no code from the folder is ever run (trust_remote_code=False).

Precision: fp32; bf16 or fp16 (autocast on CUDA; on CPU bf16 casts the weights, for CPUs with bf16 kernels);
int8 (CPU only: dynamic quantization of every nn.Linear, int8 weights with one scale per output channel; one
scale per tensor cost the trained MiniLM 1.8 points of validation macro recall, per channel none); auto =
bf16 on CUDA (fp16 where the card lacks bf16); on CPU bf16 only where both hold: the CPU has AMX-BF16 (native
bf16 matrix units, where bf16 measured 2.2-2.4x fp32), and the model folder's precision.json (written by the
trainer at export) records a bf16 macro-recall loss of at most BF16_MAX_LOSS_POINTS against fp32 on its
validation set(s); fp32 otherwise. The choice is made per model folder (a hot-swapped version decides anew),
logged with its reason, and named in every result (model.precision).

Out of memory: a forward pass that runs out of memory is split in halves and retried; a text that fails on
its own gets the error as its result, which the loop dead-letters, so one huge input cannot stall a partition.

Model identity, reported in every result: name = the folder's base name; version = the first 12 hex digits of
the sha256 over the folder's *.safetensors files (sorted by name), so a retrained model gets a new version.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
)
from transformers.utils import logging as hf_logging

from worker import truncation
from worker.batching import plan_chunks, restore_order, run_halving
from worker.messages import LABELS, ModelRef, Scores

log = logging.getLogger(__name__)

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Without one of these transformers builds an empty tokenizer (special tokens only) and labels go random.
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model")

Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "bf16", "fp16", "int8")
Resolved = Literal["fp32", "bf16", "fp16", "int8"]  # what a model runs in: auto is always resolved
# The trainer's record of bf16 against fp32 (its trainer/precision.py writes it; the folder is the contract).
EVIDENCE_FILE = "precision.json"
# auto takes bf16 on CPU only when the export measured at most this loss of validation macro recall.
BF16_MAX_LOSS_POINTS = 0.3


class ModelError(Exception):
    """The model folder cannot be used; the message is one line for the operator."""


def check_model_dir(path: Path) -> list[Path]:
    """Return the folder's safetensors files, or raise ModelError saying what is wrong with the folder."""
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist")
    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            raise ModelError(f"{path} holds only a LoRA adapter; point MODEL_DIR at the merged model export")
        raise ModelError(f"{path} has no config.json, so it is not a model folder")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickles = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
        if pickles:
            raise ModelError(
                f"{path} has only pickle weights ({', '.join(sorted(pickles))}); "
                "the worker loads safetensors only: re-save the model with safe_serialization"
            )
        raise ModelError(f"{path} has no *.safetensors weights")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelError(f"{path} has no tokenizer files ({', '.join(_TOKENIZER_FILES)})")
    return weights


def model_ref(path: Path, weights: Sequence[Path]) -> ModelRef:
    digest = hashlib.sha256()
    for w in weights:
        digest.update(w.name.encode())
        with w.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return ModelRef(name=path.resolve().name, version=digest.hexdigest()[:12], precision="fp32")


def is_out_of_memory(exc: Exception) -> bool:
    """CUDA and CPU allocation failures: worth retrying on fewer rows."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and (
        "out of memory" in str(exc) or "can't allocate memory" in str(exc)
    )


def resolve_precision(precision: str, device: torch.device) -> Resolved:
    """The precision to run (auto resolved for the device); ModelError for a combination that cannot run."""
    if precision not in PRECISIONS:
        raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type == "cuda":
        if precision == "int8":
            raise ModelError(
                "PRECISION=int8 is a CPU option (dynamic quantization); use bf16 or fp16 on CUDA"
            )
        if precision in ("auto", "bf16") and not torch.cuda.is_bf16_supported():
            if precision == "bf16":
                raise ModelError("PRECISION=bf16 but this GPU has no bf16 support; use fp16")
            return "fp16"
        return "bf16" if precision == "auto" else cast(Resolved, precision)
    if precision == "fp16":
        raise ModelError("PRECISION=fp16 needs CUDA; on CPU use fp32, bf16 or int8")
    return "fp32" if precision == "auto" else cast(Resolved, precision)


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of /proc/cpuinfo's first "flags" line (empty when there is none)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX-BF16) and torch's oneDNN can use it."""
    try:
        flags = cpu_flags(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:  # not Linux: stay with fp32
        return False
    return "amx_bf16" in flags and torch.backends.mkldnn.is_available()


def read_evidence(model_dir: Path) -> dict[str, Any] | None:
    """The folder's precision.json, or None when it is missing or unreadable (then auto stays fp32)."""
    try:
        data = json.loads((model_dir / EVIDENCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def bf16_loss_points(evidence: Mapping[str, Any] | None) -> float | None:
    """The recorded bf16 macro-recall loss in points (fp32 - bf16, the worst validation set), if any."""
    bf16 = (evidence or {}).get("bf16")
    loss = bf16.get("macro_recall_loss_points") if isinstance(bf16, dict) else None
    if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss):
        return None
    return float(loss)


def pick_precision(
    requested: str, device: torch.device, *, native: bool, evidence: Mapping[str, Any] | None
) -> tuple[Resolved, str]:
    """(precision to run, why). PURE apart from resolve_precision's CUDA query: ``native`` says whether the
    CPU has AMX-BF16 and ``evidence`` is the model folder's precision.json."""
    chosen = resolve_precision(requested, device)
    if requested != "auto":
        return chosen, f"SENTIMENT_PRECISION={requested}"
    if device.type == "cuda":
        return chosen, f"auto on CUDA: {chosen} autocast"
    if not native:
        return "fp32", "auto on CPU: no AMX-BF16 on this CPU"
    loss = bf16_loss_points(evidence)
    if loss is None:
        return (
            "fp32",
            f"auto on CPU: AMX-BF16 present, but the model folder has no bf16 measurement ({EVIDENCE_FILE})",
        )
    if loss > BF16_MAX_LOSS_POINTS:
        return "fp32", (
            f"auto on CPU: AMX-BF16 present, but bf16 cost {loss:.2f} points of validation macro recall at "
            f"export (more than {BF16_MAX_LOSS_POINTS})"
        )
    return "bf16", (
        f"auto on CPU: AMX-BF16 present and bf16 cost {loss:.2f} points of validation macro recall at export "
        f"(at most {BF16_MAX_LOSS_POINTS})"
    )


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice: the API still works in torch 2.x
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig})


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("DEVICE=cuda but CUDA is not available")
    return torch.device(requested)


class Classifier:
    """Tokenize with ``encode``; classify token ids with ``classify``.

    classify sorts its texts by length and runs them in forward passes of at most max_rows rows and
    max_tokens padded tokens (rows x longest row), then returns the scores in the order given.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        device: str = "auto",
        max_length: int | None = None,
        max_rows: int = 32,
        max_tokens: int = 4096,
        threads: int = 0,
        precision: str = "auto",
        fault_oom_tokens: int | None = None,
        name: str | None = None,
    ) -> None:
        path = Path(model_dir)
        weights = check_model_dir(path)
        self.device = pick_device(device)
        self.precision, self.precision_reason = pick_precision(
            precision,
            self.device,
            native=self.device.type == "cpu" and precision == "auto" and native_bf16(),
            evidence=read_evidence(path) if precision == "auto" else None,
        )
        # Fault injection (tests): a forward pass over more padded tokens than this raises out-of-memory.
        self.fault_oom_tokens = fault_oom_tokens
        if self.device.type == "cpu" and threads > 0:
            torch.set_num_threads(threads)
        try:
            folder_length, self.truncation = truncation.read(path) or (truncation.DEFAULT_MAX_LENGTH, "right")
        except truncation.TruncationError as exc:
            raise ModelError(str(exc)) from None
        # SENTIMENT_MAX_LENGTH overrides the folder's length; the way texts are cut is always the folder's.
        self.max_length = max_length or folder_length
        self.max_rows = max_rows
        self.max_tokens = max_tokens
        ref = model_ref(path, weights)
        # A registry version folder is named by its version: report the model's name.
        self.model_ref = ModelRef(name=name or ref.name, version=ref.version, precision=self.precision)
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                path, trust_remote_code=False, local_files_only=True
            )
            model = AutoModelForSequenceClassification.from_pretrained(
                path, use_safetensors=True, trust_remote_code=False, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load model from {path}: {str(exc).splitlines()[0]}") from exc
        self._columns = label_columns(model.config.id2label)
        model = model.to(self.device).eval()
        self._autocast_dtype: torch.dtype | None = None
        if self.device.type == "cuda" and self.precision != "fp32":
            self._autocast_dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        elif self.precision == "bf16":
            model = model.to(torch.bfloat16)
        elif self.precision == "int8":
            model = quantize_int8(model)
        self.model = model
        pad = self.tokenizer.pad_token_id
        self._pad_id = 0 if pad is None else int(pad)
        self._fast = truncating_copy(
            self.tokenizer, None if self.truncation == "head+tail" else self.max_length
        )
        self.classify(self.encode(["warm up"]))
        log.info(
            "model loaded",
            extra={
                "model": self.model_ref.name,
                "version": self.model_ref.version,
                "device": str(self.device),
                "precision": self.precision,
                "precision_reason": self.precision_reason,
                "max_length": self.max_length,
                "truncation": self.truncation,
                "tokenizer_threads": (
                    tokenizer_threads(os.environ, len(os.sched_getaffinity(0))) if self._fast else 1
                ),
            },
        )

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, cut to max_length as the folder says (special tokens included)."""
        if not texts:
            return []
        if self.truncation == "head+tail":
            n = self.max_length
            texts = [truncation.precut(t, n) for t in texts]
            if self._fast is not None:
                return [truncation.cut(e.ids, n) for e in self._fast(texts)]
            out = self.tokenizer(texts, truncation=False, verbose=False)
            return [truncation.cut(ids, n) for ids in out["input_ids"]]
        if self._fast is not None:
            return [e.ids for e in self._fast(list(texts))]
        out = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        return [list(ids) for ids in out["input_ids"]]

    def classify(self, encoded: Sequence[Sequence[int]]) -> list[Scores | Exception]:
        """Scores per row, in the order given; a row that runs out of memory even alone gets the error."""
        if not encoded:
            return []
        chunks = plan_chunks([len(e) for e in encoded], max_rows=self.max_rows, max_tokens=self.max_tokens)
        return restore_order(
            chunks,
            [run_halving([encoded[i] for i in chunk], self._forward, self._oom) for chunk in chunks],
        )

    def _oom(self, exc: Exception) -> bool:
        if not is_out_of_memory(exc):
            return False
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        log.warning("forward pass out of memory; splitting it", extra={"error": type(exc).__name__})
        return True

    def _forward(self, rows: Sequence[Sequence[int]]) -> list[Scores]:
        width = max(len(r) for r in rows)
        if self.device.type == "cuda":
            width = -(-width // 8) * 8  # tensor cores like multiples of 8
        if self.fault_oom_tokens is not None and len(rows) * width > self.fault_oom_tokens:
            raise torch.OutOfMemoryError(f"injected: {len(rows)} x {width} tokens > {self.fault_oom_tokens}")
        ids_np, mask_np = pad_rows(rows, width, self._pad_id)
        ids = torch.from_numpy(ids_np).to(self.device, non_blocking=True)
        mask = torch.from_numpy(mask_np).to(self.device, non_blocking=True)
        autocast = (
            torch.autocast(device_type="cuda", dtype=self._autocast_dtype)
            if self._autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            logits = self.model(input_ids=ids, attention_mask=mask).logits
        probs = torch.softmax(logits.float(), dim=-1)[:, self._columns].cpu().tolist()
        return [Scores(negative=p[0], neutral=p[1], positive=p[2]) for p in probs]


def pad_rows(rows: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input ids, attention mask), int64 [rows, width]: each row left-aligned, then pad_id / 0."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    mask = np.arange(width) < lengths[:, None]
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    # Boolean-mask assignment fills row by row, left to right: the rows' tokens in order, in one copy.
    ids[mask] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return ids, mask.astype(np.int64)


def truncating_copy(tokenizer: Any, max_length: int | None) -> Callable[[list[str]], list[Any]] | None:
    """encode_batch of a private copy of the fast tokenizer, truncating to max_length (None: not at all; the
    caller cuts head+tail), without padding.

    The same ids as ``tokenizer(texts, truncation=True, max_length=...)``, at a fraction of the Python cost:
    transformers turns every Encoding into dicts of lists (ids, type ids, masks) that the worker never uses,
    and on a GPU tokenizing is most of the worker's time. A copy, because transformers re-sets truncation on
    the shared backend at every call. None for a tokenizer with no fast backend (the caller falls back).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        return None
    fast = Tokenizer.from_str(backend.to_str())
    if max_length is None:
        fast.no_truncation()
    else:
        fast.enable_truncation(max_length)
    fast.no_padding()
    # encode_batch_fast (tokenizers >= 0.21) skips the character offsets the worker does not use.
    encode: Callable[[list[str]], list[Any]] = getattr(fast, "encode_batch_fast", fast.encode_batch)
    return encode


# What the tokenizers library reads as "off" in TOKENIZERS_PARALLELISM (its utils/parallelism.rs).
_TOKENIZERS_OFF = frozenset({"", "off", "false", "f", "no", "n", "0"})


def tokenizer_threads(env: Mapping[str, str], cpus: int) -> int:
    """Threads the fast tokenizer encodes a batch on: its rayon pool, one per CPU unless the environment says
    otherwise. Worth knowing because on a GPU tokenizing is most of the worker's CPU time, and many training
    setups export TOKENIZERS_PARALLELISM=false (to quiet a fork warning), which leaves it one thread."""
    if env.get("TOKENIZERS_PARALLELISM", "true").lower() in _TOKENIZERS_OFF:
        return 1
    for name in ("RAYON_NUM_THREADS", "RAYON_RS_NUM_CPUS"):
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return cpus


def label_columns(id2label: dict[int, str] | None) -> list[int]:
    """Logit columns of negative, neutral, positive (in that order) from the model config's id2label."""
    names = {str(name).strip().lower(): int(i) for i, name in (id2label or {}).items()}
    if set(names) != set(LABELS):
        raise ModelError(
            f"the model's id2label must name exactly {', '.join(LABELS)}; got {sorted(names) or 'nothing'}"
        )
    return [names[label] for label in LABELS]


def save_random_classifier(
    out_dir: str | os.PathLike[str],
    *,
    tokenizer_dir: str | os.PathLike[str],
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
) -> Path:
    """Save a small randomly initialised BERT classifier with a real tokenizer: a model folder for tests and
    benchmarks that needs no download. Its labels are meaningless but deterministic."""
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden_size * 4,
        max_position_embeddings=512,
        initializer_range=0.5,  # large weights, so that random texts get a spread of labels
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    hf_logging.disable_progress_bar()
    out = Path(out_dir)
    BertForSequenceClassification(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
