"""The worker against a secured stack: Kafka SASL_SSL (SCRAM-SHA-512) and Redis TLS with an ACL user.

The module starts its own secured stack (`scripts/stack up --secure`) in a temporary STACK_DIR on free
ports, with a CA, certificates and passwords generated for it, and stops it at the end. It checks that the
worker works through it, that a wrong CA or password fails closed with one clear line (no plaintext
fallback), that the Redis and Kafka ACLs let the worker do its job and nothing else, and that no secret is
ever printed, even at DEBUG.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from worker import keys
from worker.counts import CountStore, Tally
from worker.pytest_plugin import read_env_file, unavailable

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "scripts" / "stack"
N = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Secured:
    dir: Path
    env: dict[str, str]  # the worker's SENTIMENT_* settings from the stack's env file
    kafka_admin_password: str
    redis_admin_password: str
    worker_kafka_password: str
    worker_redis_password: str

    @property
    def bootstrap(self) -> str:
        return self.env["SENTIMENT_KAFKA_BOOTSTRAP_SERVERS"]

    @property
    def ca(self) -> str:
        return str(self.dir / "tls" / "ca.crt")

    @property
    def wrong_ca(self) -> str:
        return str(self.dir / "tls" / "other-ca.crt")

    def kafka_admin_args(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "admin",
            "sasl_plain_password": self.kafka_admin_password,
            "ssl_cafile": self.ca,
        }

    def redis(self, user: str = "admin", password: str | None = None, **kw: Any) -> redis.Redis:
        pw = password if password is not None else self.redis_admin_password
        return redis.Redis.from_url(
            self.env["SENTIMENT_REDIS_URL"],
            username=user,
            password=pw,
            ssl_ca_certs=kw.pop("ssl_ca_certs", self.ca),
            socket_connect_timeout=5,
            socket_timeout=10,
            **kw,
        )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    stack_dir = tmp_path_factory.mktemp("secstack")
    env = {
        **os.environ,
        "STACK_DIR": str(stack_dir),
        "STACK_KAFKA_PORT": str(_free_port()),
        "STACK_CONTROLLER_PORT": str(_free_port()),
        "STACK_REDIS_PORT": str(_free_port()),
    }
    try:
        proc = subprocess.run(
            [str(STACK), "up", "--secure"], env=env, capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"scripts/stack up --secure: {exc}")
    try:
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            unavailable(f"scripts/stack up --secure failed: {lines[-1] if lines else proc.returncode}")
        secrets = stack_dir / "secrets"
        yield Secured(
            dir=stack_dir,
            env=read_env_file(stack_dir / "env"),
            kafka_admin_password=(secrets / "kafka-admin").read_text(),
            redis_admin_password=(secrets / "redis-admin").read_text(),
            worker_kafka_password=(secrets / "kafka-worker").read_text(),
            worker_redis_password=(secrets / "redis-worker").read_text(),
        )
    finally:
        subprocess.run(
            [str(STACK), "down", "--secure"], env=env, capture_output=True, timeout=120, check=False
        )


@dataclass
class Topics:
    reviews: str
    out: str
    dlq: str
    group: str


def make_topics(s: Secured) -> Topics:
    tag = uuid.uuid4().hex[:8]
    # Names under the worker user's ACL prefixes (worker/stack/secure/kafka-worker.acl).
    t = Topics(
        f"reviews-{tag}", f"sentiment-results-{tag}", f"sentiment-dlq-{tag}", f"sentiment-worker-{tag}"
    )
    create_topics(s, t.reviews, t.out, t.dlq)
    return t


def create_topics(s: Secured, *names: str) -> None:
    admin = KafkaAdminClient(**s.kafka_admin_args(), request_timeout_ms=15000)
    try:
        admin.create_topics({name: {"num_partitions": 1, "replication_factor": 1} for name in names})
        admin.wait_for_topics(list(names), timeout_ms=15000)
    finally:
        admin.close()


def produce(s: Secured, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(**s.kafka_admin_args())
    for v in values:
        producer.send(topic, v)
    producer.flush()
    producer.close()


def read_all(s: Secured, topic: str) -> list[Any]:
    consumer = KafkaConsumer(**s.kafka_admin_args(), enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        out: list[Any] = []
        deadline = time.monotonic() + 30
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(batch)
        return out
    finally:
        consumer.close()


def worker_env(s: Secured, model: Path, t: Topics, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    env.update(s.env)
    env.update(
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        HF_HUB_OFFLINE="1",
        SENTIMENT_MODEL_DIR=str(model),
        SENTIMENT_INPUT_TOPICS=t.reviews,
        SENTIMENT_TOPIC_KINDS=json.dumps({t.reviews: "review"}),
        SENTIMENT_OUTPUT_TOPIC=t.out,
        SENTIMENT_DLQ_TOPIC=t.dlq,
        SENTIMENT_GROUP_ID=t.group,
        SENTIMENT_METRICS_PORT="0",
        SENTIMENT_TORCH_THREADS="1",
        SENTIMENT_CONNECT_TIMEOUT_S="6",
        SENTIMENT_LOG_LEVEL="DEBUG",
    )
    env.update(extra)
    return env


def run_worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "run", "--until-idle", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )


def reviews(n: int) -> list[bytes]:
    return [
        json.dumps({"id": f"r{i}", "text": f"fine thing {i}", "source": "shop"}).encode() for i in range(n)
    ]


def assert_no_secret(s: Secured, proc: subprocess.CompletedProcess[str], *extra: str) -> None:
    output = proc.stdout + proc.stderr
    for secret in (s.worker_kafka_password, s.worker_redis_password, s.kafka_admin_password, *extra):
        assert secret not in output


# ------------------------------------------------------------------------------------------------ tests


def test_worker_runs_over_sasl_ssl_and_redis_tls_acl_without_printing_secrets(
    secured: Secured, model_dir: Path
) -> None:
    t = make_topics(secured)
    produce(secured, t.reviews, [*reviews(N), b"{not json"])
    # Kafka password inline, Redis password from its *_FILE (the stack's env file): both ways work.
    env = worker_env(secured, model_dir, t, SENTIMENT_KAFKA_SASL_PASSWORD=secured.worker_kafka_password)
    env.pop("SENTIMENT_KAFKA_SASL_PASSWORD_FILE")
    assert "SENTIMENT_REDIS_PASSWORD_FILE" in env and "SENTIMENT_REDIS_PASSWORD" not in env
    proc = run_worker(env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_no_secret(secured, proc)
    assert sorted(json.loads(r.value)["id"] for r in read_all(secured, t.out)) == sorted(
        f"r{i}" for i in range(N)
    )
    assert len(read_all(secured, t.dlq)) == 1
    admin = secured.redis()
    try:
        store = CountStore(admin)
        assert store.watermarks() == {(t.reviews, 0): N + 1}
        assert store.window(3600)["total"] == N
    finally:
        admin.close()


@pytest.mark.parametrize("denied", ["output", "input", "group"])
def test_kafka_acls_deny_what_the_worker_user_was_not_granted_and_the_worker_fails_closed(
    secured: Secured, model_dir: Path, denied: str
) -> None:
    t = make_topics(secured)
    produce(secured, t.reviews, reviews(3))
    extra: dict[str, str] = {}
    if denied == "output":
        forbidden = f"forbidden-out-{uuid.uuid4().hex[:8]}"
        create_topics(secured, forbidden)
        extra["SENTIMENT_OUTPUT_TOPIC"] = forbidden
    elif denied == "input":
        forbidden = f"forbidden-in-{uuid.uuid4().hex[:8]}"
        create_topics(secured, forbidden)
        produce(secured, forbidden, reviews(3))
        extra.update(
            SENTIMENT_INPUT_TOPICS=forbidden, SENTIMENT_TOPIC_KINDS=json.dumps({forbidden: "review"})
        )
    else:
        extra["SENTIMENT_GROUP_ID"] = f"forbidden-group-{uuid.uuid4().hex[:8]}"
    proc = run_worker(worker_env(secured, model_dir, t, **extra))
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sentiment-worker: ") and "AuthorizationFailed" in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert_no_secret(secured, proc)
    assert read_all(secured, t.out) == []
    admin = KafkaAdminClient(**secured.kafka_admin_args())
    try:
        group = extra.get("SENTIMENT_GROUP_ID", t.group)
        assert admin.list_group_offsets(group).get(group, {}) == {}  # nothing committed
    finally:
        admin.close()


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("SENTIMENT_KAFKA_SSL_CAFILE", "wrong_ca", "TLS certificate check"),
        ("SENTIMENT_KAFKA_SASL_PASSWORD", "canary", "SASL SCRAM-SHA-512 login as 'worker'"),
        ("SENTIMENT_REDIS_SSL_CA_CERTS", "wrong_ca", "CERTIFICATE_VERIFY_FAILED"),
        ("SENTIMENT_REDIS_PASSWORD", "canary", "invalid username-password pair"),
    ],
)
def test_wrong_ca_or_password_fails_closed_with_one_clear_line(
    secured: Secured, model_dir: Path, setting: str, value: str, expected: str
) -> None:
    t = make_topics(secured)
    produce(secured, t.reviews, reviews(3))
    canary = f"canary-{uuid.uuid4().hex}"
    env = worker_env(secured, model_dir, t)
    env[setting] = secured.wrong_ca if value == "wrong_ca" else canary
    env.pop(f"{setting}_FILE", None)
    proc = run_worker(env)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sentiment-worker: cannot reach ") and expected in last, last
    assert "Traceback" not in proc.stderr
    assert_no_secret(secured, proc, canary)
    assert read_all(secured, t.out) == []  # nothing got through by another way


def test_the_secured_servers_refuse_plaintext(secured: Secured) -> None:
    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_servers=secured.bootstrap, bootstrap_timeout_ms=3000)
    plain = redis.Redis.from_url(
        secured.env["SENTIMENT_REDIS_URL"].replace("rediss://", "redis://"),
        socket_connect_timeout=3,
        socket_timeout=3,
    )
    with pytest.raises(redis.ConnectionError):
        plain.ping()


def test_redis_acl_lets_the_worker_count_and_read_and_refuses_everything_else(secured: Secured) -> None:
    client = secured.redis("worker", secured.worker_redis_password)
    try:
        store = CountStore(client, prefix="sentiment")
        tally = Tally(
            "acl-topic", 0, 0, "social_post", "x", "positive", 0.5, time.time_ns() // 1_000_000, "c1"
        )
        assert store.apply([tally], {("acl-topic", 0): 1}) == 1
        assert store.apply([tally], {("acl-topic", 0): 1}) == 0  # the watermark holds
        assert store.watermarks()[("acl-topic", 0)] == 1
        assert store.window(3600, kind="social_post")["positive"] >= 1
        mood = store.mood("c1")
        assert mood is not None and mood["label"] == "positive"
        # What `sentiment-worker serve` reads: the recent moods and the mood-updates channel.
        assert store.recent_moods(5)[0]["conversation_id"] == "c1"
        pubsub = client.pubsub()
        pubsub.subscribe(keys.mood_channel("sentiment"))
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        pubsub.close()
        for command in (
            ("FLUSHDB",),
            ("KEYS", "*"),
            ("CONFIG", "GET", "*"),
            ("SET", "other:key", "1"),
            ("HSET", "{other}:counts", "x", "1"),
            ("GET", "{sentiment}:watermarks"),
            ("SCRIPT", "FLUSH"),
            ("ACL", "LIST"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        # A script runs under the caller's ACL: EVAL is not granted, and a granted EVALSHA cannot reach
        # a command or key outside the worker's rules either.
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.eval("return redis.call('FLUSHDB')", 0)
        admin = secured.redis()
        try:
            sha = admin.script_load("return redis.call('SET', KEYS[1], '1')")
        finally:
            admin.close()
        with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)no permissions"):
            client.evalsha(sha, 1, "outside:key")
    finally:
        client.close()
