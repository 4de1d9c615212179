"""End to end on a tiny budget: train MiniLM with LoRA through the CLI, export, reload without peft, evaluate.

Uses a few hundred real TweetEval rows from ../shared/datasets (read in place, never copied into the repo)
and a few dozen optimiser steps, so the model is barely trained: these tests check the pipeline and the
export contract, not accuracy (the README's recipe results do that).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATASETS = Path(os.environ.get("SENTIMENT_DATASETS_DIR", ROOT.parent / "shared" / "datasets"))
TWEETEVAL = DATASETS / "tweeteval_sentiment"
LABELS = ["negative", "neutral", "positive"]

pytestmark = pytest.mark.slow


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-m", "trainer", *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def train_args(data: dict[str, Path]) -> list[str]:
    sources = ["--train", str(data["train"]), "--validation", str(data["validation"])]
    return ["train", "--base-model", "minilm", *sources]


def last_json(stdout: str) -> Any:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not (TWEETEVAL / "train.jsonl").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"TweetEval data not found under {TWEETEVAL} (set SENTIMENT_DATASETS_DIR)")
        pytest.skip(f"TweetEval data not found under {TWEETEVAL}")
    folder = tmp_path_factory.mktemp("data")
    lines = (TWEETEVAL / "validation.jsonl").read_text(encoding="utf-8").splitlines()[:200]
    (folder / "validation.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"train": TWEETEVAL / "train.jsonl", "validation": folder / "validation.jsonl"}


@pytest.fixture(scope="module")
def trained(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("models") / "minilm"
    result = cli(
        *train_args(data),
        "--output", str(out), "--max-train-samples", "320", "--max-steps", "16", "--eval-steps", "8",
        "--threads", "2",
    )  # fmt: skip
    return out, last_json(result.stdout)


def test_export_layout(trained: tuple[Path, dict[str, Any]]) -> None:
    out, summary = trained
    for name in (
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "training_args.json",
        "metrics.json", "confusion_matrix.png", "training_curve.png", "README.md",
        "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
    ):  # fmt: skip
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()
    assert [p.name for p in out.parent.iterdir()] == ["minilm"]  # no staging folders left
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert config["label2id"] == {"negative": 0, "neutral": 1, "positive": 2}
    assert config["architectures"] == ["BertForSequenceClassification"]

    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    assert "classifier.weight" in keys and "bert.pooler.dense.weight" in keys
    assert not [k for k in keys if "lora" in k or "modules_to_save" in k or "base_layer" in k]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == summary["steps"] == 16
    assert metrics["validation"]["n"] == 200
    assert metrics["validation"]["macro_recall"] == summary["macro_recall"]
    args = json.loads((out / "training_args.json").read_text())
    assert args["config"]["max_steps"] == 16 and args["resolved"]["train_rows"] == 320
    assert args["resolved"]["modules_to_save"] == ["classifier", "pooler"]
    assert "macro recall" in (out / "README.md").read_text()
    from trainer.precision import amx_bf16

    # bf16 autocast where the CPU has AMX, with eager attention (torch's CPU flash kernel is slow backwards
    # in bf16); dropout off
    resolved = args["resolved"]
    assert (resolved["bf16"], resolved["attention"]) == ((True, "eager") if amx_bf16() else (False, "sdpa"))
    assert args["config"]["dropout"] == 0.0 and "_attn_implementation" not in config


def test_export_records_bf16_against_fp32_for_the_workers_auto(trained: tuple[Path, dict[str, Any]]) -> None:
    out, _ = trained
    bf16 = json.loads((out / "precision.json").read_text())["bf16"]
    [measured] = bf16["sets"]
    assert measured["n"] == 200
    assert (
        bf16["macro_recall_loss_points"]
        == measured["macro_recall_loss_points"]
        == pytest.approx(100 * (measured["fp32_macro_recall"] - measured["bf16_macro_recall"]), abs=1e-3)
    )
    metrics = json.loads((out / "metrics.json").read_text())
    # metrics.json's figures are the export's own fp32 scores, as the worker loads it (training may be bf16)
    assert measured["fp32_macro_recall"] == metrics["validation"]["macro_recall"]
    assert metrics["bf16_macro_recall_loss_points"] == bf16["macro_recall_loss_points"]
    assert "bf16 weights on the CPU (`precision.json`)" in (out / "README.md").read_text()


def test_loads_with_plain_transformers_and_no_peft(trained: tuple[Path, dict[str, Any]]) -> None:
    out, _ = trained
    # sys.modules["peft"] = None makes `import peft` fail and transformers see peft as not installed.
    snippet = f"""
import sys
sys.modules["peft"] = None
import transformers
assert not transformers.utils.is_peft_available()
transformers.logging.set_verbosity_info()
from transformers import AutoTokenizer, AutoModelForSequenceClassification
model = AutoModelForSequenceClassification.from_pretrained({str(out)!r})
tokenizer = AutoTokenizer.from_pretrained({str(out)!r})
inputs = tokenizer("The movie was absolutely fantastic!", return_tensors="pt", truncation=True)
print(model.config.id2label[model(**inputs).logits.argmax(-1).item()])
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-c", snippet]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] in LABELS
    log = result.stderr
    for word in ("newly initialized", "MISSING", "UNEXPECTED", "MISMATCH", "not used"):
        assert word not in log, log[-3000:]


