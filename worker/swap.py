"""Hot swap: watch a registry alias and load the version it names beside the one being served.

A background thread resolves the alias every poll_s seconds (or sooner when woken). A version that differs
from the one served is verified against its manifest, loaded (weights, tokenizer, labels), checked to hash
to its own version id, and warmed up on one batch; only then does take() hand it to the loop, which swaps it
in between two batches. Any failure leaves the served model as it is: one log line, a
sentiment_model_swaps_total{outcome="failed"} count, and no new try until the alias points somewhere else.
The thread holds no model once the loop has taken it, so the old model is freed when its last batch is done.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.loop import Model
from worker.metrics import Metrics
from worker.registry import RegistryError, Version, resolve, verify

log = logging.getLogger(__name__)


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, RegistryError) else f"{type(exc).__name__}: {text}"[:300]


class Swapper:
    def __init__(
        self,
        registry: Path,
        alias: str,
        load: Callable[[Version], Model],
        *,
        serving: Model,
        poll_s: float,
        metrics: Metrics,
        device: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry, self.alias, self._load, self.poll_s = registry, alias, load, poll_s
        self.metrics, self.device, self.clock = metrics, device, clock
        self._lock = threading.Lock()
        self._serving = serving.model_ref
        self._ready: Model | None = None
        self._failed: str | None = None  # the version that failed last: not tried again while aliased
        self._problem: str | None = None  # the last alias-resolution problem logged (logged once)
        self._moved_at: float | None = None  # when check() first saw the alias at the version being loaded
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_swap_s: float | None = None  # alias seen moved -> loop took the model

    @property
    def serving(self) -> str:
        return self._serving.version

    def check(self) -> None:
        """One look at the alias; loads, verifies and stages its version when it is a new one."""
        try:
            version = resolve(self.registry, self.alias)
        except RegistryError as exc:
            if str(exc) != self._problem:
                self._problem = str(exc)
                log.error("model registry unreadable; serving the current model", extra={"error": str(exc)})
            return
        self._problem = None
        with self._lock:
            if version == self._serving.version:
                self._ready = None  # the alias moved back before the loop took the staged model
                self._failed = None
                return
            if self._ready is not None and self._ready.model_ref.version == version:
                return
        if version == self._failed:
            return
        self._failed = None
        seen = self.clock()
        log.info("loading model version", extra={"version": version, "serving": self.serving})
        try:
            gc.collect()  # a model swapped out earlier is freed before the next one is loaded
            model = self._load(verify(self.registry, version))
            if model.model_ref.version != version:
                raise RegistryError(f"version {version}: its weights hash to {model.model_ref.version}")
        except Exception as exc:  # any failure: keep serving the current model
            self._failed = version
            self.metrics.model_swaps.labels("failed").inc()
            log.error(
                "model version not served; keeping the current one",
                extra={"version": version, "serving": self.serving, "error": _reason(exc)},
            )
            return
        with self._lock:
            self._ready, self._moved_at = model, seen
        log.info("model version loaded; swapping at the next batch", extra={"version": version})

    def take(self) -> Model | None:
        """The staged model, once: the caller serves it from now on (called by the loop between batches)."""
        if self._ready is None:  # unlocked fast path: the loop calls this before every batch
            return None
        with self._lock:
            model, self._ready = self._ready, None
            if model is None:
                return None
            old, self._serving = self._serving, model.model_ref
        if self._moved_at is not None:
            self.last_swap_s = self.clock() - self._moved_at
        info = self.metrics.model_info
        info.remove(old.name, old.version, self.device)
        info.labels(model.model_ref.name, model.model_ref.version, self.device).set(1)
        self.metrics.model_swaps.labels("swapped").inc()
        return model

    def wake(self) -> None:
        """Look at the alias now (a hint, e.g. from pub/sub; the timer goes on regardless)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="model-swap", daemon=True)
        self._thread.start()

    def listen(self, client: Any, channel: str) -> None:
        """Wake on each message of a Redis pub/sub channel. Only a hint: pub/sub drops messages while a
        subscriber is away, so the timer goes on regardless."""

        def run() -> None:
            while not self._stop.is_set():
                try:
                    pubsub = client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(channel)
                    while not self._stop.is_set():
                        if pubsub.get_message(timeout=1.0) is not None:
                            self.wake()
                except Exception as exc:  # Redis away: the poll still runs; try again later
                    log.debug("model hint channel unavailable", extra={"error": type(exc).__name__})
                    self._stop.wait(5)

        threading.Thread(target=run, name="model-hint", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception as exc:  # never let the watcher die: the next tick tries again
                log.error("model watcher failed", extra={"error": _reason(exc)})
            self._wake.wait(self.poll_s)
            self._wake.clear()
