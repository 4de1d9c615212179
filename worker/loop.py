"""The worker loop: poll -> decode -> micro-batch -> classify -> publish + flush -> count -> commit.

Batches overlap (``overlap``, where it pays: see overlap_pays): while batch N is classified on a second
thread, the loop's thread polls, decodes and tokenizes batch N+1, and once N+1 is ready it is classified
while N is published, counted and committed. Effects stay in order on the loop's thread: N is committed
before anything of N+1 is published, and the model sees one batch at a time. On a GPU tokenizing, JSON and
Kafka are the limit, so the overlap hides the model's time behind them. Without overlap the same code runs
each classification on the loop's thread at once, one batch after the other. Its sources and sinks are
small protocols (Kafka and Redis adapters in production, in-memory fakes in the unit tests, an in-process
source in benchmarks).

Batch wait: a batch closes MAX_WAIT after its first record could have come. Records that a poll hands over
after the loop was busy (classifying, publishing) may have waited since the poll before, so their batch's
wait counts from then: a message waits at most MAX_WAIT for company, not MAX_WAIT on top of a busy spell.
Such a poll hands over only what kafka-python's one fetch in flight held, answered when the first record of
the busy spell came; the rest is still at the broker. So a batch whose wait is already over when its records
come takes one more short poll (DRAIN_POLL_S) before it closes: without it, batches alternated between one
record and all the others under steady traffic (python -m bench, 50 % load), and a one-record batch costs
most of what a full one does.

Guarantees (at least once):
- Offsets are committed (offset + 1 per partition) only after every result and dead letter of the batch was
  acknowledged by Kafka and the counts were written to Redis. If any step fails nothing is committed, the
  consumer seeks back to the batch's first offsets and the batch is processed again after a back-off.
- So a crash or failure can republish results (duplicates on the output topic), but never loses a record.
  A batch that failed after its records were acknowledged (Redis down, commit refused) does not publish
  them again on retry: the loop remembers which input positions are published but not yet committed.
- Counts stay exact: Redis stores a per-partition watermark with the counts in the same Lua call and skips
  offsets below it, so a replayed record is never counted twice.

max.poll.interval.ms: batches are bounded (max_poll_records = batch size, and a batch closes after
max_wait), and the loop polls while a batch is classified, so the time between two polls is at most one
batch's inference plus one flush, seconds at worst on CPU, far below the 5-minute default. The consumer
is only ever used from the loop's thread; the classify thread touches nothing but the model.

Rebalances: revoke callbacks run inside poll(). After each poll the records of revoked partitions are dropped
from the batch being built and from the batch being classified (its results for them are thrown away when it
lands): not committed; the new owner reads them again from the committed offset, and the Redis watermark
keeps the counts exact. The batch read ahead is never committed before the one ahead of it, and when a
batch fails the read-ahead is dropped with it: the seek back to the failed batch's first offsets reads both
again.

Exactly once (with ``transactions``): each batch is one Kafka transaction: begin -> send results and dead
letters -> flush -> Redis update (idempotent thanks to the watermark) -> send the consumed offsets to the
transaction with the consumer's group metadata -> commit. Any failure aborts the transaction (read_committed
consumers never see its records), seeks back and retries. Redis is written before the commit, so a crash
between the two leaves Redis ahead of Kafka: the batch is redelivered, published again in a new transaction
and skipped by the watermark, so both the output and the counts stay exact. An abort that fails, or a fenced
producer, is fatal: the loop raises FatalError and the process exits (a supervisor restarts it).

Model swaps (with ``models``, a registry watcher): a new model version is loaded and verified on another
thread while the loop goes on with the one it serves; the loop takes it between two batches. Each batch is
classified by exactly one version and its results name it: a batch already being classified finishes with the
old model, the batch being built is tokenized again with the new one's tokenizer, and the old model is freed
once nothing uses it.

Until idle (``run(until_idle_s=...)``, for backfills and tests): the loop stops when nothing was polled for
that long AND the whole group is done: the committed offsets reached the end offsets on every partition of the
input topics, not only on those assigned here (``group``, read with the admin client). A member that died
holds its partitions until its session timeout, and a live one may be slow, so while the group has lag the
loop keeps waiting (and takes those partitions when they come), logs so every few seconds, and gives up with
GroupNotDone only after ``until_idle_max_s`` without the group's lag going down.

Redis data loss (both guarantees): after each new assignment the loop compares each partition's Redis
watermark with Kafka's committed offset. A watermark behind the commit (Redis flushed or restored from an
older snapshot) makes the loop seek that partition back to the watermark (the earliest offset when there is
none) and re-count the records up to the committed offset without publishing them again: they were
published (and committed) before, only Redis lost them.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from worker.batching import Limits, first_offsets, is_full, next_offsets, wait_left_s
from worker.counts import Tally
from worker.decode import decode
from worker.messages import ModelRef, Record, Rejected, Review, Scores, SocialPost
from worker.metrics import Metrics
from worker.output import DeadLettersTooLarge, OutRecord, dead_letter, result_fields, result_record, tally

log = logging.getLogger(__name__)
T = TypeVar("T")

FAULT_POINTS = ("after_poll", "after_classify", "after_publish", "after_redis", "after_commit")


class Source(Protocol):
    def poll(self, timeout_ms: int, max_records: int) -> list[Record]: ...
    def take_revoked(self) -> set[tuple[str, int]]: ...
    def assigned(self) -> bool: ...
    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None: ...
    def seek(self, offsets: Mapping[tuple[str, int], int]) -> None: ...
    def lag(self) -> dict[tuple[str, int], int]: ...


class Sink(Protocol):
    def publish(self, records: Sequence[OutRecord]) -> None: ...


class Counts(Protocol):
    def apply(self, tallies: Sequence[Tally], next_offsets: Mapping[tuple[str, int], int]) -> int: ...


class Transactions(Protocol):
    """The sink's transaction (exactly once). commit() also commits the consumed offsets inside it."""

    def begin(self) -> None: ...
    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None: ...
    def abort(self) -> None: ...


