"""Hot swap against a real Kafka broker and Redis: a running worker moves to a promoted version between two
batches, loses nothing, keeps the counts exact, never serves a bad version, and follows a rollback."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.helpers import (
    ROOT,
    Topics,
    committed,
    end_offsets,
    make_traffic,
    produce,
    read_topic,
    store_for,
    worker_env,
)
from trainer.registry import Registry
from worker.keys import H_MODEL, model_channel

POLL_S = "0.2"


@pytest.fixture
def registry(tmp_path: Path, tiny_model: Callable[..., Path]) -> tuple[Registry, str, str]:
    reg = Registry(tmp_path / "registry")
    a = reg.register(tiny_model(1))["version"]
    b = reg.register(tiny_model(2))["version"]
    reg.promote(a)
    return reg, a, b


class Running:
    """A `sentiment-worker run` child with its log in a file, stopped with SIGTERM at the end."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, needle: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(needle) < count:
            assert self.proc.poll() is None, f"worker exited {self.proc.returncode}: {self.log()[-1500:]}"
            assert time.monotonic() < deadline, f"no {needle!r} x{count} in the log: {self.log()[-1500:]}"
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        rc = self.proc.wait(60)
        self._log.close()
        return rc


@pytest.fixture
def start(kafka_bootstrap: str, redis_clean_url: str, topics: Topics, tmp_path: Path) -> Iterator[Any]:
    running: list[Running] = []

    def make(reg: Registry, **extra: str) -> Running:
        env = worker_env(kafka_bootstrap, redis_clean_url, Path("/nonexistent"), topics)
        del env["SENTIMENT_MODEL_DIR"]
        env.update({"SENTIMENT_MODEL_REGISTRY": str(reg.root), "SENTIMENT_MODEL_POLL_S": POLL_S, **extra})
        w = Running(env, tmp_path / f"worker{len(running)}.log")
        running.append(w)
        w.wait_for('"partitions assigned", "partitions": ["')
        return w

    yield make
    for w in running:
        w.stop()


