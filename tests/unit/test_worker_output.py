"""Output building: result records, dead letters and tallies."""

from __future__ import annotations

import json

from worker.keys import (
    H_DLQ_DETAIL,
    H_DLQ_EXCEPTION,
    H_DLQ_OFFSET,
    H_DLQ_PARTITION,
    H_DLQ_REASON,
    H_DLQ_TOPIC,
    H_MODEL,
)
from worker.messages import ModelRef, Record, Rejected, Result, Review, Scores, SocialPost
from worker.output import DLQ_MAX_VALUE_BYTES, dead_letter, result_fields, result_record, tally

MODEL = ModelRef(name="minilm-tweeteval", version="abc123def456", precision="fp32")
SCORES = Scores(negative=0.1, neutral=0.2, positive=0.7)
NOW = 1_714_564_900_000


def record(topic: str = "reviews", ts: int = 1_714_564_850_000) -> Record:
    return Record(topic, 2, 41, b"key", b"{}", [("trace", b"t1")], ts)


def review(**kw: object) -> Review:
    return Review.model_validate({"kind": "review", "id": "r1", "text": "nice", "source": "shop", **kw})


def post(**kw: object) -> SocialPost:
    return SocialPost.model_validate(
        {"kind": "social_post", "id": "p1", "text": "meh", "platform": "x", **kw}
    )


def published(message: Review | SocialPost, rec: Record | None = None) -> dict[str, object]:
    """The JSON a result record carries, checked against the Result model (the output's schema)."""
    value = result_record(result_fields(message, SCORES, MODEL, rec or record(), NOW), "out").value or b""
    out = json.loads(value)
    assert Result.model_validate_json(value).model_dump(exclude_none=True) == out
    return out


def test_review_result_has_every_field_and_source() -> None:
    out = published(review(created_at="2024-05-01T12:00:00Z"))
    assert out == {
        "id": "r1",
        "kind": "review",
        "label": "positive",
        "scores": {"negative": 0.1, "neutral": 0.2, "positive": 0.7},
        "model": {"name": "minilm-tweeteval", "version": "abc123def456", "precision": "fp32"},
        "input": {"topic": "reviews", "partition": 2, "offset": 41},
        "created_at": "2024-05-01T12:00:00.000Z",
        "processed_at": "2024-05-01T12:01:40.000Z",
        "source": "shop",
    }
    assert list(out) == [f for f in Result.model_fields if f in out]  # the schema's field order


def test_post_result_has_platform_and_conversation() -> None:
    out = published(post(conversation_id="c9"), record("social-posts"))
    assert out["platform"] == "x" and out["conversation_id"] == "c9"
    assert "source" not in out


def test_post_without_conversation_leaves_it_out() -> None:
    out = published(post())
    assert "conversation_id" not in out and "source" not in out


def test_created_at_falls_back_to_the_record_time_then_now() -> None:
    assert published(review(), record(ts=1_714_564_850_000))["created_at"] == "2024-05-01T12:00:50.000Z"
    assert published(review(), record(ts=-1))["created_at"] == "2024-05-01T12:01:40.000Z"


def test_a_record_timestamp_no_result_can_carry_counts_as_none() -> None:
    # e.g. microseconds set by mistake: year 56,000; formatting it would fail the batch on every retry
    micros = record(ts=1_714_564_850_000_000)
    assert published(review(), micros)["created_at"] == "2024-05-01T12:01:40.000Z"
    assert tally(review(), SCORES, micros, NOW).ts_ms == NOW


def test_result_record_is_keyed_by_id_with_model_header() -> None:
    fields = result_fields(review(id="r\u00e9 \U0001f600"), SCORES, MODEL, record(), NOW)
    out = result_record(fields, "results")
    assert out.topic == "results"
    assert out.key == "r\u00e9 \U0001f600".encode()
    assert out.headers == [(H_MODEL, b"minilm-tweeteval@abc123def456")]
    assert json.loads(out.value or b"")["id"] == "r\u00e9 \U0001f600"


def test_tally_uses_created_at_and_score() -> None:
    t = tally(post(conversation_id="c1", created_at=1_714_000_000_000), SCORES, record("social-posts"), NOW)
    assert (t.topic, t.partition, t.offset) == ("social-posts", 2, 41)
    assert (t.kind, t.source, t.label, t.conversation_id) == ("social_post", "x", "positive", "c1")
    assert t.score == SCORES.score
    assert t.ts_ms == 1_714_000_000_000


def test_dead_letter_keeps_key_value_headers_and_says_why() -> None:
    rec = record()
    out = dead_letter(rec, Rejected("invalid_json", "Expecting value at line 1", "JSONDecodeError"), "dlq")
    assert (out.topic, out.key, out.value) == ("dlq", rec.key, rec.value)
    headers = dict(out.headers)
    assert headers["trace"] == b"t1"
    assert headers[H_DLQ_REASON] == b"invalid_json"
    assert headers[H_DLQ_DETAIL] == b"Expecting value at line 1"
    assert headers[H_DLQ_EXCEPTION] == b"JSONDecodeError"
    assert (headers[H_DLQ_TOPIC], headers[H_DLQ_PARTITION], headers[H_DLQ_OFFSET]) == (
        b"reviews",
        b"2",
        b"41",
    )


def test_dead_letter_without_exception_has_no_exception_header() -> None:
    out = dead_letter(record(), Rejected("empty_text", "text is whitespace only"), "dlq")
    assert H_DLQ_EXCEPTION not in dict(out.headers)


def test_keyless_tombstone_gets_an_empty_value() -> None:
    rec = Record("reviews", 0, 1, None, None)
    out = dead_letter(rec, Rejected("null_value", "the record has no value"), "dlq")
    assert out.key is None and out.value == b""


def test_keyed_tombstone_stays_a_tombstone() -> None:
    rec = Record("reviews", 0, 1, b"k", None)
    assert dead_letter(rec, Rejected("null_value", "x"), "dlq").value is None


def test_huge_value_is_truncated_to_fit_kafka() -> None:
    rec = Record("reviews", 0, 1, b"k", b"x" * (DLQ_MAX_VALUE_BYTES + 10))
    out = dead_letter(rec, Rejected("oversize", "big"), "dlq")
    assert out.value is not None and len(out.value) == DLQ_MAX_VALUE_BYTES
    assert b"truncated" in dict(out.headers)[H_DLQ_DETAIL]