def test_evaluate_cli_reproduces_validation_metrics(
    trained: tuple[Path, dict[str, Any]], data: dict[str, Path], tmp_path: Path
) -> None:
    out, _ = trained
    report = tmp_path / "report" / "validation.json"
    result = cli("evaluate", "--model", str(out), "--data", str(data["validation"]), "--report", str(report))
    scores = last_json(result.stdout)
    assert scores["n"] == 200
    assert set(scores["per_class"]) == set(LABELS)
    assert sum(map(sum, scores["confusion_matrix"])) == 200
    # Same rows, same weights: the exported model must score like the trained one (batches are padded
    # differently, so allow one near-tie to flip).
    trained_scores = json.loads((out / "metrics.json").read_text())["validation"]
    assert abs(scores["accuracy"] - trained_scores["accuracy"]) <= 1 / 200
    assert json.loads(report.read_text())["macro_recall"] == scores["macro_recall"]
    assert (report.parent / "validation.confusion_matrix.png").is_file()


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_evaluate_in_a_lower_precision_scores_that_model(
    trained: tuple[Path, dict[str, Any]], data: dict[str, Path], precision: str
) -> None:
    out, _ = trained
    fp32 = last_json(cli("evaluate", "--model", str(out), "--data", str(data["validation"])).stdout)
    args = ("evaluate", "--model", str(out), "--data", str(data["validation"]), "--precision", precision)
    low = last_json(cli(*args).stdout)
    assert (fp32["precision"], low["precision"]) == ("fp32", precision)
    assert low["n"] == 200 and low["texts_per_s"] > 0
    # Per-channel int8 weights and bf16 weights move few predictions of a trained model (full set: README).
    assert abs(low["accuracy"] - fp32["accuracy"]) <= 0.05


def test_predict_cli(trained: tuple[Path, dict[str, Any]]) -> None:
    out, _ = trained
    result = cli("predict", "--model", str(out), "I love it", "worst day ever")
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [line["text"] for line in lines] == ["I love it", "worst day ever"]
    for line in lines:
        assert line["label"] in LABELS
        assert set(line["scores"]) == set(LABELS)
        assert sum(line["scores"].values()) == pytest.approx(1.0, abs=1e-3)
        assert line["label"] == max(line["scores"], key=line["scores"].get)


