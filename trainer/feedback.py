"""Corrections from people: the feedback message, its validation, precedence, and the held-out slice.

A feedback record on SENTIMENT_FEEDBACK_TOPIC (default ``sentiment-feedback``), keyed by the message id::

    {"id": "r-123", "label": "positive", "text": "this slaps", "kind": "social_post",
     "source": "moderator", "annotator": "ana", "created_at": "2026-12-01T10:00:00Z"}

The topic is the durable store: the learner reads it whole each cycle, so nothing depends on local files.
Keys are the message id, so with ``cleanup.policy=compact`` the topic keeps the latest correction per message.

Precedence when corrections of one message disagree: ``moderator`` > ``user`` > ``bot``; within one source
the latest wins (created_at, else the Kafka record timestamp; then the later offset). A redelivered copy
(webhooks retry) changes nothing.

PURE: everything here except the JSON Schema file path; the Kafka reading is in trainer.learn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

LABELS = ("negative", "neutral", "positive")
SOURCE_RANK = {"moderator": 3, "user": 2, "bot": 1}
SCHEMA_PATH = Path(__file__).with_name("schemas") / "feedback.schema.json"


class Feedback(BaseModel):
    """A person's (or a bot's) correction of one message's label."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=256, description="the id of the message being corrected")
    label: Literal["negative", "neutral", "positive"] = Field(description="the right label")
    text: str = Field(min_length=1, max_length=20_000, description="the message's text, as classified")
    kind: Literal["review", "social_post"] | None = None
    source: Literal["moderator", "user", "bot"] = Field(
        description="who corrected it; precedence moderator > user > bot, latest wins within one source"
    )
    annotator: str | None = Field(default=None, max_length=200)
    created_at: datetime | None = Field(default=None, description="RFC 3339; else the record timestamp")
    model_version: str | None = Field(default=None, max_length=64, description="the version that was wrong")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is blank")
        return v


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str  # machine-readable, e.g. "invalid_json"
    detail: str  # never the payload text


@dataclass(frozen=True, slots=True)
class Item:
    feedback: Feedback
    ts_ms: int  # created_at, else the record timestamp
    position: tuple[int, int]  # (partition, offset): the last tie-breaker


def decode(
    key: bytes | None, value: bytes | None, timestamp_ms: int, position: tuple[int, int]
) -> Item | Rejected:
    """One feedback record -> Item, or Rejected with the reason (bad feedback is never trained on)."""
    if value is None:
        return Rejected("null_value", "the record has no value")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected("not_utf8", "the value is not UTF-8")
    try:
        data = json.loads(text)
    except ValueError as exc:
        return Rejected("invalid_json", f"not JSON: {type(exc).__name__} at char {getattr(exc, 'pos', '?')}")
    if not isinstance(data, dict):
        return Rejected("not_object", f"expected a JSON object, got {type(data).__name__}")
    try:
        fb = Feedback.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "?" for e in exc.errors()})
        return Rejected("invalid_fields", f"invalid or missing: {', '.join(fields)}"[:300])
    if key is not None and key != fb.id.encode("utf-8"):
        return Rejected("key_mismatch", "the record key is not the feedback's id")
    when = int(fb.created_at.astimezone(UTC).timestamp() * 1000) if fb.created_at else timestamp_ms
    return Item(fb, when, position)


def resolve(items: list[Item]) -> dict[str, Feedback]:
    """One correction per message id: the highest-ranked source, then the latest within it."""
    best: dict[str, Item] = {}
    for item in items:
        current = best.get(item.feedback.id)
        if current is None or _rank(item) > _rank(current):
            best[item.feedback.id] = item
    return {k: best[k].feedback for k in sorted(best)}


def _rank(item: Item) -> tuple[int, int, tuple[int, int]]:
    return SOURCE_RANK[item.feedback.source], item.ts_ms, item.position


def held_out(message_id: str, share: float) -> bool:
    """Whether a correction is kept out of training to judge the candidate: fixed by the id's hash, so a
    message stays on its side across cycles."""
    bucket = int.from_bytes(hashlib.sha256(message_id.encode("utf-8")).digest()[:8], "big") / 2**64
    return bucket < share


def repeats(n_original: int, n_feedback: int, share: float) -> int:
    """How many copies of each correction make them about `share` of the training rows (at least one)."""
    if n_feedback == 0:
        return 0
    return max(1, round(share * n_original / ((1 - share) * n_feedback)))


def new_since(current: dict[str, Feedback], used: dict[str, str]) -> int:
    """Corrections not yet trained on: ids the champion did not see, or saw with another label."""
    return sum(1 for k, fb in current.items() if used.get(k) != fb.label)


def schema_text() -> str:
    """The feedback message's JSON Schema, as published in trainer/schemas/feedback.schema.json."""
    return json.dumps(Feedback.model_json_schema(), indent=2, sort_keys=True) + "\n"
