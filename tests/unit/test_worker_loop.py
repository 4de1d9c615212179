"""The loop with in-memory fakes: order of effects, no commit on failure, batching, revokes, stop."""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from worker.batching import Limits
from worker.counts import Tally
from worker.keys import H_DLQ_DETAIL, H_DLQ_REASON
from worker.loop import (
    DRAIN_POLL_S,
    GroupNotDone,
    Item,
    Loop,
    LoopConfig,
    PartitionsLost,
    describe_lag,
    fault_hook,
    group_lag,
    overlap_pays,
)
from worker.messages import ModelRef, Record, Rejected, Scores
from worker.output import DeadLettersTooLarge, OutRecord

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
    clock: Clock
    events: list[str]
    logs: dict[tuple[str, int], list[Record]] = field(default_factory=dict)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    polls: list[int] = field(default_factory=list)  # max_records asked each poll
    revoke_at_poll: dict[int, set[tuple[str, int]]] = field(default_factory=dict)
    # kafka-python keeps the position of a partition revoked and assigned straight back to the same consumer.
    revoke_keeps_position: bool = False
    fail_commits: int = 0

    def add(
        self, topic: str, partition: int, values: Sequence[bytes | None], ts: int = 1_700_000_000_000
    ) -> None:
        log = self.logs.setdefault((topic, partition), [])
        for v in values:
            log.append(Record(topic, partition, len(log), f"k{len(log)}".encode(), v, [], ts))

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        self.polls.append(max_records)
        out: list[Record] = []
        for tp, log in self.logs.items():
            pos = self.positions.get(tp, self.committed.get(tp, 0))
            take = log[pos : pos + max_records - len(out)]
            out.extend(take)
            self.positions[tp] = pos + len(take)
        if out:
            self.events.append("poll")
        else:
            self.clock.now += timeout_ms / 1000
        return out

    def take_revoked(self) -> set[tuple[str, int]]:
        revoked = self.revoke_at_poll.pop(len(self.polls), set())
        for tp in revoked:  # a revoked partition restarts from its committed offset
            if not self.revoke_keeps_position:
                self.positions.pop(tp, None)
        return revoked

    def assigned(self) -> bool:
        return True

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            raise RuntimeError("CommitFailedError: rebalance in progress")
        self.events.append("commit")
        self.committed.update(offsets)

    def seek(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self.events.append("seek")
        self.positions.update(offsets)

    def lag(self) -> dict[tuple[str, int], int]:
        return {tp: len(log) - self.positions.get(tp, 0) for tp, log in self.logs.items()}


@dataclass
class FakeSink:
    events: list[str]
    fail: int = 0
    published: list[OutRecord] = field(default_factory=list)

    def publish(self, records: Sequence[OutRecord]) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("KafkaTimeoutError: broker down")
        self.events.append("publish")
        self.published.extend(records)

    def on(self, topic: str) -> list[OutRecord]:
        return [r for r in self.published if r.topic == topic]


@dataclass
class FakeCounts:
    events: list[str]
    fail: int = 0
    calls: list[tuple[list[Tally], dict[tuple[str, int], int]]] = field(default_factory=list)

    def apply(self, tallies: Sequence[Tally], next_offsets: Mapping[tuple[str, int], int]) -> int:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("Redis is down")
        self.events.append("apply")
        self.calls.append((list(tallies), dict(next_offsets)))
        return len(tallies)


def word_id(word: str) -> int:
    # Not hash(): it changes with each process (PYTHONHASHSEED), and a collision with "good" or "bad" made
    # a test fail about once in a few hundred runs.
    return 1000 + zlib.crc32(word.encode()) % 100_000


@dataclass
class FakeModel:
    """Label by keyword, one token per word (+2 special tokens)."""

    events: list[str]
    model_ref: ModelRef = field(default_factory=lambda: ModelRef(name="fake", version="0", precision="fp32"))
    batches: list[int] = field(default_factory=list)
    first: int = 101  # the token this model's tokenizer starts each text with
    firsts: set[int] = field(default_factory=set)  # first tokens of the rows it was asked to classify

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [[self.first, *(word_id(w) for w in t.split()), 102] for t in texts]

    def classify(self, encoded: Sequence[Sequence[int]]) -> list[Scores]:
        self.events.append("classify")
        self.batches.append(len(encoded))
        self.firsts.update(ids[0] for ids in encoded)
        good, bad = word_id("good"), word_id("bad")
        return [
            Scores(negative=0.8, neutral=0.1, positive=0.1)
            if bad in ids
            else Scores(negative=0.1, neutral=0.1, positive=0.8)
            if good in ids
            else Scores(negative=0.1, neutral=0.8, positive=0.1)
            for ids in encoded
        ]


@dataclass
class Harness:
    clock: Clock
    events: list[str]
    source: FakeSource
    sink: FakeSink
    counts: FakeCounts
    model: FakeModel
    loop: Loop


def make_loop(
    *,
    max_records: int = 8,
    max_tokens: int = 10_000,
    max_wait_s: float = 0.05,
    hook: Callable[[str], None] | None = None,
    overlap: bool = False,  # True in the overlap tests below: the order of effects is then less fixed
    model: FakeModel | None = None,
) -> Harness:
    clock, events = Clock(), list[str]()
    source, sink, counts = FakeSource(clock, events), FakeSink(events), FakeCounts(events)
    if model is None:
        model = FakeModel(events)
    model.events = events
    config = LoopConfig(
        limits=Limits(max_records, max_tokens, max_wait_s),
        output_topic="out",
        dlq_topic="dlq",
        topic_kinds={"reviews": "review", "social-posts": "social_post"},
        max_message_bytes=1024,
    )
    loop = Loop(
        source,
        sink,
        counts,
        model,
        config,
        clock=clock,
        sleep=clock.sleep,
        overlap=overlap,
    )
    if hook:
        loop.hook = hook
    return Harness(clock, events, source, sink, counts, model, loop)


def review(i: int, text: str = "good stuff") -> bytes:
    return json.dumps({"id": f"r{i}", "text": text, "source": "shop"}).encode()


def post(i: int, text: str = "so bad", conversation: str | None = "c1") -> bytes:
    return json.dumps(
        {"id": f"p{i}", "text": text, "platform": "x", "conversation_id": conversation}
    ).encode()


def run_one(h: Harness) -> None:
    items = h.loop.collect()
    assert items
    h.loop.process(items)


# ----------------------------------------------------------------------------------------------- tests


def test_effects_happen_in_order_and_offsets_are_committed_plus_one() -> None:
    points: list[str] = []
    h = make_loop(hook=points.append)
    h.source.add("reviews", 0, [review(0), review(1, "bad thing")])
    h.source.add("social-posts", 1, [post(0)])
    run_one(h)
    assert h.events == ["poll", "classify", "publish", "apply", "commit"]
    assert points == ["after_poll", "after_classify", "after_publish", "after_redis", "after_commit"]
    assert h.source.committed == {("reviews", 0): 2, ("social-posts", 1): 1}
    assert h.counts.calls[0][1] == {("reviews", 0): 2, ("social-posts", 1): 1}


def test_results_and_tallies_match_each_message_in_order() -> None:
    h = make_loop()
    h.source.add("reviews", 0, [review(0, "good"), b"{broken", review(2, "bad"), review(3, "plain words")])
    run_one(h)
    results = [json.loads(r.value or b"") for r in h.sink.on("out")]
    assert [(r["id"], r["label"], r["input"]["offset"]) for r in results] == [
        ("r0", "positive", 0),
        ("r2", "negative", 2),
        ("r3", "neutral", 3),
    ]
    tallies = h.counts.calls[0][0]
    assert [(t.offset, t.label, t.kind, t.source) for t in tallies] == [
        (0, "positive", "review", "shop"),
        (2, "negative", "review", "shop"),
        (3, "neutral", "review", "shop"),
    ]
    [dead] = h.sink.on("dlq")
    assert dead.value == b"{broken" and dict(dead.headers)[H_DLQ_REASON] == b"invalid_json"


@pytest.mark.parametrize("failing", ["sink", "counts"])
def test_a_failing_side_effect_leaves_the_commit_untouched_then_the_batch_is_retried(failing: str) -> None:
    h = make_loop()
    h.source.add("reviews", 0, [review(0), review(1)])
    if failing == "sink":
        h.sink.fail = 1
    else:
        h.counts.fail = 1
    h.loop.run(until_idle_s=2)
    # First attempt: no commit, seek back; second attempt commits.
    first_commit = h.events.index("commit")
    assert "seek" in h.events[:first_commit]
    assert h.events.count("commit") == 1
    assert h.source.committed == {("reviews", 0): 2}
    assert (
        h.loop.metrics.batch_failures.labels(
            "RuntimeError" if failing == "sink" else "ConnectionError"
        )._value.get()
        == 1
    )


def test_failing_publish_means_no_redis_write_and_no_commit() -> None:
    h = make_loop()
    h.source.add("reviews", 0, [review(0)])
    h.sink.fail = 1
    items = h.loop.collect()
    with pytest.raises(RuntimeError):
        h.loop.process(items)
    assert h.counts.calls == [] and h.source.committed == {}


def test_failing_redis_means_no_commit() -> None:
    h = make_loop()
    h.source.add("reviews", 0, [review(0)])
    h.counts.fail = 1
    items = h.loop.collect()
    with pytest.raises(ConnectionError):
        h.loop.process(items)
    assert len(h.sink.published) == 1 and h.source.committed == {}


def test_failing_commit_is_retried_without_losing_records() -> None:
    h = make_loop()
    h.source.add("reviews", 0, [review(0), review(1)])
    h.source.fail_commits = 1
    assert h.loop.run(until_idle_s=2)
    assert h.source.committed == {("reviews", 0): 2}
    # The results were acknowledged before the commit failed: the retry does not publish them again; the
    # Redis update is sent twice (its watermark dedupes).
    assert len(h.sink.on("out")) == 2 and len(h.counts.calls) == 2


def test_redis_failing_after_publish_retries_redis_and_commit_without_republishing() -> None:
    h = make_loop()
    h.source.add("reviews", 0, [review(0), review(1), b"{broken"])
    h.counts.fail = 3
    assert h.loop.run(until_idle_s=2)
    assert h.source.committed == {("reviews", 0): 3}
    assert len(h.sink.on("out")) == 2 and len(h.sink.on("dlq")) == 1
    assert h.events.count("publish") == 1 and h.events.count("apply") == 1


def test_published_but_uncommitted_records_of_a_revoked_partition_are_published_by_whoever_reads_them() -> (
    None
):
    h = make_loop(max_wait_s=10)
    h.source.add("reviews", 0, [review(0)])
    h.counts.fail = 1
    items = h.loop.collect()
    with pytest.raises(ConnectionError):
        h.loop.process(items)
    assert h.loop._published == {("reviews", 0, 0)}
    h.source.revoke_at_poll[len(h.source.polls) + 1] = {("reviews", 0)}
    h.source.add("reviews", 1, [review(5)])
    h.loop.collect()
    assert h.loop._published == set()


def test_a_dead_letter_too_large_for_the_dlq_topic_is_resent_without_its_value() -> None:
    h = make_loop()
    big = b"x" * 2000  # above max_message_bytes (1024), and too large for this DLQ topic
    h.source.add("reviews", 0, [review(0), big])
    publish = h.sink.publish

    def dlq_limit_1000(records: Sequence[OutRecord]) -> None:
        refused = {r.origin for r in records if r.topic == "dlq" and len(r.value or b"") > 1000}
        if refused:
            raise DeadLettersTooLarge({o for o in refused if o is not None})
        publish(records)

    h.sink.publish = dlq_limit_1000  # type: ignore[method-assign]
    assert h.loop.run(until_idle_s=2)
    (dead,) = h.sink.on("dlq")
    headers = dict(dead.headers)
    assert dead.value == b"" and dead.key == b"k1" and headers[H_DLQ_REASON] == b"oversize"
    assert b"dropped: too large for the DLQ topic" in headers[H_DLQ_DETAIL]
    assert h.source.committed == {("reviews", 0): 2} and h.loop._too_large == set()


def test_empty_polls_do_nothing_and_idle_ends_the_run() -> None:
    h = make_loop()
    assert h.loop.run(until_idle_s=1.0)
    assert h.events == []
    assert h.clock.now >= 1001.0


def test_dead_letter_only_batch_is_published_counted_and_committed() -> None:
    h = make_loop()
    h.source.add("reviews", 3, [None, b"\xff", b"[]"])
    run_one(h)
    assert h.events == ["poll", "publish", "apply", "commit"]  # no classification needed
    assert len(h.sink.on("dlq")) == 3 and h.sink.on("out") == []
    assert h.counts.calls == [([], {("reviews", 3): 3})]
    assert h.source.committed == {("reviews", 3): 3}


def test_batch_closes_at_max_records_and_polls_no_more_than_that() -> None:
    h = make_loop(max_records=4)
    h.source.add("reviews", 0, [review(i) for i in range(10)])
    h.loop.run(until_idle_s=1)
    assert h.model.batches == [4, 4, 2]
    assert max(h.source.polls) == 4
    assert h.source.committed == {("reviews", 0): 10}


def test_batch_closes_on_token_budget_without_waiting() -> None:
    h = make_loop(max_records=100, max_tokens=10, max_wait_s=5.0)
    h.source.add("reviews", 0, [review(0, "good " * 9)])  # 11 tokens with the special tokens
    start = h.clock.now
    items = h.loop.collect()
    assert len(items) == 1
    assert h.source.polls == [100] and h.clock.now == start  # closed at once: no second poll, no wait


def test_batch_waits_for_more_records_until_max_wait() -> None:
    h = make_loop(max_records=10, max_wait_s=0.05)
    h.source.add("reviews", 0, [review(0)])
    start = h.clock.now
    items = h.loop.collect()
    assert len(items) == 1
    assert h.clock.now - start == pytest.approx(0.05)  # polled again for the rest of the wait, got nothing
    assert len(h.source.polls) >= 2 and h.source.polls[1] == 9


def busy_spell(
    h: Harness, seconds: float, arriving: int, on_arrival: Callable[[], None] = lambda: None
) -> float:
    """Process review 0 with a model that takes `seconds`, while reviews 1..arriving come; returns the time
    the spell ended (so a test can measure what the next batch waited)."""
    classify = h.model.classify

    def slow_classify(encoded: Sequence[Sequence[int]]) -> list[Scores]:
        h.clock.now += seconds
        h.source.add("reviews", 0, [review(i) for i in range(1, arriving + 1)])
        on_arrival()
        return classify(encoded)

    h.model.classify = slow_classify  # type: ignore[method-assign]
    h.source.add("reviews", 0, [review(0)])
    run_one(h)
    h.model.classify = classify  # type: ignore[method-assign]
    return h.clock.now


def test_records_that_came_while_the_loop_was_busy_wait_only_what_is_left_of_max_wait() -> None:
    h = make_loop(max_records=10, max_wait_s=0.05)
    start = busy_spell(h, 0.04, 1)  # the model takes 40 ms; the next record comes meanwhile
    items = h.loop.collect()
    assert [i.record.offset for i in items] == [1]
    # r1 has waited since the last poll before the busy spell (40 ms ago at least): 10 ms more at most.
    assert h.clock.now - start <= 0.0100001


def test_a_batch_overdue_after_a_busy_spell_takes_what_the_broker_still_holds_before_it_closes() -> None:
    # kafka-python has one fetch in flight: answered when the first record of a busy spell came, it holds
    # that record only; the others come with the next fetch, which the first poll after the spell sends.
    h = make_loop(max_records=10, max_wait_s=0.05)
    poll, in_flight = h.source.poll, list[int]()

    def one_fetch_poll(timeout_ms: int, max_records: int) -> list[Record]:
        return poll(timeout_ms, in_flight.pop() if in_flight else max_records)

    h.source.poll = one_fetch_poll  # type: ignore[method-assign]
    # Longer than max wait: the next batch is overdue when its records are polled.
    start = busy_spell(h, 0.1, 5, on_arrival=lambda: in_flight.append(1))
    items = h.loop.collect()
    assert [i.record.offset for i in items] == [1, 2, 3, 4, 5]  # one batch, not [1] then [2..5]
    assert h.clock.now - start < 0.001  # the second poll found records: it did not wait


def test_a_drain_poll_that_finds_nothing_closes_the_batch_after_a_short_wait() -> None:
    h = make_loop(max_records=10, max_wait_s=0.05)
    start = busy_spell(h, 0.1, 1)
    items = h.loop.collect()
    assert [i.record.offset for i in items] == [1]
    assert h.clock.now - start == pytest.approx(DRAIN_POLL_S)  # one short poll, not the rest of a wait


def test_revoked_partitions_are_dropped_from_the_batch_being_built() -> None:
    h = make_loop(max_records=10)
    h.source.add("reviews", 0, [review(0), review(1)])
    h.source.add("reviews", 1, [review(10)])
    # The revoke happens during the second poll of the batch (poll #2).
    h.source.revoke_at_poll[2] = {("reviews", 0)}
    items = h.loop.collect()
    assert all(i.record.partition == 1 for i in items)
    h.loop.process(items)
    assert h.source.committed == {("reviews", 1): 1}
    assert [json.loads(r.value or b"")["id"] for r in h.sink.on("out")] == ["r10"]


def test_partition_revoked_and_assigned_back_is_read_again_not_lost() -> None:
    # Eager rebalancing revokes every partition; one that comes straight back keeps its read position in
    # kafka-python, so the records dropped from the batch being built must be re-read (fault suite F8).
    h = make_loop(max_records=10)
    h.source.revoke_keeps_position = True
    h.source.add("reviews", 0, [review(0), review(1)])
    h.source.add("reviews", 1, [review(10)])
    h.source.revoke_at_poll[len(h.source.polls) + 1] = {("reviews", 0)}
    items = h.loop.collect()
    h.loop.process(items)
    h.loop.process(h.loop.collect())
    assert h.source.committed == {("reviews", 0): 2, ("reviews", 1): 1}
    published = sorted(json.loads(r.value or b"")["id"] for r in h.sink.on("out"))
    assert published == ["r0", "r1", "r10"]


def test_stop_finishes_the_current_batch_and_commits() -> None:
    h = make_loop(max_records=2)
    h.source.add("reviews", 0, [review(i) for i in range(6)])
    h.loop.stop_requested = True  # as the SIGTERM handler does
    items = h.loop.collect()
    h.loop.process(items)
    assert h.source.committed == {("reviews", 0): 2}
    assert h.loop.run() is True  # returns at once, nothing more processed
    assert h.source.committed == {("reviews", 0): 2}


def test_stop_during_a_failing_batch_reports_failure() -> None:
    h = make_loop()
    h.source.add("reviews", 0, [review(0)])
    h.sink.fail = 100

    def stop_while_failing(_: float) -> None:
        h.loop.request_stop()

    h.loop.sleep = stop_while_failing
    assert h.loop.run() is False
    assert h.source.committed == {}


def test_stop_while_the_group_refuses_the_commit_is_clean_since_the_batch_is_no_longer_ours() -> None:
    h = make_loop()
    h.source.add("reviews", 0, [review(0)])

    def refused(offsets: Mapping[tuple[str, int], int]) -> None:
        h.loop.request_stop()  # SIGTERM arrives while the batch is in flight
        raise PartitionsLost("CommitFailedError: the group has rebalanced")

    h.source.commit = refused  # type: ignore[method-assign]
    assert h.loop.run() is True
    assert h.source.committed == {}


def test_conversation_ids_reach_the_tallies() -> None:
    h = make_loop()
    h.source.add("social-posts", 0, [post(0), post(1, conversation=None)])
    run_one(h)
    assert [t.conversation_id for t in h.counts.calls[0][0]] == ["c1", None]


def test_items_expose_their_position() -> None:
    rec = Record("t", 1, 5, None, b"")
    assert Item(rec, Rejected("x", "y"), None).position == ("t", 1, 5)


def test_fault_hook_rejects_unknown_points() -> None:
    with pytest.raises(ValueError):
        fault_hook("after_lunch", 1)


def test_a_message_the_model_cannot_classify_alone_is_dead_lettered_and_the_rest_committed() -> None:
    h = make_loop()
    classify = h.model.classify

    def out_of_memory_on_long(encoded: Sequence[Sequence[int]]) -> list[Scores | Exception]:
        scores = classify(encoded)
        return [
            MemoryError("out of memory") if len(e) > 6 else s for e, s in zip(encoded, scores, strict=True)
        ]

    h.model.classify = out_of_memory_on_long  # type: ignore[method-assign,assignment]
    h.source.add("reviews", 0, [review(0), review(1, "good " * 10), review(2)])
    run_one(h)
    assert [json.loads(r.value or b"")["id"] for r in h.sink.on("out")] == ["r0", "r2"]
    (dead,) = h.sink.on("dlq")
    headers = dict(dead.headers)
    assert headers[H_DLQ_REASON] == b"inference_failed"
    assert b"out of memory" in headers[H_DLQ_DETAIL] and dead.value == review(1, "good " * 10)
    assert [t.offset for t in h.counts.calls[0][0]] == [0, 2]
    assert h.source.committed == {("reviews", 0): 3}


# ------------------------------------------------------------------------------------ overlapping batches


@dataclass
class GatedModel(FakeModel):
    """Holds its first classification until the gate opens, so the loop is seen reading ahead meanwhile."""

    gate: threading.Event = field(default_factory=threading.Event)
    second: threading.Event = field(default_factory=threading.Event)  # the second classification began
    calls: int = 0

    def classify(self, encoded: Sequence[Sequence[int]]) -> list[Scores]:
        self.calls += 1
        if self.calls == 2:
            self.second.set()
        if self.calls == 1:
            assert self.gate.wait(10), "the test never opened the gate"
        return super().classify(encoded)


def overlapping(max_records: int = 4) -> tuple[Harness, GatedModel]:
    model = GatedModel([])
    h = make_loop(max_records=max_records, max_wait_s=0.05, model=model, overlap=True)
    return h, model


def open_gate_after_poll(h: Harness, model: GatedModel, n: int) -> None:
    """Open the model's gate once the source has been polled n times (the read-ahead happened)."""
    poll = h.source.poll

    def gated_poll(timeout_ms: int, max_records: int) -> list[Record]:
        out = poll(timeout_ms, max_records)
        if len(h.source.polls) >= n:
            model.gate.set()
        return out

    h.source.poll = gated_poll  # type: ignore[method-assign]


def ids(records: Sequence[OutRecord]) -> list[str]:
    return [json.loads(r.value or b"")["id"] for r in records]


def test_the_next_batch_is_read_while_one_is_classified_and_each_is_committed_after_its_effects() -> None:
    h, model = overlapping()
    h.source.add("reviews", 0, [review(i) for i in range(8)])
    open_gate_after_poll(h, model, 2)
    assert h.loop.run(until_idle_s=1)
    # The second batch was polled before the first was published; the first commit covers only the first.
    effects = [e for e in h.events if e != "classify"]  # logged on the classify thread, in any order
    assert effects == ["poll", "poll", "publish", "apply", "commit", "publish", "apply", "commit"]
    assert [offsets for _, offsets in h.counts.calls] == [{("reviews", 0): 4}, {("reviews", 0): 8}]
    assert model.batches == [4, 4]
    assert ids(h.sink.on("out")) == [f"r{i}" for i in range(8)]
    assert h.source.committed == {("reviews", 0): 8}


def test_the_next_batch_is_classified_while_one_is_published() -> None:
    h, model = overlapping()
    h.source.add("reviews", 0, [review(i) for i in range(8)])
    open_gate_after_poll(h, model, 2)
    publish = h.sink.publish
    second_began_first: list[bool] = []

    def publish_after_the_second_classification_began(records: Sequence[OutRecord]) -> None:
        if not second_began_first:
            second_began_first.append(model.second.wait(5))
        publish(records)

    h.sink.publish = publish_after_the_second_classification_began  # type: ignore[method-assign]
    assert h.loop.run(until_idle_s=1)
    assert second_began_first == [True]
    assert ids(h.sink.on("out")) == [f"r{i}" for i in range(8)]
    assert [offsets for _, offsets in h.counts.calls] == [{("reviews", 0): 4}, {("reviews", 0): 8}]


def test_a_failed_batch_drops_the_batch_read_ahead_and_both_are_read_again() -> None:
    h, model = overlapping()
    h.source.add("reviews", 0, [review(i) for i in range(8)])
    h.sink.fail = 1
    open_gate_after_poll(h, model, 2)
    assert h.loop.run(until_idle_s=2)
    assert "seek" in h.events[: h.events.index("commit")]
    assert sorted(ids(h.sink.on("out")), key=lambda i: int(i[1:])) == [f"r{i}" for i in range(8)]
    assert h.source.committed == {("reviews", 0): 8}


@pytest.mark.parametrize("keeps_position", [False, True])
def test_a_partition_revoked_while_its_batch_is_classified_is_not_committed_by_it(
    keeps_position: bool,
) -> None:
    h, model = overlapping(max_records=3)  # the first poll fills a batch, the second reads ahead
    h.source.revoke_keeps_position = keeps_position
    h.source.add("reviews", 0, [review(0), review(1)])
    h.source.add("reviews", 1, [review(10)])
    h.source.revoke_at_poll[2] = {("reviews", 0)}  # during the read-ahead
    open_gate_after_poll(h, model, 2)
    assert h.loop.run(until_idle_s=1)
    # The batch in flight published and committed only partition 1; partition 0 was read again (from the
    # committed offset, or by the seek back when the consumer kept its position) and published once.
    first = h.counts.calls[0][1]
    assert first == {("reviews", 1): 1}
    assert sorted(ids(h.sink.on("out"))) == ["r0", "r1", "r10"]
    assert h.source.committed == {("reviews", 0): 2, ("reviews", 1): 1}


@pytest.mark.parametrize(
    ("device", "threads", "cpus", "overlap"),
    [("cuda", 4, 2, True), ("cpu", 2, 2, False), ("cpu", 4, 16, True), ("cpu", 4, 4, False)],
)
def test_batches_overlap_where_the_model_leaves_a_core_to_the_loop(
    device: str, threads: int, cpus: int, overlap: bool
) -> None:
    assert overlap_pays(device, threads, cpus) is overlap


# ----------------------------------------------------------------------------------------------- swaps


@dataclass
class FakeModels:
    """Hands over `model` at the `at`-th call of take() (between two batches of the loop)."""

    model: FakeModel
    at: int
    calls: int = 0

    def take(self) -> FakeModel | None:
        self.calls += 1
        return self.model if self.calls == self.at else None


@pytest.mark.parametrize("overlap", [False, True])
def test_a_swapped_model_classifies_whole_batches_and_its_results_name_it(overlap: bool) -> None:
    h = make_loop(max_records=4, overlap=overlap)
    new = FakeModel(h.events, ModelRef(name="fake", version="1", precision="fp32"), first=201)
    h.loop.models = FakeModels(new, at=3)
    for p in range(2):
        h.source.add("reviews", p, [review(i + 10 * p, "good" if i % 2 else "bad") for i in range(10)])
    assert h.loop.run(until_idle_s=1)
    results = [json.loads(r.value or b"") for r in h.sink.on("out")]
    assert sorted(r["id"] for r in results) == sorted(f"r{i + 10 * p}" for p in range(2) for i in range(10))
    versions = [r["model"]["version"] for r in results]
    assert versions == sorted(versions) and set(versions) == {"0", "1"}  # old, then new, never back
    assert h.model.firsts == {101} and new.firsts == {201}  # each model saw only its own tokens
    headers = {dict(r.headers)["sentiment.model"] for r in h.sink.on("out")}
    assert headers == {b"fake@0", b"fake@1"}
    assert h.source.committed == {("reviews", 0): 10, ("reviews", 1): 10}
    assert sum(len(c[0]) for c in h.counts.calls) == 20


def test_the_batch_being_built_at_a_swap_is_tokenized_again_by_the_new_model() -> None:
    h = make_loop(max_records=8, max_wait_s=0.5)
    new = FakeModel(h.events, ModelRef(name="fake", version="1", precision="fp32"), first=201)
    h.loop.models = FakeModels(new, at=2)  # after the first poll, while the batch waits for company
    h.source.add("reviews", 0, [review(0), review(1, "bad"), b"{broken"])
    assert h.loop.run(until_idle_s=1)
    assert h.model.firsts == set() and new.firsts == {201}
    results = [json.loads(r.value or b"") for r in h.sink.on("out")]
    assert [(r["id"], r["label"], r["model"]["version"]) for r in results] == [
        ("r0", "positive", "1"),
        ("r1", "negative", "1"),
    ]
    assert len(h.sink.on("dlq")) == 1 and h.source.committed == {("reviews", 0): 3}


# ------------------------------------------------------------------------------- until idle: the group


def test_group_lag_counts_from_the_commit_else_the_beginning_and_own_positions() -> None:
    end = {("r", 0): 10, ("r", 1): 10, ("r", 2): 5, ("r", 3): 7, ("r", 4): 8}
    committed = {("r", 0): 10, ("r", 1): 4}
    beginning = {("r", 2): 5, ("r", 3): 2}  # r:2 was emptied by retention; r:3 never committed
    positions = {("r", 4): 8}  # assigned here: records before a transaction marker are done
    assert group_lag(end, committed, beginning, positions) == {("r", 1): 6, ("r", 3): 5}
    assert group_lag({("r", 0): 3}, {("r", 0): 3}, {}, {}) == {}


def test_describe_lag_is_one_short_line() -> None:
    lag = {("reviews", p): 100 + p for p in range(8)}
    text = describe_lag(lag, limit=3)
    assert text.startswith(
        "828 records on 8 partition(s) (reviews:0 100, reviews:1 101, reviews:2 102, +5 more"
    )
    assert "\n" not in text


@dataclass
class FakeGroup:
    """The group's lag as the admin client would report it, one answer per call (the last one repeats)."""

    answers: list[dict[tuple[str, int], int] | Exception]
    calls: int = 0

    def group_lag(self) -> dict[tuple[str, int], int]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


def with_group(h: Harness, group: FakeGroup) -> Harness:
    h.loop.group = group
    return h


def test_until_idle_stops_only_once_the_whole_group_is_done() -> None:
    h = with_group(make_loop(), FakeGroup([{("reviews", 1): 40}, {("reviews", 1): 12}, {}]))
    h.source.add("reviews", 0, [review(0)])
    assert h.loop.run(until_idle_s=2, until_idle_max_s=60)
    assert isinstance(h.loop.group, FakeGroup) and h.loop.group.calls == 3
    assert h.source.committed == {("reviews", 0): 1}


def test_until_idle_gives_up_after_the_bound_without_progress_with_one_line() -> None:
    h = with_group(make_loop(), FakeGroup([{("reviews", 1): 40, ("social-posts", 0): 3}]))
    h.source.add("reviews", 0, [review(0)])
    t0 = h.clock.now
    with pytest.raises(GroupNotDone) as caught:
        h.loop.run(until_idle_s=2, until_idle_max_s=30)
    waited = h.clock.now - t0
    assert 30 <= waited < 40  # idle 2 s, then 30 s without progress
    message = str(caught.value)
    assert "\n" not in message
    assert "43 records on 2 partition(s) (reviews:1 40, social-posts:0 3)" in message
    assert "--until-idle-max" in message


def test_progress_elsewhere_in_the_group_restarts_the_bound() -> None:
    # The lag goes down by one every check (another member at work): 50 checks of 1 s > the 10 s bound.
    answers: list[dict[tuple[str, int], int] | Exception] = [{("reviews", 1): n} for n in range(50, 0, -1)]
    h = with_group(make_loop(), FakeGroup([*answers, {}]))
    h.source.add("reviews", 0, [review(0)])
    assert h.loop.run(until_idle_s=2, until_idle_max_s=10)


def test_unreadable_group_offsets_keep_it_waiting_then_give_up() -> None:
    h = with_group(make_loop(), FakeGroup([ConnectionError("broker down")]))
    with pytest.raises(GroupNotDone, match="could not read the group's offsets"):
        h.loop.run(until_idle_s=1, until_idle_max_s=5)
    h = with_group(make_loop(), FakeGroup([ConnectionError("broker down"), ConnectionError("again"), {}]))
    assert h.loop.run(until_idle_s=1, until_idle_max_s=5)


def test_records_arriving_while_waiting_are_processed_and_the_wait_starts_again() -> None:
    h = make_loop()

    @dataclass
    class Handover:
        """Another member's partition with 5 records, handed to this member at the third check."""

        calls: int = 0

        def group_lag(self) -> dict[tuple[str, int], int]:
            self.calls += 1
            if self.calls == 3:
                h.source.add("reviews", 1, [review(i) for i in range(5)])
            return {} if h.source.committed.get(("reviews", 1)) == 5 else {("reviews", 1): 5}

    h.loop.group = Handover()
    h.source.add("reviews", 0, [review(0)])
    assert h.loop.run(until_idle_s=2, until_idle_max_s=60)
    assert h.source.committed == {("reviews", 0): 1, ("reviews", 1): 5}
