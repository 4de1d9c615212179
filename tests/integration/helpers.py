"""Shared helpers for the integration tests: topics, worker processes, traffic, and reading results back."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from worker.counts import CountStore

ROOT = Path(__file__).resolve().parents[2]

MAX_BYTES = 4096


WORDS = [
    *("great", "awful", "fine", "love", "hate", "ok", "slow", "fast", "broken", "perfect", "refund", "never"),
    *(
        "delivery",
        "meh",
        "wow",
        "\U0001f600",
        "\U0001f621",
        "\u05de\u05e6\u05d5\u05d9\u05df",
        "\u0645\u0645\u062a\u0627\u0632",
    ),
]


@dataclass
class Topics:
    reviews: str
    posts: str
    out: str
    dlq: str
    group: str

    @property
    def kinds(self) -> dict[str, str]:
        return {self.reviews: "review", self.posts: "social_post"}


def worker_env(kafka: str, redis_url: str, model: Path, t: Topics, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    env.update(
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        HF_HUB_OFFLINE="1",
        SENTIMENT_KAFKA_BOOTSTRAP_SERVERS=kafka,
        SENTIMENT_REDIS_URL=redis_url,
        SENTIMENT_MODEL_DIR=str(model),
        SENTIMENT_INPUT_TOPICS=f"{t.reviews},{t.posts}",
        SENTIMENT_TOPIC_KINDS=json.dumps(t.kinds),
        SENTIMENT_OUTPUT_TOPIC=t.out,
        SENTIMENT_DLQ_TOPIC=t.dlq,
        SENTIMENT_GROUP_ID=t.group,
        SENTIMENT_MAX_MESSAGE_BYTES=str(MAX_BYTES),
        SENTIMENT_METRICS_PORT="0",
        SENTIMENT_TORCH_THREADS="1",
        SENTIMENT_CONNECT_TIMEOUT_S="10",
    )
    env.update(extra)
    return env


def run_worker(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))


@dataclass
class Traffic:
    records: list[tuple[str, bytes | None, bytes | None]]  # topic, key, value
    valid: dict[str, str]  # id -> kind
    bad: dict[tuple[str, str], str]  # (topic, key) -> expected DLQ reason


def make_traffic(t: Topics, n: int, n_bad: int, seed: int = 7) -> Traffic:
    rng = random.Random(seed)
    now_ms = time.time_ns() // 1_000_000
    records: list[tuple[str, bytes | None, bytes | None]] = []
    valid: dict[str, str] = {}
    for i in range(n - n_bad):
        msg: dict[str, Any]
        if i % 2:
            msg = {
                "id": f"r{i}",
                "text": text(rng),
                "source": rng.choice(["shop", "web"]),
                "rating": 1 + i % 5,
            }
            topic = t.reviews
        else:
            msg = {"id": f"p{i}", "text": text(rng), "platform": "x", "conversation_id": f"c{i % 5}"}
            topic = t.posts
        if i % 3 == 0:
            msg["created_at"] = now_ms - rng.randint(0, 300_000)
        if i % 7 == 0:
            msg["kind"] = "review" if topic == t.reviews else "social_post"
        valid[msg["id"]] = "review" if topic == t.reviews else "social_post"
        records.append((topic, msg["id"].encode(), json.dumps(msg).encode()))
    bad_values: list[tuple[bytes | None, str]] = [
        (None, "null_value"),
        (b"{not json", "invalid_json"),
        (b"\xff\xfe\x00", "not_utf8"),
        (b"[1, 2, 3]", "not_object"),
        (json.dumps({"id": "x", "source": "s"}).encode(), "invalid_fields"),
        (json.dumps({"id": "x", "text": "  ", "source": "s", "platform": "p"}).encode(), "empty_text"),
        (json.dumps({"id": "x", "text": "t", "kind": "tweet"}).encode(), "unknown_kind"),
        (json.dumps({"id": "x", "text": "y" * MAX_BYTES, "source": "s"}).encode(), "oversize"),
    ]
    bad: dict[tuple[str, str], str] = {}
    for j in range(n_bad):
        value, reason = bad_values[j % len(bad_values)]
        topic = t.reviews if j % 2 else t.posts
        key = f"bad{j}"
        bad[(topic, key)] = reason
        records.append((topic, key.encode(), value))
    rng.shuffle(records)
    return Traffic(records, valid, bad)


def produce(kafka: str, records: Sequence[tuple[str, bytes | None, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka, linger_ms=5)
    for topic, key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def read_topic(kafka: str, topic: str, isolation: str = "read_uncommitted") -> list[Any]:
    """Every record of the topic as a consumer with this isolation level sees it."""
    consumer = KafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False, isolation_level=isolation)
    try:
        parts = None
        deadline = time.monotonic() + 30
        while not parts and time.monotonic() < deadline:
            consumer.topics()
            parts = consumer.partitions_for_topic(topic)
        assert parts, f"no metadata for {topic}"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)  # the last stable offset under read_committed
        out: list[Any] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, "timed out reading " + topic
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(batch)
        return out
    finally:
        consumer.close()


def end_offsets(kafka: str, *topics: str) -> dict[tuple[str, int], int]:
    consumer = KafkaConsumer(bootstrap_servers=kafka)
    try:
        consumer.topics()
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        return {(tp.topic, tp.partition): o for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def committed(kafka: str, group: str) -> dict[tuple[str, int], int]:
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
        return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items() if om.offset >= 0}
    finally:
        admin.close()


def store_for(redis_url: str) -> CountStore:
    return CountStore(redis.Redis.from_url(redis_url))


def label_counts(results: list[dict[str, Any]], kind: str | None = None) -> dict[str, int]:
    c = Counter(r["label"] for r in results if kind is None or r["kind"] == kind)
    return {label: c.get(label, 0) for label in ("negative", "neutral", "positive")}


def window(store: CountStore, kind: str | None = None) -> dict[str, int]:
    w = store.window(3600, kind=kind)
    return {label: w[label] for label in ("negative", "neutral", "positive")}


def unique_results(kafka: str, topic: str) -> tuple[dict[str, dict[str, Any]], Counter[str]]:
    seen: Counter[str] = Counter()
    by_id: dict[str, dict[str, Any]] = {}
    for r in read_topic(kafka, topic):
        result = json.loads(r.value)
        assert r.key == result["id"].encode()
        if result["id"] in by_id:  # a replayed record: same input position, same label
            assert (by_id[result["id"]]["input"], by_id[result["id"]]["label"]) == (
                result["input"],
                result["label"],
            )
        by_id[result["id"]] = result
        seen[result["id"]] += 1
    return by_id, seen
