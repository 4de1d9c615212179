"""sentiment-train's bad-input contract: one line on stderr, exit 2, no traceback, nothing overwritten."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.__main__ import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "-m", "trainer", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("sentiment-train: error:")
    assert needle in errors[0]


def expect_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sentiment-train: error:"), err
    assert needle in err[0]


TRAIN = ["train", "--base-model", "minilm", "--train", "t.jsonl", "--output", "o"]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_bad_argument_in_a_subprocess() -> None:
    assert_one_line_error(run_cli("train", "--base-model", "minilm"), "required")
    assert_one_line_error(run_cli("bogus"), "invalid choice")


def test_offline_hub_dataset_fails_clearly(tmp_path: Path) -> None:
    result = run_cli("evaluate", "--model", str(tmp_path), "--data", "hf:cardiffnlp/tweet_eval:sentiment")
    assert_one_line_error(result, "cannot load Hugging Face dataset")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "required"),
        ([*TRAIN, "--epochs", "0"], "must be >"),
        ([*TRAIN, "--lr", "fast"], "not a valid"),
        ([*TRAIN, "--dropout", "2"], "<= 0.9"),
        (["evaluate", "--model", "m"], "--data"),
        (["predict", "--model", "m"], "TEXT"),
        (["evaluate", "--model", "m", "--data", "d.jsonl", "--label-scheme", "odd"], "invalid choice"),
    ],
)
def test_bad_arguments(capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    expect_exit_2(capsys, args, needle)


def test_evaluate_bad_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    model = str(tmp_path)  # data is checked before the model is loaded
    expect_exit_2(capsys, ["evaluate", "--model", model, "--data", str(tmp_path / "nope.jsonl")], "not found")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    expect_exit_2(capsys, ["evaluate", "--model", model, "--data", str(empty)], "no rows")
    rows = write_jsonl(tmp_path / "d.jsonl", [{"sentence": "ok", "label": "neutral"}])
    expect_exit_2(capsys, ["evaluate", "--model", model, "--data", rows], "column 'text' not found")
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"text": "ok", "label": "meh"}])
    expect_exit_2(capsys, ["evaluate", "--model", model, "--data", odd], "unknown label 'meh'")
    expect_exit_2(capsys, ["evaluate", "--model", model, "--data", odd, "--label-map", "meh"], "--label-map")
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "ok", "label": "neutral"}])
    expect_exit_2(capsys, ["evaluate", "--model", model, "--data", good], "no config.json")
    # several files: every one is read (and checked) before the model is loaded
    expect_exit_2(capsys, ["evaluate", "--model", model, "--data", good, odd], "unknown label 'meh'")
    expect_exit_2(
        capsys, ["evaluate", "--model", model, "--data", good, "--by", "domain"], "'domain' not found"
    )
    expect_exit_2(
        capsys, ["evaluate", "--model", model, "--data", good, "--truncation", "middle"], "invalid choice"
    )


def test_train_refuses_to_overwrite(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    args = ["train", "--base-model", "minilm", "--train", "t.jsonl", "--output", str(out)]
    expect_exit_2(capsys, args, "--overwrite")
    assert (out / "config.json").read_text() == "{}"


def test_train_bad_data_before_any_model_work(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": "fine", "label": 7}, {"text": "bad", "label": 9}])
    args = ["train", "--base-model", "minilm", "--train", train, "--output", str(tmp_path / "o")]
    expect_exit_2(capsys, args, "--label-map")
    assert not (tmp_path / "o").exists()


def test_defaults_are_the_default_recipe() -> None:
    args = build_parser().parse_args(["train", "--base-model", "minilm", "--train", "t", "--output", "o"])
    assert (args.epochs, args.learning_rate, args.batch_size, args.max_length) == (1.0, None, 32, 128)
    assert args.truncation == "head+tail" and args.validation is None
    assert (args.lora_r, args.lora_alpha, args.dropout, args.train_pooler) == (16, 32, 0.0, True)
    assert args.bf16 is None and args.full is False and args.weighted_loss is False


def test_learn_bad_arguments_and_a_registry_without_champion_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = ["learn", "--registry", str(tmp_path), "--train", "t.jsonl", "--validation", "v.jsonl", "--once"]
    expect_exit_2(capsys, [*base, "--feedback-share", "1.5"], "must be <= 0.9")
    expect_exit_2(capsys, [*base, "--min-feedback", "0"], "must be >= 1")
    expect_exit_2(capsys, base, "has no champion")
