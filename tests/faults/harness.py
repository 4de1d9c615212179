"""One scenario's world: its own topics, consumer group and Redis prefix on the suite's stack; worker
processes started, killed and waited for by PID; and the verifier's judgement at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError

from tests.faults.stack import ROOT, Stack
from tests.faults.traffic import Traffic, produce
from tests.faults.verify import Verdict, judge, lag, observe

# The worker under test: this checkout, or another one (to try a fix or bisect) named by FAULTS_WORKER_ROOT.
WORKER_ROOT = Path(os.environ.get("FAULTS_WORKER_ROOT", ROOT)).resolve()
MAX_BYTES = 16384
BATCH_SIZE = 16


@dataclass
class Worker:
    """A `python -m worker run` child process; its stderr (JSON log lines) goes to a file."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.returncode is not None:
                self.log_file.close()

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until the worker has partitions (its signal handlers are in place by then)."""
        deadline = time.monotonic() + timeout
        while '"partitions assigned", "partitions": ["' not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode} before it got partitions")
            if time.monotonic() > deadline:
                raise TimeoutError("worker got no partitions")
            time.sleep(0.2)


@dataclass
class Case:
    stack: Stack
    name: str
    model_dir: Path
    work: Path
    guarantee: str = "at_least_once"
    partitions: int = 2
    truth: Traffic = field(default_factory=Traffic)
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        tag = f"{self.name.lower()}-{uuid.uuid4().hex[:8]}"
        self.tag = tag
        self.reviews, self.posts = f"faults.{tag}.reviews", f"faults.{tag}.posts"
        self.out, self.dlq = f"faults.{tag}.results", f"faults.{tag}.dlq"
        self.group, self.prefix = f"faults.{tag}", f"faults.{tag}"
        self.work.mkdir(parents=True, exist_ok=True)

    @property
    def inputs(self) -> list[str]:
        return [self.reviews, self.posts]

    def create_topics(
        self, *, output: bool = True, dlq: bool = True, configs: dict[str, dict[str, str]] | None = None
    ) -> None:
        """The input topics, plus the output and DLQ topics unless told not; configs: topic -> its configs."""
        names = self.inputs + ([self.out] if output else []) + ([self.dlq] if dlq else [])
        self.create(names, configs)

    def create(self, names: list[str], configs: dict[str, dict[str, str]] | None = None) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.stack.bootstrap)
        try:
            admin.create_topics(
                [NewTopic(t, self.partitions, 1, topic_configs=(configs or {}).get(t, {})) for t in names]
            )
        finally:
            admin.close()

    def produce(self, traffic: Traffic, *, seed: int = 3) -> None:
        self.truth.extend(traffic)
        produce(self.stack.bootstrap, traffic.records, shuffle_seed=seed)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
        env.update(
            PYTHONPATH=str(WORKER_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
            HF_HUB_OFFLINE="1",
            SENTIMENT_KAFKA_BOOTSTRAP_SERVERS=self.stack.bootstrap,
            SENTIMENT_REDIS_URL=self.stack.redis_url(),
            SENTIMENT_REDIS_PREFIX=self.prefix,
            SENTIMENT_MODEL_DIR=str(self.model_dir),
            SENTIMENT_INPUT_TOPICS=",".join(self.inputs),
            SENTIMENT_TOPIC_KINDS=json.dumps({self.reviews: "review", self.posts: "social_post"}),
            SENTIMENT_OUTPUT_TOPIC=self.out,
            SENTIMENT_DLQ_TOPIC=self.dlq,
            SENTIMENT_GROUP_ID=self.group,
            SENTIMENT_BATCH_SIZE=str(BATCH_SIZE),
            SENTIMENT_MAX_MESSAGE_BYTES=str(MAX_BYTES),
            SENTIMENT_METRICS_PORT="0",
            SENTIMENT_TORCH_THREADS="1",
            SENTIMENT_DEVICE="cpu",
            SENTIMENT_CONNECT_TIMEOUT_S="20",
            # a SIGKILLed member leaves the group after this, not after the 45 s default
            SENTIMENT_SESSION_TIMEOUT_MS="6000",
            SENTIMENT_PROCESSING_GUARANTEE=self.guarantee,
        )
        env.update(extra)
        return env

    def start(self, *args: str, **extra: str) -> Worker:
        n = len(self.workers)
        log_path = self.work / f"{self.tag}-worker{n}.log"
        log_file = log_path.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", *args],
            env=self.env(**extra),
            cwd=WORKER_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        w = Worker(proc, log_path, log_file)
        self.workers.append(w)
        return w

    def run_until_idle(self, idle_s: float = 5, timeout: float = 180, **extra: str) -> Worker:
        w = self.start("--until-idle", str(idle_s), **extra)
        rc = w.wait(timeout)
        if rc != 0:
            raise AssertionError(f"worker exited {rc}; log tail: {w.log()[-800:]}")
        return w

    def lag(self) -> int:
        """The group's lag; retried while the broker is still electing a coordinator after a restart."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return lag(self.stack.bootstrap, self.group, self.inputs)
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def wait_caught_up(self, timeout: float = 120) -> float:
        """Seconds until the group's committed offsets reach the end of the inputs (raises on timeout)."""
        t0 = time.monotonic()
        while self.lag():
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{self.name}: lag not 0 after {timeout:.0f}s")
            time.sleep(0.5)
        return time.monotonic() - t0

    def failed_batches(self) -> int:
        """Batches that failed and were retried, over all workers (each retry may republish the batch)."""
        return sum(w.log().count('"batch failed; nothing committed, retrying"') for w in self.workers)

    def verify(self, *, max_duplicates: int = 0, replayed: int = 0) -> Verdict:
        seen = observe(
            self.stack.bootstrap,
            self.stack.redis_url(),
            prefix=self.prefix,
            group=self.group,
            inputs=self.inputs,
            out=self.out,
            dlq=self.dlq,
        )
        return judge(
            self.truth, seen, max_duplicates=max_duplicates, guarantee=self.guarantee, replayed=replayed
        )

    def close(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.kill()
