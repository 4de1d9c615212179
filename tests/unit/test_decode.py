"""decode(): every kind of bad input becomes Rejected(reason), good input a validated message."""

from __future__ import annotations

import json

import pytest

from worker.decode import DEFAULT_TOPIC_KINDS, decode
from worker.messages import Record, Rejected, Review, SocialPost

LIMIT = 64 * 1024


def rec(value: bytes | None, topic: str = "reviews") -> Record:
    return Record(topic=topic, partition=0, offset=7, key=b"k", value=value, timestamp_ms=1_700_000_000_000)


def js(obj: object) -> bytes:
    return json.dumps(obj).encode()


def run(value: bytes | None, topic: str = "reviews") -> Review | SocialPost | Rejected:
    return decode(rec(value, topic), topic_kinds=DEFAULT_TOPIC_KINDS, max_bytes=LIMIT)


REVIEW = {"kind": "review", "id": "r1", "text": "Great blender", "source": "shop"}
POST = {"kind": "social_post", "id": "p1", "text": "meh", "platform": "x", "conversation_id": "c1"}


@pytest.mark.parametrize(
    ("value", "topic", "reason"),
    [
        (None, "reviews", "null_value"),
        (b"x" * (LIMIT + 1), "reviews", "oversize"),
        (b'{"id": "1", "text": "caf\xe9", "source": "s"}', "reviews", "not_utf8"),
        (b"\xff\xfe{}", "reviews", "not_utf8"),
        (b"{not json", "reviews", "invalid_json"),
        (b"", "reviews", "invalid_json"),
        (b'{"id": "1", "text": "a\x01b", "source": "s"}', "reviews", "invalid_json"),  # raw control char
        (b"[" * 20_000 + b"]" * 20_000, "reviews", "invalid_json"),  # deep nesting, under the size limit
        (b'{"id": "1", "text": "t", "rating": ' + b"9" * 5000 + b"}", "reviews", "invalid_json"),
        (b"[1, 2]", "reviews", "not_object"),
        (b'"just a string"', "reviews", "not_object"),
        (b"null", "reviews", "not_object"),
        (js({"id": "1", "text": "t", "source": "s"}), "elsewhere", "missing_kind"),
        (js({**REVIEW, "kind": "tweet"}), "reviews", "unknown_kind"),
        (js({**REVIEW, "kind": None}), "reviews", "unknown_kind"),
        (js({k: v for k, v in REVIEW.items() if k != "text"}), "reviews", "invalid_fields"),
        (js({**REVIEW, "text": ""}), "reviews", "empty_text"),
        (js({**REVIEW, "text": None}), "reviews", "invalid_fields"),
        (js({**REVIEW, "text": ["a"]}), "reviews", "invalid_fields"),
        (js({**REVIEW, "id": 12}), "reviews", "invalid_fields"),
        (js({**REVIEW, "id": ""}), "reviews", "invalid_fields"),
        (js({**REVIEW, "rating": 6}), "reviews", "invalid_fields"),
        (js({**REVIEW, "rating": "5"}), "reviews", "invalid_fields"),
        (js({**REVIEW, "rating": True}), "reviews", "invalid_fields"),
        (js({**REVIEW, "rating": 4.5}), "reviews", "invalid_fields"),
        (js({**REVIEW, "created_at": "yesterday"}), "reviews", "invalid_fields"),
        (js({**REVIEW, "created_at": "2024-05-01T12:00:00"}), "reviews", "invalid_fields"),  # no offset
        (js({**REVIEW, "created_at": -5}), "reviews", "invalid_fields"),
        # year 10000: no RFC 3339 result can carry it (found by the fuzzer: it failed the batch forever)
        (js({**REVIEW, "created_at": 253402300800000}), "reviews", "invalid_fields"),
        (js({**REVIEW, "created_at": "9999-12-31T23:59:59.999-05:00"}), "reviews", "invalid_fields"),
        (js({k: v for k, v in REVIEW.items() if k != "source"}), "reviews", "invalid_fields"),
        (js({k: v for k, v in POST.items() if k != "platform"}), "social-posts", "invalid_fields"),
        (js({**POST, "conversation_id": 5}), "social-posts", "invalid_fields"),
        (b'{"kind": "review", "id": "1", "text": "\\ud800", "source": "s"}', "reviews", "invalid_unicode"),
        (b'{"kind": "review", "id": "\\udfff", "text": "t", "source": "s"}', "reviews", "invalid_unicode"),
        (js({**REVIEW, "text": "   \n\t "}), "reviews", "empty_text"),
        (js({**REVIEW, "text": "\u3000\u2003"}), "reviews", "empty_text"),  # unicode spaces only
    ],
)
def test_bad_input_is_rejected_with_its_reason(value: bytes | None, topic: str, reason: str) -> None:
    out = run(value, topic)
    assert isinstance(out, Rejected), out
    assert out.reason == reason
    assert out.detail


