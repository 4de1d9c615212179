"""Long texts: trainer and worker cut them the same way, as the model folder's truncation.json says."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from trainer import truncation as trainer_cut
from worker import truncation as worker_cut
from worker.classifier import Classifier, ModelError

VERDICT = "Sadly it broke after a week and support never answered, avoid."
LONG = "The strap is soft and the colour matches the photos. " * 40 + VERDICT


@pytest.mark.parametrize("cut", [trainer_cut.cut, worker_cut.cut])
def test_head_and_tail_keep_both_ends(cut: Callable[..., list[int]]) -> None:
    ids = list(range(300))  # 0 stands for [CLS], 299 for [SEP]
    args = (ids, 128) if cut is worker_cut.cut else (ids, 128, "head+tail")
    kept = cut(*args)
    assert len(kept) == 128
    assert kept[:32] == list(range(32)) and kept[32:] == list(range(300 - 96, 300))
    assert cut(*((ids[:50], 128) if cut is worker_cut.cut else (ids[:50], 128, "head+tail"))) == ids[:50]


def test_right_cut_keeps_the_first_tokens_and_the_closing_one() -> None:
    assert trainer_cut.cut(list(range(10)), 6, "right") == [0, 1, 2, 3, 4, 9]


def test_precut_only_touches_huge_texts() -> None:
    assert trainer_cut.precut(LONG, 128) == LONG == worker_cut.precut(LONG, 128)
    huge = "a" * 10_000 + "MIDDLE" + "b" * 10_000
    cut = trainer_cut.precut(huge, 128)
    assert cut == worker_cut.precut(huge, 128)
    assert cut.startswith("a" * 2048) and cut.endswith("b" * 2048) and "MIDDLE" not in cut


def folder_with(tiny_model: Callable[..., Path], tmp_path: Path, setting: dict[str, object] | None) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model(), folder)
    if setting is not None:
        (folder / "truncation.json").write_text(json.dumps(setting))
    return folder


@pytest.mark.parametrize("strategy", ["head+tail", "right"])
def test_worker_encodes_as_the_trainer_trained(
    tiny_model: Callable[..., Path], tmp_path: Path, strategy: str
) -> None:
    from transformers import AutoTokenizer

    folder = folder_with(tiny_model, tmp_path, None)
    trainer_cut.write(folder, 64, strategy)
    texts = [LONG, "short and sweet", VERDICT, "x " * 5000]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    trained = trainer_cut.encode(tokenizer, texts, 64, strategy)["input_ids"]
    clf = Classifier(folder, device="cpu", threads=1)
    assert (clf.max_length, clf.truncation) == (64, strategy)
    assert clf.encode(texts) == trained
    assert [len(ids) for ids in trained[:2]] == [64, len(tokenizer("short and sweet")["input_ids"])]
    verdict_ids = tokenizer(VERDICT, add_special_tokens=False)["input_ids"]
    kept_end = trained[0][-len(verdict_ids) - 1 : -1]
    assert (kept_end == verdict_ids) is (strategy == "head+tail")


def test_a_folder_without_the_file_is_cut_on_the_right_at_128(tiny_model: Callable[..., Path]) -> None:
    clf = Classifier(tiny_model(), device="cpu", threads=1)
    assert (clf.max_length, clf.truncation) == (128, "right")
    assert len(clf.encode([LONG])[0]) == 128
    assert Classifier(tiny_model(), device="cpu", threads=1, max_length=48).max_length == 48


@pytest.mark.parametrize(
    "setting", [{"max_length": 128, "strategy": "middle"}, {"strategy": "head+tail"}, {"max_length": 2}]
)
def test_a_truncation_file_the_worker_cannot_follow_refuses_the_folder(
    tiny_model: Callable[..., Path], tmp_path: Path, setting: dict[str, object]
) -> None:
    with pytest.raises(ModelError, match=r"truncation\.json"):
        Classifier(folder_with(tiny_model, tmp_path, setting), device="cpu", threads=1)


def test_trainer_inference_reads_the_folders_setting(tiny_model: Callable[..., Path], tmp_path: Path) -> None:
    from trainer.inference import load_classifier, predict_scores

    folder = folder_with(tiny_model, tmp_path, None)
    trainer_cut.write(folder, 64, "head+tail")
    clf = load_classifier(str(folder), device="cpu")
    assert (clf.max_length, clf.truncation) == (64, "head+tail")
    worker = Classifier(folder, device="cpu", threads=1)
    texts = [LONG, "fine", VERDICT]
    ours = predict_scores(clf, texts, batch_size=2)
    theirs = worker.classify(worker.encode(texts))
    for row, scores in zip(ours, theirs, strict=True):
        assert not isinstance(scores, Exception)
        assert row.tolist() == pytest.approx([scores.negative, scores.neutral, scores.positive], abs=1e-4)


def test_trainer_inference_refuses_a_truncation_file_it_cannot_follow(
    tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    from trainer.inference import load_classifier
    from trainer.models import ModelError as TrainerModelError

    folder = folder_with(tiny_model, tmp_path, {"max_length": 128, "strategy": "middle"})
    with pytest.raises(TrainerModelError, match=r"truncation\.json"):
        load_classifier(str(folder), device="cpu")