class Offsets(Protocol):
    """What the Redis-loss check needs from the consumer."""

    def take_assigned(self) -> set[tuple[str, int]]: ...
    def committed(self, partitions: Collection[tuple[str, int]]) -> dict[tuple[str, int], int]: ...
    def beginning(self, partitions: Collection[tuple[str, int]]) -> dict[tuple[str, int], int]: ...


class GroupProgress(Protocol):
    """How far the whole consumer group is (worker.consume.KafkaSource)."""

    def group_lag(self) -> dict[tuple[str, int], int]: ...


class GroupNotDone(Exception):
    """--until-idle gave up: other members still hold partitions with lag; the message is one line."""


class FatalError(Exception):
    """The producer cannot go on (fenced by a newer instance, or its transaction cannot be aborted)."""


class PartitionsLost(Exception):
    """The group refused the batch's commit: it rebalanced and the partitions now belong to another member,
    which reads them again from the committed offset. Nothing is lost and the batch is no longer ours, so a
    stop requested meanwhile ends cleanly."""


class Model(Protocol):
    model_ref: ModelRef

    def encode(self, texts: Sequence[str]) -> list[list[int]]: ...
    def classify(self, encoded: Sequence[Sequence[int]]) -> Sequence[Scores | Exception]: ...


class Models(Protocol):
    """Where a new model version comes from (worker.swap.Swapper): one that is loaded, verified and ready."""

    def take(self) -> Model | None: ...


@dataclass(frozen=True, slots=True)
class LoopConfig:
    limits: Limits
    output_topic: str
    dlq_topic: str
    topic_kinds: Mapping[str, str]
    max_message_bytes: int
    idle_poll_ms: int = 200
    backoff_s: tuple[float, float] = (0.5, 30.0)  # first and longest wait after a failed batch
    log_text: bool = False


@dataclass(frozen=True, slots=True)
class Item:
    record: Record
    decoded: Review | SocialPost | Rejected
    ids: list[int] | None  # token ids of a valid message

    @property
    def position(self) -> tuple[str, int, int]:
        return self.record.topic, self.record.partition, self.record.offset


# How often the loop looks up from polling to see whether the batch being classified is done.
FLIGHT_CHECK_S = 0.005
# Time between two polls beyond which the loop counts as having been busy (not polling) meanwhile.
BUSY_GAP_S = 0.005
# The poll that fetches what came during a busy spell: one fetch round trip to the broker, with room to spare.
DRAIN_POLL_S = 0.01