def test_rejection_detail_names_fields_but_never_echoes_payload() -> None:
    secret = "my-private-words"
    out = run(js({**REVIEW, "rating": secret, "id": 99}))
    assert isinstance(out, Rejected)
    assert "rating" in out.detail and "id" in out.detail
    assert secret not in out.detail and "99" not in out.detail
    assert out.exception == "ValidationError"


@pytest.mark.parametrize(
    "value",
    [
        js(REVIEW),
        js({**REVIEW, "rating": 5, "product_id": "B01", "author": "ann", "lang": "en"}),
        js({**REVIEW, "created_at": "2024-05-01T12:00:00Z"}),
        js({**REVIEW, "created_at": "2024-05-01T14:00:00.123+02:00"}),
        js({**REVIEW, "created_at": 1714564800000}),
        js({**REVIEW, "unknown": {"nested": [1, 2]}, "extra": None}),  # extra fields are ignored
        js({**REVIEW, "text": "Great \U0001f600\U0001f44d"}),  # emoji
        js({**REVIEW, "text": "\u0645\u0645\u062a\u0627\u0632 \u05de\u05e6\u05d5\u05d9\u05df"}),  # RTL
        js({**REVIEW, "text": "tab\there \\u0000 nul"}),  # escaped control characters are text
        b"\xef\xbb\xbf" + js(REVIEW),  # UTF-8 byte order mark
        js({**REVIEW, "text": "y" * (LIMIT - 80)}),  # right under the limit
    ],
)
def test_valid_reviews_decode(value: bytes) -> None:
    out = run(value)
    assert isinstance(out, Review), out
    assert out.id == "r1" and out.source == "shop"


def test_emoji_and_rtl_text_is_kept_exactly() -> None:
    text = "\u05e9\u05dc\u05d5\u05dd \U0001f44b \u202eabc"
    out = run(js({**REVIEW, "text": text}))
    assert isinstance(out, Review) and out.text == text


def test_missing_kind_takes_the_topic_kind() -> None:
    post = run(js({k: v for k, v in POST.items() if k != "kind"}), topic="social-posts")
    assert isinstance(post, SocialPost) and post.conversation_id == "c1"
    review = run(js({k: v for k, v in REVIEW.items() if k != "kind"}), topic="reviews")
    assert isinstance(review, Review)


def test_explicit_kind_wins_over_the_topic_kind() -> None:
    out = run(js(POST), topic="reviews")
    assert isinstance(out, SocialPost)


def test_topic_kinds_are_configurable() -> None:
    out = decode(
        rec(js({"id": "1", "text": "t", "platform": "x"}), topic="tweets"),
        topic_kinds={"tweets": "social_post"},
        max_bytes=LIMIT,
    )
    assert isinstance(out, SocialPost)


def test_oversize_is_checked_before_parsing() -> None:
    out = decode(rec(js(REVIEW)), topic_kinds=DEFAULT_TOPIC_KINDS, max_bytes=10)
    assert isinstance(out, Rejected) and out.reason == "oversize"
    assert str(len(js(REVIEW))) in out.detail
