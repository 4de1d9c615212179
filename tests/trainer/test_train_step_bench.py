"""bench.train_step, on a tiny step: every variant is timed, with the attention it really trained with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_train_step_bench_times_each_variant() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    args = ["--length", "8", "--batch", "2", "--steps", "1", "--threads", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.train_step", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (report["base_model"], report["length"], report["batch"], report["threads"]) == ("minilm", 8, 2, 1)
    rows = report["rows"]
    assert [(r["dropout"], r["precision"]) for r in rows] == [
        (0.1, "fp32"), (0.1, "bf16"), (0.0, "fp32"), (0.0, "bf16"), (0.0, "fp32"), (0.0, "bf16"),
    ]  # fmt: skip
    assert [r["attention"] for r in rows] == ["sdpa"] * 4 + ["eager"] * 2
    assert all(r["s_per_step"] > 0 for r in rows)
    assert "s/step" in proc.stdout
