"""Scale-out: 3 worker processes in one consumer group over a 6-partition topic share the work; kill -9 one
mid-run and the others take over its partitions; results, counts and commits stay exact."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from worker.counts import CountStore
from worker.keys import H_DLQ_OFFSET, H_DLQ_PARTITION

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 6
WORKERS = 3
N = 1200
BATCH = 16
LABELS = ("negative", "neutral", "positive")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_redis_url(redis_url: str) -> str:
    """DB 12 of the test Redis, emptied, so the counts checked here are only this test's."""
    url = redis_url.rsplit("/", 1)[0] + "/12"
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
    client.flushdb()
    client.close()
    return url


class Worker:
    def __init__(self, index: int, env: dict[str, str], log_dir: Path) -> None:
        self.metrics_port = _free_port()
        self.log_path = log_dir / f"worker-{index}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", "--until-idle", "12"],
            env={
                **env,
                "SENTIMENT_METRICS_PORT": str(self.metrics_port),
                "SENTIMENT_METRICS_HOST": "127.0.0.1",
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def assigned(self) -> set[int]:
        """Partitions of its latest assignment."""
        latest: set[int] = set()
        for entry in self.logs():
            if entry.get("msg") == "partitions assigned":
                latest = {int(p.rsplit(":", 1)[1]) for p in entry["partitions"]}
        return latest

    def results_total(self) -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("sentiment_results_total{")
        )

    def stopped_processed(self) -> int | None:
        for entry in self.logs():
            if entry.get("msg") == "worker stopped":
                return int(entry["processed"])
        return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.2)


def committed(kafka: str, group: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
        return {tp.partition: om.offset for tp, om in offsets.items() if om.offset >= 0}
    finally:
        admin.close()


def read_all(kafka: str, topic: str, partitions: int) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(batch)
        return out
    finally:
        consumer.close()


def test_three_workers_share_six_partitions_and_survive_a_kill(
    kafka_bootstrap: str,
    own_redis_url: str,
    new_topic: Callable[..., str],
    model_dir: Path,
    tmp_path: Path,
) -> None:
    reviews = new_topic("scale", partitions=PARTITIONS)
    out, dlq = new_topic("scale-out", partitions=2), new_topic("scale-dlq")
    group, prefix = f"scale-{uuid.uuid4().hex[:8]}", f"scale{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    env.update(
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        HF_HUB_OFFLINE="1",
        SENTIMENT_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        SENTIMENT_REDIS_URL=own_redis_url,
        SENTIMENT_REDIS_PREFIX=prefix,
        SENTIMENT_MODEL_DIR=str(model_dir),
        SENTIMENT_INPUT_TOPICS=reviews,
        SENTIMENT_TOPIC_KINDS=json.dumps({reviews: "review"}),
        SENTIMENT_OUTPUT_TOPIC=out,
        SENTIMENT_DLQ_TOPIC=dlq,
        SENTIMENT_GROUP_ID=group,
        SENTIMENT_BATCH_SIZE=str(BATCH),
        SENTIMENT_TORCH_THREADS="1",
        # A killed member is noticed after this; the default 45 s would dominate the test.
        SENTIMENT_SESSION_TIMEOUT_MS="6000",
        SENTIMENT_CONNECT_TIMEOUT_S="15",
    )
    workers = [Worker(i, env, tmp_path) for i in range(WORKERS)]
    try:
        # 1. All three join and split the six partitions between them.
        wait_for(
            "3 workers with 2 partitions each",
            lambda: (
                sorted(len(w.assigned()) for w in workers) == [2, 2, 2]
                and set().union(*(w.assigned() for w in workers)) == set(range(PARTITIONS))
            ),
            timeout_s=120,
        )
        victim = workers[0]
        victim_parts = victim.assigned()

        # 2. Traffic to every partition (a few invalid records too, for the dead-letter path).
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        valid: set[str] = set()
        for i in range(N):
            if i % 50 == 7:
                value = b"{broken"
            else:
                valid.add(f"r{i}")
                value = json.dumps({"id": f"r{i}", "text": f"item {i} was fine", "source": "shop"}).encode()
            producer.send(reviews, value=value, partition=i % PARTITIONS)
        producer.flush()
        producer.close()

        # 3. kill -9 one worker once it has processed something, while its partitions still hold work.
        wait_for("the victim's first results", lambda: victim.results_total() > 0, timeout_s=60)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        at_kill = committed(kafka_bootstrap, group)

        # 4. The others take over and finish, then exit on idle.
        for w in workers[1:]:
            assert w.proc.wait(timeout=150) == 0, w.log_path.read_text()[-3000:]

        survivors_parts = set().union(*(w.assigned() for w in workers[1:]))
        assert victim_parts <= survivors_parts  # the victim's partitions moved to the others
        for w in workers[1:]:
            processed = w.stopped_processed()
            assert processed is not None and processed > 0  # work was shared

        # Committed offsets == end offsets: nothing left behind.
        consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
        ends = consumer.end_offsets([TopicPartition(reviews, p) for p in range(PARTITIONS)])
        consumer.close()
        end = {tp.partition: o for tp, o in ends.items()}
        assert sum(end.values()) == N
        assert committed(kafka_bootstrap, group) == end
        # The kill left work on the victim's partitions that the others then did.
        assert sum(end[p] - at_kill.get(p, 0) for p in victim_parts) > 0

        # Every valid id has a result; a repeat is a redelivery of the same input record, at most one
        # in-flight batch per worker (the victim's, and a survivor's whose commit lost the rebalance race).
        results = [json.loads(r.value) for r in read_all(kafka_bootstrap, out, 2)]
        by_id: dict[str, dict[str, Any]] = {}
        for r in results:
            if r["id"] in by_id:
                assert r["input"] == by_id[r["id"]]["input"]
            by_id[r["id"]] = r
        assert set(by_id) == valid
        assert len(results) - len(by_id) <= WORKERS * BATCH
        dead = read_all(kafka_bootstrap, dlq, 1)
        headers = [dict(d.headers) for d in dead]
        assert len({(h[H_DLQ_PARTITION], h[H_DLQ_OFFSET]) for h in headers}) == N - len(valid)

        # Redis counts == ground truth (each distinct result once), watermarks == end offsets.
        store = CountStore(redis.Redis.from_url(own_redis_url), prefix=prefix)
        try:
            truth = Counter(r["label"] for r in by_id.values())
            window = store.window(3600)
            assert {label: window[label] for label in LABELS} == {
                label: truth.get(label, 0) for label in LABELS
            }
            assert store.watermarks() == {(reviews, p): o for p, o in end.items()}
        finally:
            store.client.close()
    finally:
        for w in workers:
            w.close()
