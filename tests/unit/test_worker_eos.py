"""Exactly once and the Redis-loss replay, with in-memory fakes: transaction order, aborts, replay windows."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from worker.batching import Limits
from worker.counts import Tally
from worker.keys import H_DLQ_OFFSET
from worker.loop import FatalError, Loop, LoopConfig, commit_offsets, replay_plan
from worker.messages import ModelRef, Record, Scores
from worker.metrics import Metrics
from worker.output import OutRecord

TP = ("reviews", 0)

# ----------------------------------------------------------------------------------------------- fakes


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


@dataclass
class FakeSource:
    """One consumer: a log per partition, committed offsets, and the Redis-loss check's queries."""

    clock: Clock
    events: list[str]
    logs: dict[tuple[str, int], list[Record]] = field(default_factory=dict)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    committed_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    begins: dict[tuple[str, int], int] = field(default_factory=dict)
    newly_assigned: set[tuple[str, int]] = field(default_factory=set)
    fail_committed: int = 0

    def add(self, topic: str, partition: int, values: Sequence[bytes | None]) -> None:
        log = self.logs.setdefault((topic, partition), [])
        for v in values:
            log.append(Record(topic, partition, len(log), f"k{len(log)}".encode(), v, [], 1_700_000_000_000))
        self.newly_assigned.add((topic, partition))

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        out: list[Record] = []
        for tp, log in self.logs.items():
            pos = self.positions.get(tp, self.committed_offsets.get(tp, self.begins.get(tp, 0)))
            take = log[pos : pos + max_records - len(out)]
            out.extend(take)
            self.positions[tp] = pos + len(take)
        if out:
            self.events.append("poll")
        else:
            self.clock.now += timeout_ms / 1000
        return out

    def take_revoked(self) -> set[tuple[str, int]]:
        return set()

    def assigned(self) -> bool:
        return True

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self.events.append("commit")
        self.committed_offsets.update(offsets)

    def seek(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self.events.append(f"seek {dict(offsets)}")
        self.positions.update(offsets)

    def lag(self) -> dict[tuple[str, int], int]:
        return {}

    def take_assigned(self) -> set[tuple[str, int]]:
        out, self.newly_assigned = self.newly_assigned, set()
        return out

    def committed(self, partitions: Collection[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if self.fail_committed:
            self.fail_committed -= 1
            raise RuntimeError("coordinator not available")
        return {tp: o for tp, o in self.committed_offsets.items() if tp in partitions}

    def beginning(self, partitions: Collection[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {tp: self.begins.get(tp, 0) for tp in partitions}


@dataclass
class FakeTxSink:
    """A transactional producer: records become visible to read_committed readers only on commit."""

    source: FakeSource
    events: list[str]
    fail: dict[str, int] = field(default_factory=dict)  # step -> failures left
    fatal: set[str] = field(default_factory=set)
    pending: list[OutRecord] = field(default_factory=list)
    visible: list[OutRecord] = field(default_factory=list)  # what a read_committed consumer sees

    def _step(self, name: str) -> None:
        if name in self.fatal:
            raise FatalError(f"ProducerFencedError in {name}")
        if self.fail.get(name):
            self.fail[name] -= 1
            raise RuntimeError(f"{name} failed")
        self.events.append(name)

    def begin(self) -> None:
        self._step("begin")

    def publish(self, records: Sequence[OutRecord]) -> None:
        self._step("publish")
        self.pending.extend(records)

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self._step(f"txn_commit {dict(offsets)}")
        self.visible.extend(self.pending)
        self.pending.clear()
        self.source.committed_offsets.update(offsets)

    def abort(self) -> None:
        self._step("abort")
        self.pending.clear()


@dataclass
class FakeCounts:
    """Counts with a watermark per partition, like counts.lua: tallies below it are skipped."""

    events: list[str]
    fail: int = 0
    marks: dict[tuple[str, int], int] = field(default_factory=dict)
    counted: list[tuple[str, int, int]] = field(default_factory=list)

    def apply(self, tallies: Sequence[Tally], next_offsets: Mapping[tuple[str, int], int]) -> int:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("Redis is down")
        self.events.append("apply")
        fresh = [t for t in tallies if t.offset >= self.marks.get((t.topic, t.partition), 0)]
        self.counted.extend((t.topic, t.partition, t.offset) for t in fresh)
        for tp, o in next_offsets.items():
            self.marks[tp] = max(o, self.marks.get(tp, 0))
        return len(fresh)

    def watermarks(self) -> dict[tuple[str, int], int]:
        return dict(self.marks)


@dataclass
class FakeModel:
    events: list[str]
    model_ref: ModelRef = field(default_factory=lambda: ModelRef(name="fake", version="0", precision="fp32"))

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [[101, len(t), 102] for t in texts]

    def classify(self, encoded: Sequence[Sequence[int]]) -> list[Scores]:
        self.events.append("classify")
        return [Scores(negative=0.1, neutral=0.1, positive=0.8) for _ in encoded]


@dataclass
class Harness:
    clock: Clock
    events: list[str]
    source: FakeSource
    sink: FakeTxSink
    counts: FakeCounts
    metrics: Metrics
    loop: Loop


def make(*, exactly_once: bool = True, max_records: int = 4) -> Harness:
    clock, events = Clock(), list[str]()
    source = FakeSource(clock, events)
    sink, counts = FakeTxSink(source, events), FakeCounts(events)
    metrics = Metrics()
    config = LoopConfig(
        limits=Limits(max_records, 10_000, 0.05),
        output_topic="out",
        dlq_topic="dlq",
        topic_kinds={"reviews": "review"},
        max_message_bytes=1024,
    )
    loop = Loop(
        source,
        sink,
        counts,
        FakeModel(events),
        config,
        metrics=metrics,
        transactions=sink if exactly_once else None,
        offsets=source,
        watermarks=counts.watermarks,
        clock=clock,
        sleep=clock.sleep,
    )
    return Harness(clock, events, source, sink, counts, metrics, loop)


def review(i: int) -> bytes:
    return json.dumps({"id": f"r{i}", "text": "good stuff", "source": "shop"}).encode()


def published(h: Harness) -> list[int]:
    """Input offsets of the results and dead letters a read_committed consumer (or any, for ALOS) sees."""
    out = []
    for r in h.sink.visible if h.loop.transactions else h.sink.pending:
        out.append(
            json.loads(r.value or b"")["input"]["offset"]
            if r.topic == "out"
            else int(dict(r.headers)[H_DLQ_OFFSET])
        )
    return sorted(out)


def replays(h: Harness, tp: tuple[str, int] = TP) -> float:
    value = h.metrics.registry.get_sample_value(
        "sentiment_redis_replays_total", {"topic": tp[0], "partition": str(tp[1])}
    )
    return value or 0.0


# ------------------------------------------------------------------------------------------ pure logic


def test_replay_plan_only_for_watermarks_behind_the_commit() -> None:
    committed = {("a", 0): 10, ("a", 1): 10, ("a", 2): 10, ("a", 3): 10, ("a", 4): 10}
    marks = {("a", 0): 10, ("a", 1): 12, ("a", 2): 4, ("a", 3): 1}
    begins = {("a", 2): 0, ("a", 3): 3, ("a", 4): 2}
    assert replay_plan(committed, marks, begins) == {
        ("a", 2): (4, 10),  # behind: from the watermark
        ("a", 3): (3, 10),  # older than what Kafka still has: from the earliest offset
        ("a", 4): (2, 10),  # no watermark (Redis flushed): from the earliest offset
    }
    assert replay_plan({("a", 0): 10}, {}, {("a", 0): 10}) == {}  # nothing left in Kafka to replay


def test_commit_offsets_never_move_a_replaying_partition_back() -> None:
    assert commit_offsets({("a", 0): 5, ("a", 1): 9}, {("a", 0): 8}) == {("a", 1): 9}
    assert commit_offsets({("a", 0): 9}, {("a", 0): 8}) == {("a", 0): 9}
    assert commit_offsets({("a", 0): 8}, {("a", 0): 8}) == {}


# --------------------------------------------------------------------------------------- exactly once


def test_each_batch_is_one_transaction_with_redis_before_the_commit() -> None:
    h = make()
    h.source.add(*TP, [review(i) for i in range(3)])
    assert h.loop.run(until_idle_s=1)
    assert h.events == ["poll", "classify", "begin", "publish", "apply", "txn_commit {('reviews', 0): 3}"]
    assert "commit" not in h.events  # offsets go through the transaction, never the consumer
    assert published(h) == [0, 1, 2] and h.source.committed_offsets == {TP: 3}


@pytest.mark.parametrize("step", ["begin", "publish", "redis", "txn_commit {('reviews', 0): 2}"])
def test_a_failed_step_aborts_seeks_back_and_the_retry_is_exact(step: str) -> None:
    h = make()
    h.source.add(*TP, [review(0), b"{not json"])
    if step == "redis":
        h.counts.fail = 1
    else:
        h.sink.fail[step] = 1
    assert h.loop.run(until_idle_s=5)
    first_try = h.events[: h.events.index("seek {('reviews', 0): 0}") + 1]
    assert ("abort" in first_try) == (step != "begin")  # nothing to abort when begin itself failed
    if step != "txn_commit {('reviews', 0): 2}":
        assert not any(e.startswith("txn_commit") for e in first_try)
    assert published(h) == [0, 1]  # the result and the dead letter, once each
    assert h.counts.counted == [("reviews", 0, 0)]  # counted once, even when Redis was written twice
    assert h.source.committed_offsets == {TP: 2}
    assert h.metrics.registry.get_sample_value("sentiment_transaction_aborts_total") == float(step != "begin")


def test_redis_failure_means_no_transaction_commit() -> None:
    h = make()
    h.source.add(*TP, [review(0)])
    h.counts.fail = 1
    items = h.loop.collect()
    with pytest.raises(ConnectionError):
        h.loop.process(items)
    assert h.events == ["poll", "classify", "begin", "publish"]
    assert h.sink.visible == [] and h.source.committed_offsets == {}


def test_a_fenced_producer_stops_the_loop() -> None:
    h = make()
    h.source.add(*TP, [review(0)])
    h.sink.fatal.add("publish")
    with pytest.raises(FatalError, match="ProducerFencedError"):
        h.loop.run(until_idle_s=5)
    assert h.source.committed_offsets == {}


def test_an_abort_that_fails_is_fatal() -> None:
    h = make()
    h.source.add(*TP, [review(0)])
    h.counts.fail = 1
    h.sink.fail["abort"] = 1
    with pytest.raises(FatalError, match="cannot abort"):
        h.loop.run(until_idle_s=5)
    assert h.sink.visible == []


# ------------------------------------------------------------------------------------- Redis-loss replay


@pytest.mark.parametrize("exactly_once", [True, False])
def test_redis_behind_the_commit_is_recounted_without_publishing_again(exactly_once: bool) -> None:
    h = make(exactly_once=exactly_once)
    h.source.add(*TP, [review(i) for i in range(10)])
    h.source.committed_offsets[TP] = 6  # offsets 0-5 were published and committed before ...
    h.counts.marks[TP] = 2  # ... but Redis came back from a snapshot that has only 0-1
    h.counts.counted = [("reviews", 0, 0), ("reviews", 0, 1)]
    assert h.loop.run(until_idle_s=1)
    assert "seek {('reviews', 0): 2}" in h.events
    assert published(h) == [6, 7, 8, 9]  # nothing below the committed offset again
    assert h.counts.counted == [("reviews", 0, i) for i in range(10)]  # every record counted once
    assert h.source.committed_offsets == {TP: 10} and h.counts.marks == {TP: 10}
    assert replays(h) == 1 and h.loop.replay_until == {}
    results = h.metrics.registry.get_sample_value(
        "sentiment_results_total", {"kind": "review", "label": "positive"}
    )
    assert results == 4  # only what was published
    # The first batch (2-5) lies wholly in the replay window: Redis only, no transaction, no commit.
    first = h.events[h.events.index("seek {('reviews', 0): 2}") + 1 :][:4]
    assert first == ["poll", "classify", "apply", "poll"]


def test_flushed_redis_replays_from_the_earliest_offset() -> None:
    h = make()
    h.source.add(*TP, [review(i) for i in range(6)])
    h.source.committed_offsets[TP] = 6
    h.source.begins[TP] = 1  # offset 0 was deleted by retention
    assert h.loop.run(until_idle_s=1)
    assert h.counts.counted == [("reviews", 0, i) for i in range(1, 6)]
    assert published(h) == [] and "begin" not in h.events
    assert h.counts.marks == {TP: 6} and h.source.committed_offsets == {TP: 6} and replays(h) == 1


def test_redis_ahead_of_the_commit_needs_no_replay() -> None:
    h = make()
    h.source.add(*TP, [review(i) for i in range(4)])
    h.source.committed_offsets[TP] = 2
    h.counts.marks[TP] = 3  # a crash between the Redis update and the commit
    assert h.loop.run(until_idle_s=1)
    assert published(h) == [2, 3] and h.counts.counted == [("reviews", 0, 3)] and replays(h) == 0


def test_a_failed_check_drops_the_records_and_is_retried() -> None:
    h = make()
    h.source.add(*TP, [review(i) for i in range(4)])
    h.source.committed_offsets[TP] = 4
    h.source.fail_committed = 1
    h.source.add(*TP, [review(4)])
    assert h.loop.run(until_idle_s=1)
    assert "seek {('reviews', 0): 4}" in h.events  # the records read before the check are read again
    assert h.counts.counted == [("reviews", 0, i) for i in range(5)]
    assert published(h) == [4] and replays(h) == 1


def test_transactional_id_defaults_to_group_and_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.config import Settings

    monkeypatch.delenv("SENTIMENT_TRANSACTIONAL_ID", raising=False)
    monkeypatch.setattr("socket.gethostname", lambda: "pod-7")
    assert Settings(group_id="g").effective_transactional_id() == "g-pod-7"
    assert Settings(group_id="g", transactional_id="w1").effective_transactional_id() == "w1"