def test_full_fine_tuning_exports_without_adapter(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "full"
    cli(
        *train_args(data),
        "--output", str(out), "--full", "--max-train-samples", "64", "--max-steps", "4", "--threads", "2",
    )  # fmt: skip
    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    assert not (out / "adapter").exists()
    args = json.loads((out / "training_args.json").read_text())
    assert args["resolved"]["trainable_params"] == args["resolved"]["total_params"]


@pytest.mark.gpu
def test_train_uses_cuda_with_bf16(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    cli(
        *train_args(data),
        "--output", str(out), "--max-train-samples", "256", "--max-steps", "8",
    )  # fmt: skip
    resolved = json.loads((out / "training_args.json").read_text())["resolved"]
    assert resolved["device"] == "cuda" and resolved["bf16"] is True


# ---------------------------------------------------------------- the mixed recipe: tweets and reviews

REVIEWS = DATASETS / "review_sentiment"


@pytest.fixture(scope="module")
def mixed_data(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not (REVIEWS / "validation.jsonl").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"review data not found under {REVIEWS} (set SENTIMENT_DATASETS_DIR)")
        pytest.skip(f"review data not found under {REVIEWS}")
    folder = tmp_path_factory.mktemp("reviews") / "review_sentiment"
    folder.mkdir()
    lines = (REVIEWS / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    # every 10th row: all three domains, long and short texts (the file is grouped by domain)
    (folder / "validation.jsonl").write_text("\n".join(lines[::10]) + "\n", encoding="utf-8")
    return {
        **data,
        "reviews_train": REVIEWS / "train.jsonl",
        "reviews_validation": folder / "validation.jsonl",
    }


@pytest.fixture(scope="module")
def mixed(
    mixed_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("models") / "mixed"
    result = cli(
        "train", "--base-model", "minilm",
        "--train", str(mixed_data["train"]), str(mixed_data["reviews_train"]),
        "--validation", str(mixed_data["validation"]), str(mixed_data["reviews_validation"]),
        "--weighted-loss", "--output", str(out), "--max-train-samples", "320", "--max-steps", "16",
        "--eval-steps", "8", "--max-length", "64", "--threads", "2",
    )  # fmt: skip
    return out, last_json(result.stdout)


def test_mixed_recipe_reports_each_validation_set_and_chooses_on_their_mean(
    mixed: tuple[Path, dict[str, Any]],
) -> None:
    out, summary = mixed
    metrics = json.loads((out / "metrics.json").read_text())
    sets = metrics["validation_sets"]
    assert (
        len(sets) == 2 and list(sets)[1] == "review_sentiment/validation"
    )  # folder/stem, in --validation order
    assert [s["n"] for s in sets.values()] == [200, 200]
    mean = metrics["validation"]
    assert mean["macro_recall"] == pytest.approx(sum(s["macro_recall"] for s in sets.values()) / 2)
    assert mean["macro_recall"] == summary["macro_recall"]
    assert mean["min_class_recall"] == min(
        c["recall"] for s in sets.values() for c in s["per_class"].values()
    )
    # the mean is what Trainer logged and picked the best checkpoint on
    history = json.loads((out / "log_history.json").read_text())
    assert [e["step"] for e in history if "eval_macro_recall" in e] == [8, 16]
    assert json.loads((out / "truncation.json").read_text()) == {
        "max_length": 64, "strategy": "head+tail", "head_tokens": 16,
    }  # fmt: skip
    resolved = json.loads((out / "training_args.json").read_text())["resolved"]
    weights = resolved["class_weights"]
    assert len(weights) == 2  # balanced within each training file, apart
    for file, counts in resolved["train_counts_by_file"].items():
        total = sum(counts.values())
        assert sum(weights[file][c] * n for c, n in counts.items() if n) == pytest.approx(total, rel=1e-3)
    card = (out / "README.md").read_text()
    assert "Mean over the 2 sets" in card and "head+tail" in card
    assert (out / "confusion_matrix.png").is_file()
    assert len(list(out.glob("confusion_matrix.*.png"))) == 1
    assert {s["n"] for s in json.loads((out / "precision.json").read_text())["bf16"]["sets"]} == {200}


def test_evaluate_several_files_by_domain_and_by_length(
    mixed: tuple[Path, dict[str, Any]], mixed_data: dict[str, Path], tmp_path: Path
) -> None:
    out, _ = mixed
    files = [str(mixed_data["validation"]), str(mixed_data["reviews_validation"])]
    report = tmp_path / "eval.json"
    result = last_json(cli("evaluate", "--model", str(out), "--data", *files, "--report", str(report)).stdout)
    assert (result["max_length"], result["truncation"]) == (64, "head+tail")  # the folder's own setting
    sets = list(result["sets"].values())
    assert [s["n"] for s in sets] == [200, 200]
    assert result["mean"]["macro_recall"] == pytest.approx(
        (sets[0]["macro_recall"] + sets[1]["macro_recall"]) / 2
    )
    trained = json.loads((out / "metrics.json").read_text())["validation_sets"]
    for mine, theirs in zip(sets, trained.values(), strict=True):
        assert abs(mine["accuracy"] - theirs["accuracy"]) <= 1 / 200
    assert len(list(tmp_path.glob("eval.*.confusion_matrix.png"))) == 2

    reviews = str(mixed_data["reviews_validation"])
    by_domain = last_json(cli("evaluate", "--model", str(out), "--data", reviews, "--by", "domain").stdout)
    domains = by_domain["by"]["domain"]
    assert set(domains) == {"amazon", "clothing", "yelp"}
    assert sum(d["n"] for d in domains.values()) == 200
    by_stars = last_json(cli("evaluate", "--model", str(out), "--data", reviews, "--by", "stars").stdout)
    assert list(by_stars["by"]["stars"]) == ["1", "2", "3", "4", "5"]
    by_length = last_json(cli("evaluate", "--model", str(out), "--data", reviews, "--by", "tokens").stdout)
    buckets = by_length["by"]["tokens"]
    assert {"<=64", "65-128"} <= set(buckets) and sum(b["n"] for b in buckets.values()) == 200
    right = last_json(cli("evaluate", "--model", str(out), "--data", reviews, "--truncation", "right").stdout)
    assert right["truncation"] == "right" and right["n"] == 200


def test_worker_serves_long_reviews_as_the_trainer_scores_them(
    mixed: tuple[Path, dict[str, Any]], mixed_data: dict[str, Path]
) -> None:
    from worker.classifier import Classifier

    out, _ = mixed
    rows = [json.loads(line) for line in mixed_data["reviews_validation"].read_text().splitlines()]
    long_texts = sorted((r["text"] for r in rows), key=len)[-3:]
    clf = Classifier(out, device="cpu", threads=2)
    assert (clf.max_length, clf.truncation) == (64, "head+tail")
    assert all(len(ids) == 64 for ids in clf.encode(long_texts))
    served = clf.classify(clf.encode(long_texts))
    predicted = [
        json.loads(line) for line in cli("predict", "--model", str(out), *long_texts).stdout.splitlines()
    ]
    for scores, line in zip(served, predicted, strict=True):
        assert not isinstance(scores, Exception)
        assert line["scores"] == pytest.approx(
            {"negative": scores.negative, "neutral": scores.neutral, "positive": scores.positive}, abs=1e-3
        )
