"""For the API and dashboard tests, on top of helpers.py: a worker process fed with real Kafka traffic
(`Live`) and the `sentiment-worker serve` processes in front of its Redis (`Api`). Fixtures: conftest.py."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.helpers import ROOT, Topics, produce, run_worker, text
from worker.counts import CountStore

CONVERSATIONS = ("c0", "c1", "c2")
SOURCES = ("shop", "web")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def own_db(url: str) -> str:
    """url with another DB number (15, or 14 when url already names 15)."""
    parts = urllib.parse.urlsplit(url)
    db = 14 if parts.path.strip("/") == "15" else 15
    return urllib.parse.urlunsplit(parts._replace(path=f"/{db}"))


@dataclass
class Api:
    url: str
    process: subprocess.Popen[bytes]
    token: str | None
    log: Path  # the server's stdout and stderr

    def get(self, path: str, *, token: str | None = None) -> tuple[int, object]:
        """(status, parsed JSON body) of GET path, with this server's token unless another is given."""
        request = urllib.request.Request(self.url + path)
        bearer = token if token is not None else self.token
        if bearer:
            request.add_header("Authorization", f"Bearer {bearer}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


@dataclass
class Live:
    """Topics, a running `sentiment-worker run`, and what has been produced to it so far."""

    kafka: str
    env: dict[str, str]
    topics: Topics
    store: CountStore
    tmp: Path
    produced: int = 0
    worker: subprocess.Popen[str] | None = None
    servers: list[Api] = field(default_factory=list)

    def send(self, n: int, *, seed: int, conversations: tuple[str, ...] = CONVERSATIONS) -> None:
        """Produce n valid messages: half reviews, half posts in the given conversations (timestamped now)."""
        rng = random.Random(seed)
        now_ms = time.time_ns() // 1_000_000
        records: list[tuple[str, bytes | None, bytes | None]] = []
        for i in range(n):
            uid = f"{seed}-{i}"
            msg: dict[str, str | int]
            if i % 2:
                # Reviews are dated up to 40 minutes back, as a backlog would be: the chart gets several bars.
                created_at = now_ms - rng.randint(0, 40) * 60_000
                msg = {
                    "id": f"r{uid}",
                    "text": text(rng),
                    "source": SOURCES[i % 4 // 2],
                    "created_at": created_at,
                }
                topic = self.topics.reviews
            else:
                conversation = conversations[i // 2 % len(conversations)]
                msg = {"id": f"p{uid}", "text": text(rng), "platform": "x", "conversation_id": conversation}
                topic = self.topics.posts
            records.append((topic, str(msg["id"]).encode(), json.dumps(msg).encode()))
        produce(self.kafka, records)
        self.produced += n

    def wait_counted(self, timeout_s: float = 120) -> None:
        """Block until Redis counts everything produced (the worker's whole pipeline ran for it)."""
        deadline = time.monotonic() + timeout_s
        while self.store.window(3600)["total"] < self.produced:
            assert self.worker is not None and self.worker.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, f"counted {self.store.window(3600)} of {self.produced}"
            time.sleep(0.2)
        assert self.store.window(3600)["total"] == self.produced

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_worker(self.env, *args, timeout=60)

    def serve(self, **extra_env: str) -> Api:
        """Start `sentiment-worker serve` on a free port; returns once /healthz answers."""
        port = free_port()
        env = {**self.env, **extra_env}
        log = self.tmp / f"serve-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker", "serve", "--port", str(port)],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        token = extra_env.get("SENTIMENT_API_TOKEN")
        if token is None and "SENTIMENT_API_TOKEN_FILE" in extra_env:
            token = Path(extra_env["SENTIMENT_API_TOKEN_FILE"]).read_text(encoding="utf-8").strip()
        api = Api(f"http://127.0.0.1:{port}", process, token, log)
        self.servers.append(api)
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"serve exited {process.returncode}: {log.read_text()}")
            with contextlib.suppress(OSError):
                if api.get("/healthz")[0] == 200:
                    return api
            assert time.monotonic() < deadline, "serve did not answer /healthz"
            time.sleep(0.1)


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
