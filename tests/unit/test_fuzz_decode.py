"""Fuzzing the decoder and the loop with hypothesis-generated payloads.

Three generators: arbitrary bytes, arbitrary (nested) JSON, and near-valid messages (a valid review or post
with fields dropped, retyped, emptied or replaced, odd unicode, a BOM, truncated bytes, deep nesting).

- decode(): 10,000 examples by default (about 20 s on a busy 2-core box); each returns a message or a
  Rejected, never raises, and what the loop builds from it (result, tally, dead letter) never raises either.
- the loop with in-memory fakes: 500 runs of up to 40 records by default (a few seconds); every record ends
  as exactly one result or one dead letter, the counts get exactly the results (through the real, pure
  pack_apply, so each tally is one Redis would accept), and the commit covers every record.

SENTIMENT_TEST_FUZZ_EXAMPLES and SENTIMENT_TEST_FUZZ_LOOP_EXAMPLES raise the counts for a longer run.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.batching import Limits
from worker.counts import Tally, check_tally, pack_apply
from worker.decode import decode
from worker.keys import H_DLQ_OFFSET, H_DLQ_PARTITION, H_DLQ_REASON, H_DLQ_TOPIC
from worker.loop import Loop, LoopConfig
from worker.messages import ModelRef, Record, Rejected, Result, Review, Scores, SocialPost
from worker.output import OutRecord, dead_letter, result_fields, result_record, tally

EXAMPLES = int(os.environ.get("SENTIMENT_TEST_FUZZ_EXAMPLES", "10000"))
MAX_BYTES = 2048
TOPIC_KINDS = {"reviews": "review", "social-posts": "social_post"}
TOPICS = ("reviews", "social-posts", "other")
REASONS = {
    "null_value",
    "oversize",
    "not_utf8",
    "invalid_json",
    "not_object",
    "missing_kind",
    "unknown_kind",
    "invalid_fields",
    "invalid_unicode",
    "empty_text",
}
MODEL = ModelRef(name="fuzz", version="0", precision="fp32")
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------------------------------- strategies

# Strings that stress the validators: lone surrogates survive json.dumps as \udxxx escapes.
odd_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\t\n", "\u00a0", "\ud800", "a\udfffb", "\x00", "\ufeff", "9" * 5000]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(odd_text, inner, max_size=5)),
    max_leaves=12,
)
created_at = st.one_of(
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from(
        ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00", "9999-12-31T23:59:59+14:00", "yesterday"]
    ),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-9, minutes=-30))])).map(
        lambda d: d.isoformat()
    ),
)


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A valid-looking review or post, then a few mutations."""
    is_review = draw(st.booleans())
    msg: dict[str, Any] = {"id": draw(st.text(min_size=1, max_size=10)), "text": draw(odd_text)}
    if is_review:
        msg |= {"source": draw(st.text(min_size=1, max_size=10)), "rating": draw(st.integers(-1, 7))}
    else:
        msg |= {"platform": "x", "conversation_id": draw(st.one_of(st.none(), st.text(max_size=10)))}
    if draw(st.booleans()):
        msg["kind"] = draw(st.sampled_from(["review", "social_post", "tweet", "", 1, None]))
    if draw(st.booleans()):
        msg["created_at"] = draw(created_at)
    fields = ["id", "text", "source", "rating", "platform", "conversation_id", "kind", "created_at", "lang"]
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(fields))
        action = draw(st.sampled_from(["drop", "replace", "blank"]))
        if action == "drop":
            msg.pop(name, None)
        elif action == "replace":
            msg[name] = draw(json_values)
        else:
            msg[name] = " "
    raw = json.dumps(msg, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    tweak = draw(st.sampled_from(["none", "bom", "truncate", "pad", "nest"]))
    if tweak == "bom":
        raw = "\ufeff".encode() + raw
    elif tweak == "truncate":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif tweak == "pad":
        raw = raw + b" " * draw(st.integers(0, MAX_BYTES))
    elif tweak == "nest":
        depth = draw(st.integers(1, 5000))
        raw = b'{"id": "n", "text": "t", "source": "s", "extra": ' + b"[" * depth + b"]" * depth + b"}"
    return raw


payloads = st.one_of(
    st.none(),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    near_valid(),
)

# ---------------------------------------------------------------------------------------------- tests


def check_outcome(record: Record) -> Review | SocialPost | Rejected:
    """decode() and what the loop does next with the outcome, all pure: none of it may raise."""
    out = decode(record, topic_kinds=TOPIC_KINDS, max_bytes=MAX_BYTES)
    if isinstance(out, Rejected):
        assert out.reason in REASONS
        dlq = dead_letter(record, out, "dlq")
        assert dict(dlq.headers)[H_DLQ_REASON] == out.reason.encode()
        if record.value is not None:
            assert dlq.value == record.value
    else:
        assert isinstance(out, Review | SocialPost) and out.text.strip()
        scores = Scores(negative=0.2, neutral=0.3, positive=0.5)
        fields = result_fields(out, scores, MODEL, record, 1_700_000_000_000)
        value = result_record(fields, "out").value or b""
        # Every result is a Result (the output's schema), the message's own id included.
        assert Result.model_validate_json(value).model_dump(exclude_none=True) == json.loads(value)
        assert json.loads(value)["id"] == out.id
        check_tally(tally(out, scores, record, now_ms=1_700_000_000_000))
    return out


@FUZZ
@given(value=payloads, topic=st.sampled_from(TOPICS), timestamp=st.integers(-1, 2**63 - 1))
def test_decode_never_raises_and_every_outcome_can_be_published(
    value: bytes | None, topic: str, timestamp: int
) -> None:
    check_outcome(Record(topic, 0, 0, b"k", value, [], timestamp))


def test_the_generators_reach_both_outcomes_and_most_reasons() -> None:
    """Guards the fuzzer itself: a strategy that only makes garbage would prove little."""
    seen: set[str] = set()

    @settings(max_examples=600, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(value=payloads, topic=st.sampled_from(TOPICS))
    def probe(value: bytes | None, topic: str) -> None:
        out = check_outcome(Record(topic, 0, 0, None, value, [], -1))
        seen.add(out.reason if isinstance(out, Rejected) else "valid")

    probe()
    assert "valid" in seen
    assert {"null_value", "not_utf8", "invalid_json", "not_object", "invalid_fields"} <= seen, seen


# ----------------------------------------------------------------------------------- the loop, with fakes

LOOP_EXAMPLES = int(os.environ.get("SENTIMENT_TEST_FUZZ_LOOP_EXAMPLES", "500"))


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


@dataclass
class Source:
    clock: Clock
    logs: dict[tuple[str, int], list[Record]]
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        out: list[Record] = []
        for tp, log in self.logs.items():
            pos = self.positions.get(tp, 0)
            take = log[pos : pos + max_records - len(out)]
            out.extend(take)
            self.positions[tp] = pos + len(take)
        if not out:
            self.clock.now += timeout_ms / 1000
        return out

    def take_revoked(self) -> set[tuple[str, int]]:
        return set()

    def assigned(self) -> bool:
        return True

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        for tp, offset in offsets.items():
            assert offset > self.committed.get(tp, 0), "commits must move forward"
        self.committed.update(offsets)

    def seek(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self.positions.update(offsets)

    def lag(self) -> dict[tuple[str, int], int]:
        return {}


@dataclass
class Sink:
    published: list[OutRecord] = field(default_factory=list)

    def publish(self, records: Sequence[OutRecord]) -> None:
        self.published.extend(records)


@dataclass
class Counts:
    tallies: list[Tally] = field(default_factory=list)

    def apply(self, tallies: Sequence[Tally], next_offsets: Mapping[tuple[str, int], int]) -> int:
        pack_apply(
            tallies,
            next_offsets,
            prefix="fuzz",
            bucket_s=60,
            retention_s=86400,
            mood_size=5,
            now_ms=1_700_000_000_000,
        )
        self.tallies.extend(tallies)
        return len(tallies)


class Model:
    model_ref = MODEL

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [[101, *(len(w) for w in t.split()[:50]), 102] for t in texts]

    def classify(self, encoded: Sequence[Sequence[int]]) -> list[Scores]:
        return [Scores(negative=0.25, neutral=0.25, positive=0.5) for _ in encoded]


records = st.lists(
    st.tuples(st.sampled_from(TOPICS), st.integers(0, 2), payloads, st.integers(-1, 2**45)),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=LOOP_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=records, max_records=st.integers(1, 16))
def test_every_fuzzed_record_ends_as_one_result_or_one_dead_letter(
    batch: list[tuple[str, int, bytes | None, int]], max_records: int
) -> None:
    logs: dict[tuple[str, int], list[Record]] = {}
    for topic, partition, value, ts in batch:
        log = logs.setdefault((topic, partition), [])
        log.append(Record(topic, partition, len(log), f"k{len(log)}".encode(), value, [], ts))
    clock = Clock()
    source, sink, counts = Source(clock, logs), Sink(), Counts()
    config = LoopConfig(
        limits=Limits(max_records, 10_000, 0.05),
        output_topic="out",
        dlq_topic="dlq",
        topic_kinds={"reviews": "review", "social-posts": "social_post"},
        max_message_bytes=2048,
    )
    loop = Loop(source, sink, counts, Model(), config, clock=clock, sleep=clock.sleep, wall_ms=lambda: 1)

    assert loop.run(until_idle_s=1.0)

    outcomes: Counter[tuple[str, int, int]] = Counter()
    for out in sink.published:
        if out.topic == "out":
            ref = json.loads(out.value or b"")["input"]
            outcomes[(ref["topic"], ref["partition"], ref["offset"])] += 1
        else:
            assert out.topic == "dlq"
            h = dict(out.headers)
            assert h[H_DLQ_REASON]
            outcomes[(h[H_DLQ_TOPIC].decode(), int(h[H_DLQ_PARTITION]), int(h[H_DLQ_OFFSET]))] += 1
    every = {(r.topic, r.partition, r.offset) for log in logs.values() for r in log}
    assert set(outcomes) == every and set(outcomes.values()) == {1}
    assert len(counts.tallies) == sum(1 for o in sink.published if o.topic == "out")
    assert source.committed == {tp: len(log) for tp, log in logs.items()}
    assert loop.processed == len(batch)
    assert loop.metrics.batch_failures._metrics == {}  # no batch ever failed
