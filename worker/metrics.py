"""Prometheus metrics and the health endpoints, served by one small HTTP thread.

GET /metrics   Prometheus text format
GET /healthz   200 while the loop's heartbeat is fresh (the process is alive and not stuck), else 503
GET /readyz    200 once the model is loaded and the consumer has partitions assigned, else 503
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.messages_in = Counter("sentiment_messages_in", "Records consumed", ["topic"], registry=r)
        self.results = Counter("sentiment_results", "Results published", ["kind", "label"], registry=r)
        self.dead_letters = Counter("sentiment_dead_letters", "Records dead-lettered", ["reason"], registry=r)
        self.batch_failures = Counter(
            "sentiment_batch_failures",
            "Batches that failed and will be processed again",
            ["error"],
            registry=r,
        )
        self.redis_replays = Counter(
            "sentiment_redis_replays",
            "Partitions re-counted because the Redis watermark was behind the committed offset",
            ["topic", "partition"],
            registry=r,
        )
        self.transaction_aborts = Counter(
            "sentiment_transaction_aborts", "Kafka transactions aborted (exactly once)", registry=r
        )
        self.batch_size = Histogram(
            "sentiment_batch_size", "Records per batch", buckets=_SIZE_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "sentiment_inference_seconds", "Classifier time per batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "sentiment_batch_seconds",
            "Time per batch from classification to commit",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "sentiment_end_to_end_seconds",
            "processed_at minus the input record's Kafka timestamp",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "sentiment_consumer_lag", "Records behind the high watermark", ["topic", "partition"], registry=r
        )
        self.model_info = Gauge(
            "sentiment_model_info", "The model being served", ["name", "version", "device"], registry=r
        )
        self.model_swaps = Counter(
            "sentiment_model_swaps",
            "Model versions swapped in (swapped) or refused and never served (failed)",
            ["outcome"],
            registry=r,
        )
        self.heartbeat_time = time.monotonic()
        self.model_loaded = False
        self.assigned: Callable[[], bool] = lambda: False

    def beat(self) -> None:
        self.heartbeat_time = time.monotonic()

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        for (topic, partition), value in lag.items():
            self.lag.labels(topic, str(partition)).set(value)

    def healthy(self, stale_after_s: float) -> bool:
        return time.monotonic() - self.heartbeat_time < stale_after_s

    def ready(self) -> bool:
        return self.model_loaded and self.assigned()


def serve(metrics: Metrics, host: str, port: int, *, stale_after_s: float) -> ThreadingHTTPServer:
    """Start the HTTP thread (daemon) and return the server (server.server_address has the bound port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = metrics.healthy(stale_after_s)
                self._send(200 if ok else 503, b"ok\n" if ok else b"stale heartbeat\n")
            elif path == "/readyz":
                ok = metrics.ready()
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would flood the log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
