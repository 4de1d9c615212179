"""Message formats: the two input kinds, the classification result, and the small value types around them.

Inputs are validated strictly (no str<->int coercion, bool is not an int); unknown extra fields are ignored.
The JSON Schema files under worker/schemas/ are generated from these models
(``sentiment-worker schema --write worker/schemas``) and a unit test keeps them up to date.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

LABELS = ("negative", "neutral", "positive")
KINDS = ("review", "social_post")
# 9999-12-31T23:59:59.999Z: the last instant an RFC 3339 result can carry (and far below 2**53, where JSON
# numbers and Redis' Lua would lose integer precision). Anything later would fail the batch when formatted.
MAX_EPOCH_MS = 253_402_300_799_999

Label = Literal["negative", "neutral", "positive"]
Kind = Literal["review", "social_post"]
Name = Annotated[str, Field(min_length=1, max_length=512)]
CreatedAt = Annotated[
    str | int,
    Field(
        description="RFC 3339 date-time with an offset (e.g. 2024-05-01T12:00:00Z) or epoch milliseconds",
        json_schema_extra={"examples": ["2024-05-01T12:00:00Z", 1714564800000]},
    ),
]


def created_at_ms(value: str | int) -> int:
    """RFC 3339 text or epoch milliseconds -> epoch milliseconds. ValueError (one line) when invalid."""
    if isinstance(value, int):
        if not 0 <= value <= MAX_EPOCH_MS:
            raise ValueError("epoch milliseconds out of range")
        return value
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise ValueError("RFC 3339 date-time needs an offset (Z or +hh:mm)")
    ms = int(parsed.timestamp() * 1000)
    if not 0 <= ms <= MAX_EPOCH_MS:
        raise ValueError("date-time out of range")
    return ms


@functools.lru_cache(maxsize=4096)  # a batch shares one processed_at, and bursts share created_at values
def rfc3339_ms(epoch_ms: int) -> str:
    """Epoch ms -> '2024-05-01T12:00:00.000Z' (UTC, millisecond precision)."""
    return (
        datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


_KIND_NOTE = "may be left out on a topic mapped to this kind (SENTIMENT_TOPIC_KINDS)"


class _Input(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    id: Name
    text: str = Field(min_length=1, description="the text to classify; whitespace-only text is rejected")
    author: str | None = None
    created_at: CreatedAt | None = None
    lang: str | None = None

    @field_validator("created_at")
    @classmethod
    def _check_created_at(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            created_at_ms(v)
        return v


class Review(_Input):
    """A product review."""

    kind: Literal["review"] = Field(description=_KIND_NOTE)
    source: Name = Field(description="where the review comes from, e.g. a shop or site name")
    product_id: str | None = None
    rating: int | None = Field(default=None, ge=1, le=5)


class SocialPost(_Input):
    """A social-media post."""

    kind: Literal["social_post"] = Field(description=_KIND_NOTE)
    platform: Name
    conversation_id: Name | None = None
    reply_to: str | None = None


Message = Annotated[Review | SocialPost, Field(discriminator="kind")]
MESSAGE_ADAPTER: TypeAdapter[Review | SocialPost] = TypeAdapter(Message)


# A plain dataclass, not a model: the classifier makes one per text, and a pydantic model cost 2.8 us each
# against 0.4 (on a GPU, on the thread that shares the GIL with the loop). Result still validates it.
@dataclass(frozen=True, slots=True)
class Scores:
    """Class probabilities (they sum to 1)."""

    negative: float
    neutral: float
    positive: float

    @property
    def label(self) -> Label:
        # The first of the highest, in LABELS order (a tie goes to negative, then neutral).
        neg, neu, pos = self.negative, self.neutral, self.positive
        if neg >= neu and neg >= pos:
            return "negative"
        return "neutral" if neu >= pos else "positive"

    @property
    def score(self) -> float:
        """p(positive) - p(negative), clamped to [-1, 1]."""
        return min(1.0, max(-1.0, self.positive - self.negative))


class ModelRef(BaseModel):
    name: str = Field(description="the model folder's base name")
    version: str = Field(description="first 12 hex digits of the sha256 of the folder's *.safetensors files")
    precision: Literal["fp32", "bf16", "fp16", "int8"] = Field(
        description="the number format the label was computed in (SENTIMENT_PRECISION, auto resolved)"
    )


class InputRef(BaseModel):
    topic: str
    partition: int
    offset: int


class Result(BaseModel):
    """One classification, published on the output topic keyed by id."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: Kind
    label: Label
    scores: Scores
    model: ModelRef
    input: InputRef
    created_at: str = Field(
        description="the message's created_at in RFC 3339 UTC, else the Kafka record's timestamp"
    )
    processed_at: str = Field(description="when the worker classified the message, RFC 3339 UTC")
    source: str | None = Field(default=None, description="reviews only")
    platform: str | None = Field(default=None, description="social posts only")
    conversation_id: str | None = Field(default=None, description="social posts, when given")


@dataclass(frozen=True, slots=True)
class Record:
    """A Kafka record as the worker sees it (independent of the client library)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp_ms: int = -1  # -1: the broker gave none


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a record cannot be classified. reason is a short stable code; detail never holds payload text."""

    reason: str
    detail: str
    exception: str | None = None


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for worker/schemas/."""
    return {
        "review.schema.json": Review.model_json_schema(),
        "social_post.schema.json": SocialPost.model_json_schema(),
        "message.schema.json": MESSAGE_ADAPTER.json_schema(),
        "result.schema.json": Result.model_json_schema(),
    }


def schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