def caught_up(kafka: str, t: Topics, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = committed(kafka, t.group)
        if all(done.get(tp, 0) >= o for tp, o in end_offsets(kafka, t.reviews, t.posts).items()):
            return
        assert time.monotonic() < deadline, "the worker did not catch up"
        time.sleep(0.2)


def results(kafka: str, topic: str) -> list[tuple[dict[str, Any], bytes]]:
    return [(json.loads(r.value), dict(r.headers)[H_MODEL]) for r in read_topic(kafka, topic)]


def test_a_swap_under_load_loses_nothing_and_each_partition_moves_once(
    kafka_bootstrap: str,
    redis_clean_url: str,
    topics: Topics,
    registry: tuple[Registry, str, str],
    start: Any,
) -> None:
    reg, a, b = registry
    w = start(reg)
    traffic = make_traffic(topics, 1200, 0, seed=11)
    chunks = [traffic.records[i : i + 40] for i in range(0, len(traffic.records), 40)]

    def feed() -> None:
        for chunk in chunks:
            produce(kafka_bootstrap, chunk)
            time.sleep(0.1)

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(1.0)
    promoted = time.time()
    reg.promote(b)
    w.wait_for('"model swapped"')
    feeder.join()
    caught_up(kafka_bootstrap, topics)
    assert w.stop() == 0

    out = results(kafka_bootstrap, topics.out)
    by_id = {r["id"]: r for r, _ in out}
    assert set(by_id) == set(traffic.valid)  # nothing lost
    assert len(out) == len(by_id)  # and, with no failure, nothing published twice
    assert all(header == f"tiny-bert@{r['model']['version']}".encode() for r, header in out)
    per_partition: dict[tuple[str, int], list[tuple[int, str]]] = defaultdict(list)
    for r, _ in out:
        per_partition[(r["input"]["topic"], r["input"]["partition"])].append(
            (r["input"]["offset"], r["model"]["version"])
        )
    for versions in per_partition.values():
        order = [v for _, v in sorted(versions)]
        assert order == sorted(order, key=lambda v: v != a)  # A then B, never back: one switch per partition
    seen = {r["model"]["version"] for r, _ in out}
    assert seen == {a, b}
    first_b = min(datetime.fromisoformat(r["processed_at"]) for r, _ in out if r["model"]["version"] == b)
    print(
        f"swap latency (alias flip -> first result of the new version): {first_b.timestamp() - promoted:.2f}s"
    )
    assert store_for(redis_clean_url).window(3600)["total"] == len(traffic.valid)  # counts exact


def _spoil(reg: Registry, version: str, how: str) -> None:
    """Change a registered version behind the registry's back."""
    folder = reg.root / "versions" / version
    for p in folder.iterdir():
        p.chmod(0o644)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if how == "truncate":
        weights.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flip":
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:  # wrong labels, with a manifest rewritten to match: only the worker's own label check stops it
        config = json.loads((folder / "config.json").read_text())
        config["id2label"] = {"0": "bad", "1": "meh", "2": "good"}
        raw = json.dumps(config).encode()
        (folder / "config.json").write_bytes(raw)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"]["config.json"] = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
        (folder / "manifest.json").write_text(json.dumps(manifest))


def test_rollback_swaps_back_and_bad_versions_are_never_served(
    kafka_bootstrap: str,
    topics: Topics,
    registry: tuple[Registry, str, str],
    start: Any,
    tiny_model: Callable[..., Path],
) -> None:
    reg, a, b = registry
    port = _free_port()
    w = start(reg, SENTIMENT_METRICS_PORT=str(port), SENTIMENT_METRICS_HOST="127.0.0.1")
    phases = iter(range(100))

    def round_trip() -> set[str]:
        """Produce a fresh phase of traffic, wait until it is committed; the versions that labelled it."""
        phase = next(phases)
        records = [
            (
                topics.reviews if i % 2 else topics.posts,
                f"ph{phase}-{i}".encode(),
                json.dumps(
                    {"id": f"ph{phase}-{i}", "text": f"great {i}", "source": "s", "platform": "x"}
                ).encode(),
            )
            for i in range(40)
        ]
        produce(kafka_bootstrap, records)
        caught_up(kafka_bootstrap, topics)
        mine = [r for r, _ in results(kafka_bootstrap, topics.out) if r["id"].startswith(f"ph{phase}-")]
        assert len(mine) == len(records)
        return {r["model"]["version"] for r in mine}

    assert round_trip() == {a}
    reg.promote(b)
    w.wait_for('"model swapped"')
    assert round_trip() == {b}
    reg.rollback()
    w.wait_for('"model swapped"', count=2)
    assert round_trip() == {a}

    for n, (seed, how) in enumerate([(3, "truncate"), (4, "flip"), (5, "labels")], start=1):
        version = reg.register(tiny_model(seed))["version"]
        _spoil(reg, version, how)
        reg.promote(version)
        w.wait_for('"model version not served; keeping the current one"', count=n)
        assert round_trip() == {a}, f"served a bad version ({how})"
        assert _ready(port)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'sentiment_model_swaps_total{outcome="failed"} 3.0' in metrics
    assert 'sentiment_model_swaps_total{outcome="swapped"} 2.0' in metrics
    assert f'version="{a}"' in metrics and f'version="{b}"' not in metrics  # model_info follows the swap
    reasons = [json.loads(line)["error"] for line in w.log().splitlines() if "not served" in line]
    assert "does not match the manifest" in reasons[0] and "does not match the manifest" in reasons[1]
    assert "id2label must name exactly" in reasons[2]
    assert w.stop() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
        return bool(r.status == 200)


def test_a_promotion_hint_on_redis_wakes_the_worker_long_before_its_poll(
    redis_clean_url: str, registry: tuple[Registry, str, str], start: Any
) -> None:
    reg, _, b = registry
    w = start(reg, SENTIMENT_MODEL_POLL_S="3600")
    time.sleep(1)  # the watcher has made its first check and now sleeps for an hour
    reg.promote(b)
    client = redis.Redis.from_url(redis_clean_url)
    deadline = time.monotonic() + 30
    while '"model swapped"' not in w.log():  # the subscriber may not be listening yet: publish until heard
        assert time.monotonic() < deadline, w.log()[-1500:]
        client.publish(model_channel("sentiment"), b)
        time.sleep(0.5)
    assert w.stop() == 0
