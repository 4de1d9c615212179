"""The worker against a real Kafka broker and Redis: outputs, dead letters, counts, commits, crashes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.helpers import (
    MAX_BYTES,
    ROOT,
    Topics,
    committed,
    end_offsets,
    label_counts,
    make_traffic,
    produce,
    read_topic,
    run_worker,
    store_for,
    unique_results,
    window,
    worker_env,
)
from worker.batching import Limits
from worker.classifier import Classifier
from worker.consume import KafkaSource
from worker.counts import CountStore
from worker.keys import H_DLQ_OFFSET, H_DLQ_PARTITION, H_DLQ_REASON, H_DLQ_TOPIC
from worker.loop import Loop, LoopConfig
from worker.publish import KafkaSink

# ----------------------------------------------------------------------------------------------- tests


def test_mixed_traffic_end_to_end(
    kafka_bootstrap: str, redis_clean_url: str, model_dir: Path, topics: Topics
) -> None:
    traffic = make_traffic(topics, n=2000, n_bad=50)
    produce(kafka_bootstrap, traffic.records)
    done = run_worker(
        worker_env(kafka_bootstrap, redis_clean_url, model_dir, topics), "run", "--until-idle", "3"
    )
    assert done.returncode == 0, done.stderr[-2000:]

    results, seen = unique_results(kafka_bootstrap, topics.out)
    assert set(results) == set(traffic.valid) and max(seen.values()) == 1  # exactly one output per valid id
    assert all(r["kind"] == traffic.valid[i] for i, r in results.items())
    assert all(r["model"]["name"] == "tiny-bert" for r in results.values())

    dead = read_topic(kafka_bootstrap, topics.dlq)
    assert len(dead) == len(traffic.bad)
    for r in dead:
        h = {k: v.decode() for k, v in r.headers}
        source_topic = h[H_DLQ_TOPIC]
        assert traffic.bad[(source_topic, r.key.decode())] == h[H_DLQ_REASON]
        assert int(h[H_DLQ_PARTITION]) in (0, 1) and int(h[H_DLQ_OFFSET]) >= 0

    store = store_for(redis_clean_url)
    all_results = list(results.values())
    assert window(store) == label_counts(all_results)
    for kind in ("review", "social_post"):
        assert window(store, kind) == label_counts(all_results, kind)
    ends = end_offsets(kafka_bootstrap, topics.reviews, topics.posts)
    assert committed(kafka_bootstrap, topics.group) == ends
    assert store.watermarks() == ends

    counts = run_worker(
        worker_env(kafka_bootstrap, redis_clean_url, model_dir, topics), "counts", "--window", "1h"
    )
    assert counts.returncode == 0, counts.stderr
    assert json.loads(counts.stdout.strip().splitlines()[-1])["total"] == len(traffic.valid)
    mood = run_worker(worker_env(kafka_bootstrap, redis_clean_url, model_dir, topics), "mood", "c0")
    assert mood.returncode == 0 and json.loads(mood.stdout)["n"] == sum(
        1 for r in all_results if r.get("conversation_id") == "c0"
    )


# The worker overlaps batches when torch leaves a CPU free (worker.loop.overlap_pays): one torch thread
# takes the overlapped loop, one per CPU the serial one that a CPU-only host runs by default.
LOOPS = {"overlapped": "1", "serial": str(len(os.sched_getaffinity(0)))}


def started_overlap(stderr: str) -> bool:
    """Whether the worker's "worker started" log line says its batches overlap."""
    for line in stderr.splitlines():
        if line.startswith("{") and json.loads(line).get("msg") == "worker started":
            return bool(json.loads(line)["overlap"])
    raise AssertionError(f"no 'worker started' line in:\n{stderr[-2000:]}")