@dataclass(slots=True)
class _Flight:
    """The batch being classified on the classify thread while the loop reads ahead."""

    items: list[Item]
    future: Future[tuple[list[Scores | Exception | None], float]]
    started: float
    model: ModelRef  # the version classifying it: its results name this one
    dropped: set[tuple[str, int]] = field(default_factory=set)  # partitions revoked meanwhile


class _Inline(Executor):
    """Runs the call at submit, on the caller's thread: batches never overlap."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


def overlap_pays(device: str, torch_threads: int, cpus: int) -> bool:
    """Whether classifying on a second thread while the loop reads ahead is faster than one thread.

    On a GPU the model leaves the CPU to the loop. On a CPU, torch's threads running the model and the loop
    thread decoding and tokenizing then compete for the same cores, and torch's parallel sections wait for
    their slowest thread: on 2 cores with 2 torch threads, overlapping made MiniLM 14 % slower (255 -> 220
    msg/s) while with a core left free it made the loop 30 % faster.
    """
    return device == "cuda" or torch_threads < cpus


def fault_hook(point: str, after_n: int) -> Callable[[str], None]:
    """A hook that SIGKILLs this process the after_n-th time the loop reaches ``point`` (crash tests)."""
    if point not in FAULT_POINTS:
        raise ValueError(f"fault point must be one of {', '.join(FAULT_POINTS)}")
    seen = 0

    def hook(at: str) -> None:
        nonlocal seen
        if at == point:
            seen += 1
            if seen >= after_n:
                logging.shutdown()
                os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _no_hook(point: str) -> None:
    pass


def _inference_failed(item: Item, exc: Exception) -> Item:
    """A message the model cannot classify even on its own (out of memory) becomes a dead letter."""
    tokens = len(item.ids or ())
    detail = f"the model ran out of memory on this message alone ({tokens} tokens)"
    return Item(item.record, Rejected("inference_failed", detail, type(exc).__name__), None)


def replay_plan(
    committed: Mapping[tuple[str, int], int],
    watermarks: Mapping[tuple[str, int], int],
    beginning: Mapping[tuple[str, int], int],
) -> dict[tuple[str, int], tuple[int, int]]:
    """Partitions whose Redis watermark is behind Kafka's committed offset -> (seek to, replay until).

    Seek to the watermark, or the earliest offset still in Kafka when there is no watermark or it is older
    than that (those records are gone: their counts cannot come back). Records from there up to the
    committed offset are counted again but not published again.
    """
    plan: dict[tuple[str, int], tuple[int, int]] = {}
    for tp, done in committed.items():
        mark = watermarks.get(tp)
        if mark is not None and mark >= done:
            continue
        start = max(mark or 0, beginning.get(tp, 0))
        if start < done:
            plan[tp] = (start, done)
    return plan


def group_lag(
    end: Mapping[tuple[str, int], int],
    committed: Mapping[tuple[str, int], int],
    beginning: Mapping[tuple[str, int], int],
    positions: Mapping[tuple[str, int], int],
) -> dict[tuple[str, int], int]:
    """Partitions whose records are not all done -> how many are left (end offset - done offset).

    Done: the group's committed offset, else the earliest offset still in Kafka (nothing committed yet), or
    for a partition assigned here this consumer's position when that is further (records that only a
    transaction marker follows are done though the commit stops before the marker).
    """
    out: dict[tuple[str, int], int] = {}
    for tp, e in end.items():
        done = max(committed.get(tp, beginning.get(tp, 0)), positions.get(tp, 0))
        if e > done:
            out[tp] = e - done
    return out


def describe_lag(lag: Mapping[tuple[str, int], int], limit: int = 6) -> str:
    """'1757 records on 4 partition(s) (reviews:0 512, ...)', for one-line messages."""
    parts = [f"{t}:{p} {n}" for (t, p), n in sorted(lag.items())]
    shown = ", ".join(parts[:limit]) + (f", +{len(parts) - limit} more" if len(parts) > limit else "")
    return f"{sum(lag.values())} records on {len(lag)} partition(s) ({shown})"


# How often an idle loop asks the group how far it is, and how often it says that it waits.
GROUP_CHECK_S = 1.0
GROUP_WAIT_LOG_S = 5.0


@dataclass(slots=True)
class _IdleWait:
    """The group's lag while this member is idle but the group is not done."""

    activity: float  # the loop's last activity when the wait began; new activity ends the wait
    since: float  # when the lag last went down (the give-up bound counts from here)
    least: int | None = None  # the smallest total lag seen
    checked: float = -math.inf
    logged: float = -math.inf
    lag: dict[tuple[str, int], int] | None = None
    failing: bool = False  # the last check could not read the offsets


