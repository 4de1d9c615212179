"""The metrics/health HTTP endpoints."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from worker.metrics import Metrics, serve


@pytest.fixture
def served() -> Iterator[tuple[Metrics, str]]:
    metrics = Metrics()
    server = serve(metrics, "127.0.0.1", 0, stale_after_s=0.5)
    host, port = server.server_address[:2]
    yield metrics, f"http://{host!s}:{port}"
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_are_exposed(served: tuple[Metrics, str]) -> None:
    metrics, base = served
    metrics.messages_in.labels("reviews").inc(3)
    metrics.dead_letters.labels("invalid_json").inc()
    metrics.set_lag({("reviews", 0): 42})
    metrics.batch_size.observe(32)
    status, body = get(base + "/metrics")
    assert status == 200
    assert 'sentiment_messages_in_total{topic="reviews"} 3.0' in body
    assert 'sentiment_dead_letters_total{reason="invalid_json"} 1.0' in body
    assert 'sentiment_consumer_lag{partition="0",topic="reviews"} 42.0' in body
    assert "sentiment_batch_size_bucket" in body and "sentiment_end_to_end_seconds_bucket" in body


def test_healthz_follows_the_heartbeat(served: tuple[Metrics, str]) -> None:
    metrics, base = served
    metrics.beat()
    assert get(base + "/healthz")[0] == 200
    metrics.heartbeat_time -= 10
    assert get(base + "/healthz")[0] == 503


def test_readyz_needs_the_model_and_an_assignment(served: tuple[Metrics, str]) -> None:
    metrics, base = served
    assert get(base + "/readyz")[0] == 503
    metrics.model_loaded = True
    assert get(base + "/readyz")[0] == 503
    metrics.assigned = lambda: True
    assert get(base + "/readyz") == (200, "ready\n")


def test_unknown_path_is_404(served: tuple[Metrics, str]) -> None:
    assert get(served[1] + "/nope")[0] == 404
