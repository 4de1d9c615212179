"""Exactly once against a real broker and Redis: kill -9 mid-transaction, and Redis losing its data."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.integration.helpers import (
    Topics,
    committed,
    end_offsets,
    make_traffic,
    produce,
    read_topic,
    run_worker,
    store_for,
    worker_env,
)
from worker.keys import H_DLQ_TOPIC

REPLAY_LOG = "Redis watermark behind the committed offset"


def eos_env(kafka: str, redis_url: str, model: Path, t: Topics, **extra: str) -> dict[str, str]:
    eos = {
        "SENTIMENT_PROCESSING_GUARANTEE": "exactly_once",
        "SENTIMENT_BATCH_SIZE": "16",
        # The killed consumer stays in the group until its session expires; keep that short.
        "SENTIMENT_SESSION_TIMEOUT_MS": "6000",
    }
    return worker_env(kafka, redis_url, model, t, **{**eos, **extra})


def seen_ids(kafka: str, t: Topics, isolation: str = "read_committed") -> Counter[str]:
    return Counter(json.loads(r.value)["id"] for r in read_topic(kafka, t.out, isolation))


def total_counted(redis_url: str) -> int:
    return int(store_for(redis_url).window(3600)["total"])


@pytest.mark.parametrize("point", ["after_publish", "after_redis"])
def test_kill_9_mid_transaction_leaves_every_result_exactly_once(
    kafka_bootstrap: str, redis_clean_url: str, model_dir: Path, topics: Topics, point: str
) -> None:
    made = make_traffic(topics, n=200, n_bad=8, seed=13)
    records, valid = made.records, set(made.valid)
    produce(kafka_bootstrap, records)
    env = eos_env(kafka_bootstrap, redis_clean_url, model_dir, topics)
    crashed = run_worker({**env, "SENTIMENT_FAULT_POINT": point, "SENTIMENT_FAULT_AFTER_N": "3"}, "run")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert sum(committed(kafka_bootstrap, topics.group).values()) < len(records)

    done = run_worker(env, "run", "--until-idle", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    seen = seen_ids(kafka_bootstrap, topics)
    assert set(seen) == valid and max(seen.values()) == 1  # read_committed: each result exactly once
    dead = read_topic(kafka_bootstrap, topics.dlq, "read_committed")
    assert sorted(r.key for r in dead) == sorted(f"bad{j}".encode() for j in range(8))
    assert all(dict(r.headers)[H_DLQ_TOPIC].decode() in (topics.reviews, topics.posts) for r in dead)
    # The killed transaction's records are in the log, aborted: a read_uncommitted reader sees them twice.
    uncommitted = seen_ids(kafka_bootstrap, topics, "read_uncommitted")
    assert sum(uncommitted.values()) > len(valid) and max(uncommitted.values()) == 2
    assert total_counted(redis_clean_url) == len(valid)  # Redis written before the abort, counted once
    ends = end_offsets(kafka_bootstrap, topics.reviews, topics.posts)
    assert committed(kafka_bootstrap, topics.group) == ends
    assert store_for(redis_clean_url).watermarks() == ends


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_redis_data_loss_is_recounted_without_publishing_again(
    kafka_bootstrap: str, redis_clean_url: str, model_dir: Path, topics: Topics, guarantee: str
) -> None:
    made = make_traffic(topics, n=120, n_bad=4, seed=17)
    records, valid = made.records, set(made.valid)
    produce(kafka_bootstrap, records)
    env = eos_env(
        kafka_bootstrap, redis_clean_url, model_dir, topics, SENTIMENT_PROCESSING_GUARANTEE=guarantee
    )
    first = run_worker(env, "run", "--until-idle", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    assert REPLAY_LOG not in first.stderr
    assert total_counted(redis_clean_url) == len(valid)
    results_before = sum(seen_ids(kafka_bootstrap, topics).values())
    dead_before = len(read_topic(kafka_bootstrap, topics.dlq, "read_committed"))
    assert results_before == len(valid) and dead_before == 4

    redis.Redis.from_url(redis_clean_url).flushdb()  # Redis lost everything
    again = run_worker(env, "run", "--until-idle", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    replayed = [json.loads(line) for line in again.stderr.splitlines() if REPLAY_LOG in line]
    assert {(r["topic"], r["partition"]) for r in replayed} == {
        (t, p) for t in (topics.reviews, topics.posts) for p in (0, 1)
    }
    assert total_counted(redis_clean_url) == len(valid)  # the counts are whole again ...
    assert sum(seen_ids(kafka_bootstrap, topics).values()) == results_before  # ... and nothing republished
    assert len(read_topic(kafka_bootstrap, topics.dlq, "read_committed")) == dead_before
    ends = end_offsets(kafka_bootstrap, topics.reviews, topics.posts)
    assert committed(kafka_bootstrap, topics.group) == ends
    assert store_for(redis_clean_url).watermarks() == ends


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
    # Only the new instance's record is visible.
    assert len(read_topic(kafka_bootstrap, topics.out, "read_committed")) == 1