@pytest.mark.parametrize("loop", list(LOOPS))
@pytest.mark.parametrize("point", ["after_publish", "after_redis"])
def test_crash_before_commit_keeps_counts_exact(
    kafka_bootstrap: str, redis_clean_url: str, model_dir: Path, topics: Topics, point: str, loop: str
) -> None:
    traffic = make_traffic(topics, n=300, n_bad=10, seed=11)
    produce(kafka_bootstrap, traffic.records)
    env = worker_env(
        kafka_bootstrap,
        redis_clean_url,
        model_dir,
        topics,
        SENTIMENT_BATCH_SIZE="16",
        # The killed consumer stays in the group until its session expires; keep that short.
        SENTIMENT_SESSION_TIMEOUT_MS="6000",
        SENTIMENT_TORCH_THREADS=LOOPS[loop],
    )
    crashed = run_worker({**env, "SENTIMENT_FAULT_POINT": point, "SENTIMENT_FAULT_AFTER_N": "3"}, "run")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert started_overlap(crashed.stderr) == (loop == "overlapped")
    assert sum(committed(kafka_bootstrap, topics.group).values()) < len(traffic.records)

    done = run_worker(env, "run", "--until-idle", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    results, seen = unique_results(kafka_bootstrap, topics.out)
    assert set(results) == set(traffic.valid)
    assert max(seen.values()) == 2  # the crashed batch was published twice (at least once) ...
    store = store_for(redis_clean_url)
    assert window(store) == label_counts(list(results.values()))  # ... but counted once
    assert sum(window(store).values()) == len(traffic.valid)
    assert committed(kafka_bootstrap, topics.group) == end_offsets(
        kafka_bootstrap, topics.reviews, topics.posts
    )


@pytest.mark.parametrize("loop", list(LOOPS))
def test_sigterm_drains_and_commits_what_was_published(
    kafka_bootstrap: str, redis_clean_url: str, model_dir: Path, topics: Topics, loop: str
) -> None:
    traffic = make_traffic(topics, n=4000, n_bad=40, seed=3)
    produce(kafka_bootstrap, traffic.records)
    env = worker_env(
        kafka_bootstrap,
        redis_clean_url,
        model_dir,
        topics,
        SENTIMENT_BATCH_SIZE="4",
        SENTIMENT_TORCH_THREADS=LOOPS[loop],
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "run"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        store = store_for(redis_clean_url)
        deadline = time.monotonic() + 60
        while not store.watermarks():
            assert proc.poll() is None and time.monotonic() < deadline, "worker made no progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    assert started_overlap(stderr) == (loop == "overlapped")

    done = committed(kafka_bootstrap, topics.group)
    assert sum(done.values()) < len(traffic.records), "stopped too late to show a drain"
    assert done == store.watermarks()
    # Every record below the committed offset was published (result or dead letter), none at or above it.
    published: dict[tuple[str, int], set[int]] = {}
    for r in read_topic(kafka_bootstrap, topics.out):
        i = json.loads(r.value)["input"]
        published.setdefault((i["topic"], i["partition"]), set()).add(i["offset"])
    for r in read_topic(kafka_bootstrap, topics.dlq):
        h = dict(r.headers)
        published.setdefault((h[H_DLQ_TOPIC].decode(), int(h[H_DLQ_PARTITION])), set()).add(
            int(h[H_DLQ_OFFSET])
        )
    assert {tp: set(range(o)) for tp, o in done.items() if o} == {tp: s for tp, s in published.items() if s}


def test_redis_down_commits_nothing_then_recovers(
    kafka_bootstrap: str, redis_clean_url: str, model_dir: Path, topics: Topics
) -> None:
    """In process, with the real adapters: a Redis outage fails the batch and leaves Kafka's offsets alone."""
    traffic = make_traffic(topics, n=60, n_bad=4, seed=5)
    produce(kafka_bootstrap, traffic.records)
    model = Classifier(model_dir, device="cpu", threads=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    broken = CountStore(redis.Redis(port=dead_port, socket_connect_timeout=1))
    config = LoopConfig(
        limits=Limits(max_records=100, max_tokens=100_000, max_wait_s=0.5),
        output_topic=topics.out,
        dlq_topic=topics.dlq,
        topic_kinds=topics.kinds,
        max_message_bytes=MAX_BYTES,
    )

    def parts() -> tuple[KafkaSource, KafkaSink]:
        kafka = {"bootstrap_servers": kafka_bootstrap}
        source = KafkaSource(
            [topics.reviews, topics.posts],
            group_id=topics.group,
            max_poll_records=100,
            max_poll_interval_ms=60_000,
            max_message_bytes=MAX_BYTES,
            connect_timeout_s=10,
            kafka_args=kafka,
        )
        return source, KafkaSink(client_id="test", connect_timeout_s=10, kafka_args=kafka)

    source, sink = parts()
    loop = Loop(source, sink, broken, model, config)
    items: list[Any] = []
    deadline = time.monotonic() + 30
    while not items and time.monotonic() < deadline:
        items = loop.collect()
    assert items
    with pytest.raises(redis.ConnectionError):
        loop.process(items)
    source.close()
    sink.close()
    assert committed(kafka_bootstrap, topics.group) == {}

    source, sink = parts()
    store = store_for(redis_clean_url)
    assert Loop(source, sink, store, model, config).run(until_idle_s=2)
    source.close()
    sink.close()
    ends = end_offsets(kafka_bootstrap, topics.reviews, topics.posts)
    assert committed(kafka_bootstrap, topics.group) == ends == store.watermarks()
    assert sum(window(store).values()) == len(traffic.valid)


def test_unreachable_kafka_is_one_line_and_exit_1(
    kafka_bootstrap: str, redis_clean_url: str, model_dir: Path, topics: Topics
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = worker_env(
        f"127.0.0.1:{port}",
        redis_clean_url,
        model_dir,
        topics,
        SENTIMENT_CONNECT_TIMEOUT_S="2",
        SENTIMENT_LOG_LEVEL="ERROR",
    )
    out = run_worker(env, "run", timeout=60)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"sentiment-worker: cannot reach Kafka at 127.0.0.1:{port}")
    assert "Traceback" not in out.stderr


def test_unusable_model_folder_is_one_line_and_exit_1(
    kafka_bootstrap: str, redis_clean_url: str, tmp_path: Path, topics: Topics
) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    out = run_worker(worker_env(kafka_bootstrap, redis_clean_url, tmp_path, topics), "run", timeout=60)
    assert out.returncode == 1
    assert "only pickle weights" in out.stderr.strip().splitlines()[-1]
    assert "Traceback" not in out.stderr


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
