"""End to end through the real Kafka + Redis: a consumer process (the worker or the baseline), a producer and
a result collector in this process, and the timings that come out.

Latency of a message = timestamp of its result record - timestamp of its input record. Both are Kafka
CreateTime stamps taken by the producing clients on this machine (kafka-python stamps a record when ``send``
is called), so the figure covers queueing, polling, decoding, batching, inference and publishing. Results are
matched to inputs by the result's ``input`` (topic, partition, offset), which the produce futures report.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError

from bench import stats
from bench.traffic import encode

REPO = Path(__file__).resolve().parent.parent
Key = tuple[str, int, int]  # (topic, partition, offset) of an input record


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message is one line meant for the user."""


@dataclass(frozen=True)
class TopicSet:
    reviews: str
    social: str
    output: str
    dlq: str

    def input_for(self, msg: dict[str, object]) -> str:
        return self.reviews if msg["kind"] == "review" else self.social

    @property
    def all(self) -> list[str]:
        return [self.reviews, self.social, self.output, self.dlq]


@dataclass
class PhaseResult:
    name: str
    n: int
    offered_msg_s: float | None  # None: as fast as the producer goes
    produced: dict[Key, float] = field(default_factory=dict)
    results: dict[Key, float] = field(default_factory=dict)
    produce_s: float = 0.0
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    loop: dict[str, float] = field(default_factory=dict)  # the worker's own batch metrics for this phase
    cpu_s: float = math.nan  # CPU seconds the consumer process used during the phase

    def summary(self) -> dict[str, Any]:
        latencies, missing = stats.match_latencies(self.produced, self.results)
        got = [self.results[k] for k in self.produced if k in self.results]
        start = min(self.produced.values()) if self.produced else 0.0
        end = max(got) if got else 0.0
        extra: dict[str, float] = {}
        if self.loop and end > start:
            # The share of the phase the worker spent inside classify: what end-to-end / model would be if
            # the model ran as fast in the worker as alone; other programs on the machine move it less.
            busy_s = self.loop["batches"] * self.loop["inference_ms_per_batch"] / 1000
            extra["classify_share"] = busy_s / ((end - start) / 1000)
        return {
            "phase": self.name,
            "n": self.n,
            "offered_msg_s": self.offered_msg_s,
            "msg_s": stats.throughput(len(got), start, end),
            "missing": missing,
            "produce_s": self.produce_s,
            "load_avg_1m": self.load_avg[0],
            "cpu_s": self.cpu_s,
            "msg_per_cpu_s": len(got) / self.cpu_s if self.cpu_s > 0 else math.nan,
            **stats.latency_summary(latencies),
            **self.loop,
            **extra,
        }


def load_avg() -> tuple[float, float, float]:
    return os.getloadavg()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_SAMPLES = (
    "sentiment_batch_size_count",
    "sentiment_batch_size_sum",
    "sentiment_inference_seconds_sum",
    "sentiment_batch_seconds_sum",
)


def scrape(url: str) -> dict[str, float]:
    """The worker's batch counters from its /metrics page (empty if it cannot be read)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in _SAMPLES:
            out[name] = float(value)
    return out


def loop_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per phase: batches, mean records per batch, and per batch the classify time and the time from the end
    of classify to the commit (building results, publish + flush, Redis, commit)."""
    if not all(k in before and k in after for k in _SAMPLES):
        return {}
    d = {k: after[k] - before[k] for k in _SAMPLES}
    n = d["sentiment_batch_size_count"]
    if n <= 0:
        return {}
    inference = d["sentiment_inference_seconds_sum"]
    return {
        "batches": n,
        "mean_batch": d["sentiment_batch_size_sum"] / n,
        "inference_ms_per_batch": 1000 * inference / n,
        "after_inference_ms_per_batch": 1000 * (d["sentiment_batch_seconds_sum"] - inference) / n,
    }


# --------------------------------------------------------------------------------------------- Kafka edges


class Admin:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.created: list[str] = []

    def topic_set(self, label: str, partitions: int = 1) -> TopicSet:
        run = uuid.uuid4().hex[:8]
        ts = TopicSet(
            reviews=f"bench-{label}-{run}-reviews",
            social=f"bench-{label}-{run}-social",
            output=f"bench-{label}-{run}-results",
            dlq=f"bench-{label}-{run}-dlq",
        )
        # A client per call: an admin client left idle during a long phase may not reconnect by itself.
        client = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="bench-admin")
        try:
            client.create_topics([NewTopic(t, partitions, 1) for t in ts.all])
        finally:
            client.close()
        self.created += ts.all
        return ts

    def close(self) -> None:
        """Delete the topics made for this run (best effort: a failure here must not hide the results)."""
        if not self.created:
            return
        try:
            client = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="bench-admin")
            try:
                client.delete_topics(self.created)
            finally:
                client.close()
        except KafkaError as exc:
            print(f"bench: warning: could not delete the bench topics: {type(exc).__name__}", file=sys.stderr)


