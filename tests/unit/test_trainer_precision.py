"""The export-time bf16 measurement (trainer/precision.py) and the worker reading it: the folder contract."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from trainer.data import LabelledData
from trainer.precision import compare, main, measure_bf16, write
from worker.classifier import EVIDENCE_FILE, bf16_loss_points, read_evidence

TEXTS = ["great phone", "awful service, never again", "it is a phone", "love it", "meh", "broken on arrival"]


def test_compare_gives_the_loss_in_points_fp32_minus_bf16() -> None:
    got = compare({"macro_recall": 0.70, "macro_f1": 0.69}, {"macro_recall": 0.6975, "macro_f1": 0.70})
    assert got["macro_recall_loss_points"] == pytest.approx(0.25)
    assert compare({"macro_recall": 0.5, "macro_f1": 0.5}, {"macro_recall": 0.51, "macro_f1": 0.5})[
        "macro_recall_loss_points"
    ] == pytest.approx(-1.0)


def test_the_measurement_is_what_the_worker_reads(tiny_model: Callable[..., Path], tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_model(), folder)
    sets = [
        LabelledData(texts=TEXTS, labels=[2, 0, 1, 2, 1, 0], source="a"),
        LabelledData(texts=TEXTS[:4], labels=[2, 0, 1, 2], source="b"),
    ]
    evidence = measure_bf16(folder, sets)
    rows = evidence["bf16"]["sets"]
    assert [r["source"] for r in rows] == ["a", "b"] and [r["n"] for r in rows] == [6, 4]
    for r in rows:
        assert r["macro_recall_loss_points"] == pytest.approx(
            100 * (r["fp32_macro_recall"] - r["bf16_macro_recall"]), abs=1e-3
        )
        assert 0 <= r["same_label_share"] <= 1
    assert evidence["bf16"]["macro_recall_loss_points"] == max(r["macro_recall_loss_points"] for r in rows)
    assert evidence["bf16"]["batch"] == 32 and evidence["bf16"]["max_length"] == 128
    write(folder, evidence)
    assert (folder / EVIDENCE_FILE).is_file()
    assert bf16_loss_points(read_evidence(folder)) == evidence["bf16"]["macro_recall_loss_points"]


def test_the_cli_refuses_a_registry_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"version": "x"}))
    assert main([str(tmp_path), "--validation", "nowhere.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "registry version" in err
