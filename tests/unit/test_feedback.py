"""Feedback records: validation reasons, precedence between sources, the held-out slice, oversampling."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trainer.feedback import (
    SCHEMA_PATH,
    Feedback,
    Item,
    Rejected,
    decode,
    held_out,
    new_since,
    repeats,
    resolve,
    schema_text,
)


def record(**fields: Any) -> bytes:
    base = {"id": "m1", "label": "positive", "text": "this slaps", "source": "user"}
    return json.dumps({**base, **fields}).encode()


def item(source: str, label: str, ts: int, offset: int = 0, message: str = "m1") -> Item:
    fb = Feedback(id=message, label=label, text="t", source=source)  # type: ignore[arg-type]
    return Item(fb, ts, (0, offset))


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"m1", None, "null_value"),
        (b"m1", b"\xff\xfe", "not_utf8"),
        (b"m1", b"{nope", "invalid_json"),
        (b"m1", b"[1]", "not_object"),
        (b"m1", record(label="great"), "invalid_fields"),
        (b"m1", record(source="intern"), "invalid_fields"),
        (b"m1", record(text="   "), "invalid_fields"),
        (b"m1", json.dumps({"id": "m1", "label": "positive", "source": "user"}).encode(), "invalid_fields"),
        (b"other", record(), "key_mismatch"),
    ],
)
def test_bad_feedback_is_rejected_with_a_reason_and_no_text(
    key: bytes, value: bytes | None, reason: str
) -> None:
    got = decode(key, value, 1_700_000_000_000, (0, 5))
    assert isinstance(got, Rejected) and got.reason == reason
    assert "slaps" not in got.detail


def test_valid_feedback_takes_created_at_else_the_record_timestamp() -> None:
    got = decode(b"m1", record(created_at="2026-12-01T10:00:00Z"), 5, (1, 2))
    assert isinstance(got, Item) and got.ts_ms == 1_796_119_200_000 and got.position == (1, 2)
    got = decode(None, record(), 1234, (0, 0))
    assert isinstance(got, Item) and got.ts_ms == 1234 and got.feedback.label == "positive"


def test_a_moderator_outranks_a_user_outranks_a_bot_whatever_the_order() -> None:
    items = [item("moderator", "negative", 1), item("user", "positive", 9), item("bot", "neutral", 10)]
    for order in (items, items[::-1]):
        assert resolve(order)["m1"].label == "negative"
    assert resolve([item("user", "positive", 9), item("bot", "neutral", 10)])["m1"].label == "positive"


def test_within_one_source_the_latest_wins_then_the_later_offset() -> None:
    assert resolve([item("user", "neutral", 5), item("user", "negative", 4)])["m1"].label == "neutral"
    assert resolve([item("user", "neutral", 5, 7), item("user", "negative", 5, 8)])["m1"].label == "negative"


def test_a_redelivered_copy_changes_nothing() -> None:
    once = resolve([item("user", "neutral", 5, 1), item("user", "positive", 3, 0, "m2")])
    twice = resolve(
        [item("user", "neutral", 5, 1), item("user", "neutral", 5, 1), item("user", "positive", 3, 0, "m2")]
    )
    assert once == twice and list(once) == ["m1", "m2"]


def test_the_held_out_slice_is_fixed_by_id_and_about_the_share_asked() -> None:
    ids = [f"msg-{i}" for i in range(5000)]
    chosen = [i for i in ids if held_out(i, 0.2)]
    assert chosen == [i for i in ids if held_out(i, 0.2)]
    assert 0.18 < len(chosen) / len(ids) < 0.22
    assert set(chosen) <= {i for i in ids if held_out(i, 0.5)}  # a larger share only adds ids


def test_repeats_brings_the_corrections_to_their_share() -> None:
    assert repeats(9000, 100, 0.1) == 10  # 1000 copies beside 9000 rows: 10 %
    assert repeats(100, 1000, 0.1) == 1
    assert repeats(100, 0, 0.1) == 0


def test_new_since_counts_unseen_ids_and_changed_labels() -> None:
    current = resolve([item("user", "neutral", 1), item("user", "positive", 1, 0, "m2")])
    assert new_since(current, {}) == 2
    assert new_since(current, {"m1": "neutral", "m2": "positive"}) == 0
    assert new_since(current, {"m1": "negative", "m2": "positive"}) == 1


def test_the_published_schema_is_the_model_s() -> None:
    assert SCHEMA_PATH.read_text() == schema_text()
