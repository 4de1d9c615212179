"""The worker's registry reader and the swap watcher, on registries the trainer writes, without Kafka."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from trainer.registry import Registry
from worker.classifier import Classifier, ModelError
from worker.messages import ModelRef, Scores
from worker.metrics import Metrics
from worker.registry import RegistryError, Version, resolve, verify
from worker.swap import Swapper


@pytest.fixture
def registry(tmp_path: Path, tiny_model: Callable[..., Path]) -> tuple[Registry, list[str]]:
    reg = Registry(tmp_path / "reg")
    versions = [reg.register(tiny_model(seed))["version"] for seed in (1, 2, 3)]
    reg.promote(versions[0])
    return reg, versions


def _writable(path: Path) -> Path:
    path.chmod(0o644)
    return path


def test_verify_accepts_a_registered_version_and_names_it(registry: tuple[Registry, list[str]]) -> None:
    reg, versions = registry
    assert resolve(reg.root, "champion") == versions[0]
    v = verify(reg.root, versions[1])
    assert (v.version, v.name, v.path) == (versions[1], "tiny-bert", reg.root / "versions" / versions[1])


@pytest.mark.parametrize(
    ("spoil", "needle"),
    [
        ("flip_byte", "model.safetensors does not match the manifest"),
        ("truncate", "model.safetensors does not match the manifest"),
        ("delete", "tokenizer.json is missing"),
        ("extra_weights", "weights not in the manifest: extra.safetensors"),
        ("manifest", "the manifest does not describe this version"),
    ],
)
def test_verify_refuses_a_version_changed_after_registration(
    registry: tuple[Registry, list[str]], spoil: str, needle: str
) -> None:
    reg, versions = registry
    folder = reg.root / "versions" / versions[1]
    weights = _writable(folder / "model.safetensors")
    if spoil == "flip_byte":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif spoil == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif spoil == "delete":
        (folder / "tokenizer.json").unlink()
    elif spoil == "extra_weights":
        shutil.copy(weights, folder / "extra.safetensors")
    else:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["version"] = "0" * 12
        _writable(folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match=needle):
        verify(reg.root, versions[1])


def test_resolve_says_what_is_missing(tmp_path: Path, registry: tuple[Registry, list[str]]) -> None:
    reg, _ = registry
    with pytest.raises(RegistryError, match="is not a model registry"):
        resolve(tmp_path / "nowhere", "champion")
    with pytest.raises(RegistryError, match="has no alias 'canary'"):
        resolve(reg.root, "canary")
    (reg.root / "aliases.json").unlink()
    with pytest.raises(RegistryError, match="no aliases yet"):
        resolve(reg.root, "champion")


@dataclass
class Loaded:
    model_ref: ModelRef

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [[1] for _ in texts]

    def classify(self, encoded: Sequence[Sequence[int]]) -> list[Scores]:
        return [Scores(negative=1.0, neutral=0.0, positive=0.0) for _ in encoded]


@dataclass
class Loader:
    fail: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def __call__(self, v: Version) -> Loaded:
        self.calls.append(v.version)
        if v.version in self.fail:
            raise ModelError(f"cannot load model from {v.path}: broken on purpose")
        return Loaded(ModelRef(name=v.name, version=v.version, precision="fp32"))


def _swapper(reg: Registry, serving: str, load: Loader, metrics: Metrics) -> Swapper:
    return Swapper(
        reg.root,
        "champion",
        load,
        serving=Loaded(ModelRef(name="tiny-bert", version=serving, precision="fp32")),
        poll_s=60,
        metrics=metrics,
        device="cpu",
    )


def _samples(metrics: Metrics, name: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels.values()): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == name
    }


def test_a_promoted_version_is_loaded_once_and_handed_over_once(registry: tuple[Registry, list[str]]) -> None:
    reg, versions = registry
    load, metrics = Loader(), Metrics()
    metrics.model_info.labels("tiny-bert", versions[0], "cpu").set(1)
    swapper = _swapper(reg, versions[0], load, metrics)
    swapper.check()
    assert swapper.take() is None and load.calls == []  # the alias names the served version
    reg.promote(versions[1])
    swapper.check()
    swapper.check()
    assert load.calls == [versions[1]]
    model = swapper.take()
    assert model is not None and model.model_ref.version == versions[1]
    assert swapper.take() is None and swapper.serving == versions[1]
    assert _samples(metrics, "sentiment_model_swaps_total") == {("swapped",): 1.0}
    assert _samples(metrics, "sentiment_model_info") == {("tiny-bert", versions[1], "cpu"): 1.0}


def test_a_version_that_fails_is_never_served_and_retried_only_when_the_alias_moves(
    registry: tuple[Registry, list[str]],
) -> None:
    reg, versions = registry
    load, metrics = Loader(fail={versions[1]}), Metrics()
    swapper = _swapper(reg, versions[0], load, metrics)
    reg.promote(versions[1])
    for _ in range(3):
        swapper.check()
    assert load.calls == [versions[1]] and swapper.take() is None and swapper.serving == versions[0]
    assert _samples(metrics, "sentiment_model_swaps_total") == {("failed",): 1.0}
    reg.promote(versions[0])  # away and back: worth another try
    swapper.check()
    reg.promote(versions[1])
    swapper.check()
    assert load.calls == [versions[1], versions[1]]


def test_a_corrupted_version_is_refused_before_anything_loads(registry: tuple[Registry, list[str]]) -> None:
    reg, versions = registry
    load, metrics = Loader(), Metrics()
    swapper = _swapper(reg, versions[0], load, metrics)
    weights = _writable(reg.root / "versions" / versions[2] / "model.safetensors")
    weights.write_bytes(weights.read_bytes()[:-10])
    reg.promote(versions[2])
    swapper.check()
    assert load.calls == [] and swapper.take() is None
    assert _samples(metrics, "sentiment_model_swaps_total") == {("failed",): 1.0}


def test_a_staged_model_is_dropped_when_the_alias_moves_back_first(
    registry: tuple[Registry, list[str]],
) -> None:
    reg, versions = registry
    swapper = _swapper(reg, versions[0], Loader(), Metrics())
    reg.promote(versions[1])
    swapper.check()
    reg.rollback()
    swapper.check()
    assert swapper.take() is None and swapper.serving == versions[0]


def test_the_real_classifier_refuses_a_version_with_wrong_labels(
    registry: tuple[Registry, list[str]],
) -> None:
    """A version folder written by something other than `register` (so no label check) is still refused."""
    reg, versions = registry
    folder = reg.root / "versions" / versions[1]
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "bad", "1": "meh", "2": "good"}
    _writable(folder / "config.json").write_text(json.dumps(config))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["config.json"]["sha256"] = hashlib.sha256(
        (folder / "config.json").read_bytes()
    ).hexdigest()
    manifest["files"]["config.json"]["bytes"] = (folder / "config.json").stat().st_size
    _writable(folder / "manifest.json").write_text(json.dumps(manifest))
    metrics = Metrics()
    swapper = Swapper(
        reg.root,
        "champion",
        lambda v: Classifier(v.path, device="cpu", threads=1, name=v.name),
        serving=Loaded(ModelRef(name="tiny-bert", version=versions[0], precision="fp32")),
        poll_s=60,
        metrics=metrics,
        device="cpu",
    )
    reg.promote(versions[1])
    swapper.check()
    assert swapper.take() is None
    reg.promote(versions[2])
    swapper.check()
    model = swapper.take()
    assert model is not None and model.model_ref == ModelRef(
        name="tiny-bert", version=versions[2], precision="fp32"
    )
    assert _samples(metrics, "sentiment_model_swaps_total") == {("failed",): 1.0, ("swapped",): 1.0}