class Collector(threading.Thread):
    """Reads a result topic from the beginning; result input position -> result record timestamp."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name=f"collect-{topic}", daemon=True)
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, fetch_max_wait_ms=100
        )
        tps = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or {0})]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.results: dict[Key, float] = {}
        self.bad = 0
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for records in self.consumer.poll(timeout_ms=100).values():
                for r in records:
                    try:
                        inp = json.loads(r.value)["input"]
                        key = (str(inp["topic"]), int(inp["partition"]), int(inp["offset"]))
                    except (ValueError, KeyError, TypeError):
                        self.bad += 1
                        continue
                    with self._lock:
                        self.results.setdefault(key, float(r.timestamp))
        self.consumer.close()

    def count(self, keys: Sequence[Key]) -> int:
        with self._lock:
            return sum(1 for k in keys if k in self.results)

    def snapshot(self, keys: Sequence[Key]) -> dict[Key, float]:
        with self._lock:
            return {k: self.results[k] for k in keys if k in self.results}

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def make_producer(bootstrap: str, linger_ms: int) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms, acks=1)


def produce(
    producer: KafkaProducer,
    topics: TopicSet,
    messages: Sequence[dict[str, object]],
    rate: float | None = None,
) -> tuple[dict[Key, float], float]:
    """Send messages (paced at ``rate`` msg/s when given); (input position -> produce timestamp, seconds)."""
    futures = []
    t0 = time.perf_counter()
    for i, msg in enumerate(messages):
        if rate:
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        futures.append(producer.send(topics.input_for(msg), key=str(msg["id"]).encode(), value=encode(msg)))
    producer.flush(timeout=60)
    elapsed = time.perf_counter() - t0
    produced: dict[Key, float] = {}
    for f in futures:
        md = f.get(timeout=30)
        produced[(md.topic, md.partition, md.offset)] = float(md.timestamp)
    return produced, elapsed


# --------------------------------------------------------------------------------------------- processes


class Consumer:
    """A consumer process (worker or baseline) with its log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far, all threads (Linux /proc; NaN elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


def worker_env(
    *,
    bootstrap: str,
    redis_url: str,
    model_dir: Path,
    topics: TopicSet,
    group: str,
    batch_size: int,
    max_wait_ms: int,
    max_length: int,
    threads: int,
    redis_prefix: str,
    metrics_port: int = 0,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    env.update(
        {
            "SENTIMENT_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "SENTIMENT_REDIS_URL": redis_url,
            "SENTIMENT_MODEL_DIR": str(model_dir),
            "SENTIMENT_INPUT_TOPICS": f"{topics.reviews},{topics.social}",
            "SENTIMENT_OUTPUT_TOPIC": topics.output,
            "SENTIMENT_DLQ_TOPIC": topics.dlq,
            "SENTIMENT_GROUP_ID": group,
            "SENTIMENT_BATCH_SIZE": str(batch_size),
            "SENTIMENT_MAX_WAIT_MS": str(max_wait_ms),
            "SENTIMENT_MAX_LENGTH": str(max_length),
            "SENTIMENT_TORCH_THREADS": str(threads),
            "SENTIMENT_DEVICE": "cpu",
            "SENTIMENT_METRICS_PORT": str(metrics_port),
            "SENTIMENT_METRICS_HOST": "127.0.0.1",
            "SENTIMENT_REDIS_PREFIX": redis_prefix,
            "SENTIMENT_LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def start_worker(env: dict[str, str], log_path: Path, idle_s: float) -> Consumer:
    return Consumer(
        "worker", [sys.executable, "-m", "worker", "run", "--until-idle", str(idle_s)], env, log_path
    )


def start_baseline(
    *,
    bootstrap: str,
    redis_url: str,
    model_dir: Path,
    topics: TopicSet,
    group: str,
    max_length: int,
    threads: int,
    redis_prefix: str,
    log_path: Path,
    idle_s: float,
) -> Consumer:
    cmd = [
        sys.executable,
        "-m",
        "bench.baseline",
        "--model",
        str(model_dir),
        "--bootstrap",
        bootstrap,
        "--redis",
        redis_url,
        "--topics",
        f"{topics.reviews},{topics.social}",
        "--output-topic",
        topics.output,
        "--group",
        group,
        "--prefix",
        redis_prefix,
        "--max-length",
        str(max_length),
        "--threads",
        str(threads),
        "--until-idle",
        str(idle_s),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return Consumer("baseline", cmd, env, log_path)


# --------------------------------------------------------------------------------------------- a session


def wait_results(
    collector: Collector, keys: Sequence[Key], consumer: Consumer, timeout_s: float, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while collector.count(keys) < len(keys):
        if not consumer.alive():
            raise BenchError(
                f"the {consumer.name} exited (code {consumer.proc.returncode}) during {what}; "
                f"log {consumer.log_path}:\n{consumer.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise BenchError(
                f"{what}: {collector.count(keys)} of {len(keys)} results after {timeout_s:.0f}s; "
                f"log {consumer.log_path}:\n{consumer.log_tail()}"
            )
        time.sleep(0.05)


class Session:
    """One consumer process on its own topics, a producer and a result collector; phases run one at a time.

    ``min_rate`` (msg/s) only sets time-outs: a phase fails if the consumer is slower than that.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        topics: TopicSet,
        start: Callable[[], Consumer],
        min_rate: float,
        metrics_url: str | None = None,
    ) -> None:
        self.topics = topics
        self.metrics_url = metrics_url
        self.min_rate = min_rate
        self.collector = Collector(bootstrap, topics.output)
        self.collector.start()
        self.blast = make_producer(bootstrap, linger_ms=5)
        self.paced = make_producer(bootstrap, linger_ms=0)  # a paced message should not wait for company
        self.consumer = start()
        self.produced = 0
        self._closed = False

    @property
    def name(self) -> str:
        return self.consumer.name

    def warm_up(self, messages: Sequence[dict[str, object]]) -> float:
        """Send messages and wait for their results: then the consumer has its model and its partitions."""
        t0 = time.monotonic()
        produced, _ = produce(self.blast, self.topics, messages)
        self.produced += len(produced)
        wait_results(self.collector, list(produced), self.consumer, 240, f"{self.name} warm-up")
        return time.monotonic() - t0

    def phase(
        self, name: str, messages: Sequence[dict[str, object]], rate: float | None = None
    ) -> PhaseResult:
        """Send messages (paced at rate msg/s, else as fast as possible) and wait for every result."""
        time.sleep(0.5)  # let the consumer go idle, so phases do not overlap
        result = PhaseResult(name, len(messages), rate, load_avg=load_avg())
        before = scrape(self.metrics_url) if self.metrics_url else {}
        cpu0 = self.consumer.cpu_seconds()
        result.produced, result.produce_s = produce(
            self.paced if rate else self.blast, self.topics, messages, rate
        )
        self.produced += len(result.produced)
        keys = list(result.produced)
        expected_s = len(keys) / (rate or self.min_rate)
        wait_results(self.collector, keys, self.consumer, 60 + 3 * expected_s, f"{self.name} phase {name}")
        result.results = self.collector.snapshot(keys)
        result.cpu_s = self.consumer.cpu_seconds() - cpu0
        if self.metrics_url:
            time.sleep(0.2)  # the commit (and so the metrics) lands just after the results
            result.loop = loop_figures(before, scrape(self.metrics_url))
        return result

    def close(self) -> int | None:
        """Stop the consumer (SIGTERM, so it finishes its batch) and the clients; returns its exit code."""
        if self._closed:
            return self.consumer.proc.returncode
        self._closed = True
        try:
            return self.consumer.stop()
        finally:
            self.collector.stop()
            self.blast.close(timeout=10)
            self.paced.close(timeout=10)


def dlq_size(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        return int(sum(consumer.end_offsets(tps).values()))
    finally:
        consumer.close()


def redis_counted(redis_url: str, prefix: str) -> int:
    """Messages counted in the worker's 'all' buckets under prefix (sum over buckets and labels)."""
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        total = 0
        for key in r.scan_iter(match=f"{{{prefix}}}:counts:*:all:*", count=1000):
            total += sum(int(v) for v in r.hvals(key))
        return total
    finally:
        r.close()


def redis_cleanup(redis_url: str, patterns: Sequence[str]) -> None:
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        for pattern in patterns:
            keys = list(r.scan_iter(match=pattern, count=1000))
            if keys:
                r.delete(*keys)
    finally:
        r.close()