def commit_offsets(
    offsets: Mapping[tuple[str, int], int], replay_until: Mapping[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """The offsets to commit: a partition still replaying below its committed offset must not move it back."""
    return {tp: o for tp, o in offsets.items() if o > replay_until.get(tp, -1)}


class Loop:
    def __init__(
        self,
        source: Source,
        sink: Sink,
        counts: Counts,
        model: Model,
        config: LoopConfig,
        *,
        metrics: Metrics | None = None,
        transactions: Transactions | None = None,
        offsets: Offsets | None = None,
        watermarks: Callable[[], Mapping[tuple[str, int], int]] | None = None,
        overlap: bool = True,
        models: Models | None = None,
        group: GroupProgress | None = None,
        hook: Callable[[str], None] = _no_hook,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.source, self.sink, self.counts, self.model, self.config = source, sink, counts, model, config
        self.metrics = metrics or Metrics()
        self.transactions = transactions  # None: at least once
        self.offsets, self.watermarks = offsets, watermarks  # both given: the Redis-loss check runs
        self.replay_until: dict[tuple[str, int], int] = {}  # partition -> committed offset while replaying
        self._unchecked: set[tuple[str, int]] = set()  # assigned, Redis watermark not compared yet
        self._in_transaction = False
        # Input positions whose output was acknowledged by Kafka but not committed yet (at least once).
        self._published: set[tuple[str, int, int]] = set()
        # Input positions whose dead letter the DLQ topic refused as too large: resent without the value.
        self._too_large: set[tuple[str, int, int]] = set()
        self.overlap = overlap  # False: classify on the loop's thread, one batch after the other
        self.models = models  # None: the model never changes
        self.group = group  # None: until-idle looks at this member only (in-memory tests)
        self._idle_wait: _IdleWait | None = None
        self._flight: _Flight | None = None
        self._building: list[Item] = []  # the batch being polled for
        self._tokens = 0  # its tokens
        self._started: float | None = None  # when its first record came
        self._drain = False  # its wait is over, but the records of the busy spell are not all fetched yet
        self._polled_at = clock()  # when the last poll returned
        self.hook, self.clock, self.wall_ms, self.sleep = hook, clock, wall_ms, sleep
        self.stop_requested = False
        self.processed = 0  # records committed (results + dead letters)

    def request_stop(self) -> None:
        """Finish the batch being built or processed, commit it, then return from run()."""
        self.stop_requested = True

    # ------------------------------------------------------------------------------------------ batches

    def collect(self) -> list[Item]:
        """Poll until a batch is full (records or tokens), its wait is over, or a poll comes back empty."""
        while True:
            self._poll_once(self._poll_timeout_s())
            if not self._building:
                return []
            if self._ready():
                return self._take()

    def _ready(self) -> bool:
        """The batch being built must go: it is full, its wait is over, or a stop was requested."""
        if not self._building:
            return False
        assert self._started is not None
        limits = self.config.limits
        return (
            self.stop_requested
            or is_full(len(self._building), self._tokens, limits)
            or (not self._drain and wait_left_s(self._started, self.clock(), limits) <= 0)
        )

    def _take(self) -> list[Item]:
        items, self._building, self._tokens, self._started = self._building, [], 0, None
        self._drain = False
        return items

    def _poll_timeout_s(self) -> float:
        wait = self.config.idle_poll_ms / 1000
        if self._drain:
            wait = DRAIN_POLL_S
        elif self._started is not None:
            wait = wait_left_s(self._started, self.clock(), self.config.limits)
        if self._flight is not None:  # come back soon to publish the batch being classified when it is done
            wait = min(wait, FLIGHT_CHECK_S)
        return wait

    def _poll_once(self, timeout_s: float) -> None:
        """One poll into the batch being built, after handling revoked and newly assigned partitions."""
        limits = self.config.limits
        polled_before, poll_start = self._polled_at, self.clock()
        records = self.source.poll(math.ceil(timeout_s * 1000), limits.max_records - len(self._building))
        self._polled_at = self.clock()
        self._drain = False
        flight = self._flight.items if self._flight is not None else []
        revoked = self.source.take_revoked()
        for tp in revoked:
            self.replay_until.pop(tp, None)
            self._unchecked.discard(tp)
        if revoked:
            self._published = {p for p in self._published if p[:2] not in revoked}
            # kafka-python keeps the read position of a partition that a rebalance revokes and hands
            # straight back to this consumer, so the records dropped below must be read again: seek back
            # to the first one. (A partition now owned elsewhere is skipped by seek; its new owner starts
            # at the committed offset.) Before _check_assigned, whose replay seek must win.
            back = first_offsets(
                [i.position for i in (*flight, *self._building) if i.position[:2] in revoked]
                + [(r.topic, r.partition, r.offset) for r in records if (r.topic, r.partition) in revoked]
            )
            if back:
                self.source.seek(back)
        # Partitions sought back for a Redis replay drop what was read ahead of the seek.
        dropped = revoked | self._check_assigned(records)
        if dropped:
            records = [r for r in records if (r.topic, r.partition) not in dropped]
            if self._flight is not None:  # its results for these partitions are thrown away when it lands
                self._flight.dropped |= dropped
            if self._building:
                self._building = [i for i in self._building if i.position[:2] not in dropped]
                self._tokens = sum(len(i.ids or ()) for i in self._building)
                if not self._building:
                    self._started = None
        if records:
            self.hook("after_poll")
            new = self._prepare(records)
            self._building.extend(new)
            self._tokens += sum(len(i.ids or ()) for i in new)
            busy = poll_start - polled_before > BUSY_GAP_S
            if self._started is None:
                # Records that came while the loop was busy elsewhere (classifying, publishing) have been
                # waiting since it last polled: their batch's wait began then, not now.
                self._started = polled_before if busy else self.clock()
            # While a batch is classified on the other thread the loop keeps polling, so fetches flow.
            self._drain = (
                busy
                and self._flight is None
                and limits.max_wait_s > 0
                and not is_full(len(self._building), self._tokens, limits)
                and wait_left_s(self._started, self.clock(), limits) <= 0
            )

    def _check_assigned(self, records: Sequence[Record]) -> set[tuple[str, int]]:
        """Seek newly assigned partitions whose Redis watermark is behind the commit.

        Returns the partitions whose records read so far must be dropped: those sought back, and those whose
        check failed (Kafka or Redis unreachable; sought back to their first record read and checked again
        at the next poll, so no record is counted before its partition was checked).
        """
        if self.offsets is None or self.watermarks is None:
            return set()
        self._unchecked |= self.offsets.take_assigned()
        if not self._unchecked:
            return set()
        pending = set(self._unchecked)
        try:
            committed = self.offsets.committed(pending)
            marks = self.watermarks()
            behind = [tp for tp, o in committed.items() if marks.get(tp, -1) < o]
            plan = replay_plan(committed, marks, self.offsets.beginning(behind)) if behind else {}
            if plan:
                self.source.seek({tp: start for tp, (start, _) in plan.items()})
        except Exception as exc:
            log.warning("Redis replay check failed; retrying", extra={"error": type(exc).__name__})
            back = first_offsets(
                (r.topic, r.partition, r.offset) for r in records if (r.topic, r.partition) in pending
            )
            if back:
                self.source.seek(back)
            return pending
        self._unchecked.clear()
        for (topic, partition), (start, until) in sorted(plan.items()):
            self.replay_until[(topic, partition)] = until
            self.metrics.redis_replays.labels(topic, str(partition)).inc()
            log.warning(
                "Redis watermark behind the committed offset; re-counting without publishing",
                extra={
                    "topic": topic,
                    "partition": partition,
                    "watermark": marks.get((topic, partition)),
                    "from": start,
                    "committed": until,
                },
            )
        return set(plan)

    def _prepare(self, records: Sequence[Record]) -> list[Item]:
        decoded = [
            decode(r, topic_kinds=self.config.topic_kinds, max_bytes=self.config.max_message_bytes)
            for r in records
        ]
        texts = [d.text for d in decoded if not isinstance(d, Rejected)]
        encoded = iter(self.model.encode(texts))
        for topic, n in Counter(r.topic for r in records).items():
            self.metrics.messages_in.labels(topic).inc(n)
        return [
            Item(r, d, None if isinstance(d, Rejected) else next(encoded))
            for r, d in zip(records, decoded, strict=True)
        ]

    def process(self, items: Sequence[Item]) -> None:
        """Classify, publish + flush, count, commit. Raises (nothing committed) if any step fails."""
        started = self.clock()
        scores, inference_s = self._classify(items, self.model)
        self._finish(items, scores, inference_s, started, self.model.model_ref)

    def _classify(self, items: Sequence[Item], model: Model) -> tuple[list[Scores | Exception | None], float]:
        """Scores (or the error of a text the model cannot take) per item, None for a rejected one; seconds.

        Runs on the classify thread when batches overlap, so it touches nothing but the model it is given.
        """
        started = self.clock()
        good = [i.ids for i in items if i.ids is not None]
        classified = iter(model.classify(good) if good else [])
        scores = [None if i.ids is None else next(classified) for i in items]
        return scores, self.clock() - started

    def _finish(
        self,
        items: Sequence[Item],
        scores: Sequence[Scores | Exception | None],
        inference_s: float,
        started: float,
        model: ModelRef,
    ) -> None:
        """Results and dead letters -> publish + flush -> count -> commit."""
        self.hook("after_classify")
        failed = {i.position: s for i, s in zip(items, scores, strict=True) if isinstance(s, Exception)}
        if failed:
            items = [_inference_failed(i, failed[i.position]) if i.position in failed else i for i in items]
        good_scores = (s for s in scores if isinstance(s, Scores))

        now_ms = self.wall_ms()
        out: list[OutRecord] = []
        tallies: list[Tally] = []
        for item in items:
            # Below a replaying partition's committed offset the outputs exist already: only count again.
            publish = (
                item.record.offset >= self.replay_until.get(item.position[:2], -1)
                and item.position not in self._published
            )
            if isinstance(item.decoded, Rejected):
                if publish:
                    keep = item.position not in self._too_large
                    out.append(dead_letter(item.record, item.decoded, self.config.dlq_topic, keep_value=keep))
                continue
            s = next(good_scores)
            if publish:
                result = result_fields(item.decoded, s, model, item.record, now_ms)
                out.append(result_record(result, self.config.output_topic))
            tallies.append(tally(item.decoded, s, item.record, now_ms))
            if self.config.log_text and log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "classified", extra={"id": item.decoded.id, "label": s.label, "text": item.decoded.text}
                )

        offsets = next_offsets(i.position for i in items)
        to_commit = commit_offsets(offsets, self.replay_until)
        # A batch wholly inside a replay window publishes nothing and commits nothing: no transaction.
        transaction = self.transactions if out else None
        if transaction is not None:
            transaction.begin()
            self._in_transaction = True
        if out:
            self.sink.publish(out)
            if transaction is None:  # an aborted transaction takes its records with it
                self._published.update(i.position for i in items)
        self.hook("after_publish")
        self.counts.apply(tallies, offsets)
        self.hook("after_redis")
        if transaction is not None:
            transaction.commit(to_commit)
            self._in_transaction = False
        elif to_commit and self.transactions is None:
            self.source.commit(to_commit)
        self.hook("after_commit")
        if self._published or self._too_large:
            done = {i.position for i in items}
            self._published -= done
            self._too_large -= done
        replaying = dict(self.replay_until)
        for tp, o in offsets.items():
            if o >= self.replay_until.get(tp, o + 1):
                del self.replay_until[tp]
                log.info("Redis replay done", extra={"topic": tp[0], "partition": tp[1], "offset": o})

        self.processed += len(items)
        if replaying:  # re-counted records were not published again: keep them out of the output metrics
            items = [i for i in items if i.record.offset >= replaying.get(i.position[:2], -1)]
            tallies = [t for t in tallies if t.offset >= replaying.get((t.topic, t.partition), -1)]
        self._observe(items, tallies, inference_s, self.clock() - started, now_ms)

    def _observe(
        self, items: Sequence[Item], tallies: Sequence[Tally], inference_s: float, batch_s: float, now_ms: int
    ) -> None:
        m = self.metrics
        m.batch_size.observe(len(items))
        m.inference_seconds.observe(inference_s)
        m.batch_seconds.observe(batch_s)
        rejected: Counter[str] = Counter()
        for item in items:
            d = item.decoded
            if isinstance(d, Rejected):
                rejected[d.reason] += 1
            elif item.record.timestamp_ms >= 0:
                m.end_to_end_seconds.observe(max(0.0, (now_ms - item.record.timestamp_ms) / 1000))
        for reason, n in rejected.items():
            m.dead_letters.labels(reason).inc(n)
        for (kind, label), n in Counter((t.kind, t.label) for t in tallies).items():
            m.results.labels(kind, label).inc(n)
        log.debug("batch committed", extra={"records": len(items), "inference_s": round(inference_s, 4)})

    # --------------------------------------------------------------------------------------------- run

    def run(self, *, until_idle_s: float | None = None, until_idle_max_s: float = 120.0) -> bool:
        """Process batches until stop is requested, or with until_idle_s until no record came for that long
        and the group is done (see the module's notes; GroupNotDone after until_idle_max_s without progress).

        Returns False if the last batch failed (it stays uncommitted), else True.
        """
        executor = ThreadPoolExecutor(1, thread_name_prefix="classify") if self.overlap else _Inline()
        try:
            return self._run(executor, until_idle_s, until_idle_max_s)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def _group_done(self, now: float, last_activity: float, max_s: float) -> bool:
        """Idle here: is the whole group done? Raises GroupNotDone once it made no progress for max_s."""
        if self.group is None:
            return True
        wait = self._idle_wait
        if wait is None or wait.activity != last_activity:
            wait = self._idle_wait = _IdleWait(activity=last_activity, since=now)
        if now - wait.checked >= GROUP_CHECK_S:
            wait.checked = now
            try:
                wait.lag, wait.failing = self.group.group_lag(), False
            except Exception as exc:  # Kafka unreachable: not known to be done, so keep waiting
                if not wait.failing:  # once per outage, not every second
                    log.warning(
                        "cannot read the group's offsets; still waiting", extra={"error": type(exc).__name__}
                    )
                wait.lag, wait.failing = None, True
            if wait.lag is not None:
                if not wait.lag:
                    return True
                total = sum(wait.lag.values())
                if wait.least is None or total < wait.least:
                    wait.least, wait.since = total, now
        if now - wait.since >= max_s:
            what = (
                "could not read the group's offsets"
                if wait.lag is None
                else f"the group still has {describe_lag(wait.lag)} held by other members"
            )
            raise GroupNotDone(
                f"--until-idle: idle here, but {what}, with no progress for {max_s:g}s (--until-idle-max); "
                "the work is not done"
            )
        if now - wait.logged >= GROUP_WAIT_LOG_S:
            wait.logged = now
            log.info(
                "idle here, but the group is not done; waiting for the partitions other members hold",
                extra={
                    "lag": None if wait.lag is None else sum(wait.lag.values()),
                    "partitions": None if wait.lag is None else sorted(f"{t}:{p}" for t, p in wait.lag),
                    "gives_up_in_s": round(max_s - (now - wait.since), 1),
                },
            )
        return False

    def _run(self, executor: Executor, until_idle_s: float | None, until_idle_max_s: float) -> bool:
        last_activity = last_report = last_lag = self.clock()
        failures = 0
        reported = 0
        while True:
            if failures == 0:
                self.metrics.beat()  # a batch failing over and over makes /healthz go stale
            if self.models is not None:
                self._swap(self.models.take())
            now = self.clock()
            flight = self._flight
            if flight is not None and (flight.future.done() or self._ready() or self.stop_requested):
                self._flight = None
                try:
                    items, scores, inference_s = self._landed(flight)
                    if self._ready():  # the next batch is classified while this one is published
                        self._submit(executor)
                    if items:
                        self._finish(items, scores, inference_s, flight.started, flight.model)
                    failures = 0
                except FatalError:
                    raise
                except Exception as exc:
                    failures += 1
                    # The batches read ahead go too (the one being classified is left to finish and its
                    # results unused): seeking back to the failed batch's first offsets reads them again.
                    ahead: list[Item] = self._flight.items if self._flight is not None else []
                    self._flight = None
                    self._recover([*flight.items, *ahead, *self._take()], exc, failures)
                    if self.stop_requested:
                        return isinstance(exc, PartitionsLost)
                last_activity = self.clock()
            elif self._ready():
                self._submit(executor)
            elif self.stop_requested:
                return True
            else:
                self._poll_once(self._poll_timeout_s())
                if self._building or not self.source.assigned():
                    last_activity = self.clock()  # receiving, or still joining the group: not idle
            if now - last_lag >= 5:
                self.metrics.set_lag(self.source.lag())
                last_lag = now
            if now - last_report >= 10 and self.processed != reported:
                log.info("progress", extra={"processed": self.processed})
                last_report, reported = now, self.processed
            idle = self._flight is None and not self._building
            if (
                until_idle_s is not None
                and idle
                and now - last_activity >= until_idle_s
                and self._group_done(now, last_activity, until_idle_max_s)
            ):
                log.info("idle, stopping", extra={"idle_s": until_idle_s, "processed": self.processed})
                return True

    def _submit(self, executor: Executor) -> None:
        items, started = self._take(), self.clock()  # before submit: without overlap, it classifies
        model = self.model
        self._flight = _Flight(items, executor.submit(self._classify, items, model), started, model.model_ref)

    def _swap(self, new: Model | None) -> None:
        """Serve `new` from the next batch on: the batch being built is tokenized again with its tokenizer."""
        if new is None:
            return
        old, self.model = self.model.model_ref, new
        if self._building:
            texts = [i.decoded.text for i in self._building if not isinstance(i.decoded, Rejected)]
            encoded = iter(new.encode(texts))
            self._building = [
                i if isinstance(i.decoded, Rejected) else Item(i.record, i.decoded, next(encoded))
                for i in self._building
            ]
            self._tokens = sum(len(i.ids or ()) for i in self._building)
        log.info(
            "model swapped",
            extra={"from": old.version, "version": new.model_ref.version, "model": new.model_ref.name},
        )

    def _landed(self, flight: _Flight) -> tuple[list[Item], list[Scores | Exception | None], float]:
        """Wait for the batch's classification; its items and scores on partitions that are still ours."""
        scores, inference_s = flight.future.result()
        if not flight.dropped:
            return flight.items, scores, inference_s
        kept = [
            (i, s) for i, s in zip(flight.items, scores, strict=True) if i.position[:2] not in flight.dropped
        ]
        return [i for i, _ in kept], [s for _, s in kept], inference_s

    def _recover(self, items: Sequence[Item], exc: Exception, failures: int) -> None:
        error = type(exc).__name__
        self.metrics.batch_failures.labels(error).inc()
        if isinstance(exc, DeadLettersTooLarge):
            self._too_large |= exc.origins
        low, high = self.config.backoff_s
        delay = min(high, low * 2 ** (failures - 1))
        log.error(
            "batch failed; nothing committed, retrying",
            extra={"error": error, "detail": str(exc)[:300], "records": len(items), "retry_in_s": delay},
        )
        if self._in_transaction and self.transactions is not None:
            self._in_transaction = False
            try:
                self.transactions.abort()
            except Exception as abort_exc:  # the producer is in a fatal state: only a restart helps
                raise FatalError(
                    f"cannot abort the Kafka transaction ({type(abort_exc).__name__}: {abort_exc}) "
                    f"after {error}: {exc}"
                ) from abort_exc
            self.metrics.transaction_aborts.inc()
        try:
            self.source.seek(first_offsets(i.position for i in items))
        except Exception as seek_exc:  # the partitions may be gone; the next owner starts at the commit
            log.warning("seek back failed", extra={"error": type(seek_exc).__name__})
        deadline = self.clock() + delay
        while not self.stop_requested and self.clock() < deadline:
            self.sleep(min(0.2, max(0.0, deadline - self.clock())))
