"""PURE: what one batch writes: result records, dead-letter records and count tallies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic_core import to_json

from worker.counts import Tally
from worker.keys import (
    H_DLQ_DETAIL,
    H_DLQ_EXCEPTION,
    H_DLQ_OFFSET,
    H_DLQ_PARTITION,
    H_DLQ_REASON,
    H_DLQ_TOPIC,
    H_MODEL,
)
from worker.messages import (
    MAX_EPOCH_MS,
    ModelRef,
    Record,
    Rejected,
    Review,
    Scores,
    SocialPost,
    created_at_ms,
    rfc3339_ms,
)

# Kafka's default max.message.bytes is about 1 MiB; a dead letter must fit or it could never be published.
DLQ_MAX_VALUE_BYTES = 900 * 1024


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    origin: tuple[str, int, int] | None = None  # dead letters: the input record's (topic, partition, offset)


class DeadLettersTooLarge(Exception):
    """Kafka refused these dead letters as too large for the DLQ topic (its max.message.bytes, which may be
    far below the input topics'); the batch is retried with their copies of the value dropped."""

    def __init__(self, origins: set[tuple[str, int, int]]) -> None:
        super().__init__(f"{len(origins)} dead letter(s) too large for the DLQ topic; resent without values")
        self.origins = origins


def event_ms(message: Review | SocialPost, record: Record, now_ms: int) -> int:
    """When the message happened: its created_at, else the Kafka record's timestamp, else now.

    A producer can set any record timestamp (microseconds by mistake, say); one outside what a result can
    carry counts as none, rather than failing its batch over and over."""
    if message.created_at is not None:
        return created_at_ms(message.created_at)
    return record.timestamp_ms if 0 <= record.timestamp_ms <= MAX_EPOCH_MS else now_ms


def source_of(message: Review | SocialPost) -> str:
    return message.source if isinstance(message, Review) else message.platform


def result_fields(
    message: Review | SocialPost, scores: Scores, model: ModelRef, record: Record, now_ms: int
) -> dict[str, Any]:
    """The JSON object of a result: worker.messages.Result's fields in its order, absent ones left out.

    A plain dict that pydantic-core serializes, rather than a Result model: building and dumping the model
    cost 10 us per message on these cores, a sixth of the worker's own work per message once the model is
    fast (a GPU). The unit and fuzz tests check every result against the Result model.
    """
    out: dict[str, Any] = {
        "id": message.id,
        "kind": message.kind,
        "label": scores.label,
        "scores": {"negative": scores.negative, "neutral": scores.neutral, "positive": scores.positive},
        "model": {"name": model.name, "version": model.version, "precision": model.precision},
        "input": {"topic": record.topic, "partition": record.partition, "offset": record.offset},
        "created_at": rfc3339_ms(event_ms(message, record, now_ms)),
        "processed_at": rfc3339_ms(now_ms),
    }
    if isinstance(message, Review):
        out["source"] = message.source
    else:
        out["platform"] = message.platform
        if message.conversation_id is not None:
            out["conversation_id"] = message.conversation_id
    return out


def result_record(fields: dict[str, Any], topic: str) -> OutRecord:
    model = f"{fields['model']['name']}@{fields['model']['version']}".encode()
    return OutRecord(topic, fields["id"].encode("utf-8"), to_json(fields), [(H_MODEL, model)])


def tally(message: Review | SocialPost, scores: Scores, record: Record, now_ms: int) -> Tally:
    return Tally(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        kind=message.kind,
        source=source_of(message),
        label=scores.label,
        score=scores.score,
        ts_ms=event_ms(message, record, now_ms),
        conversation_id=message.conversation_id if isinstance(message, SocialPost) else None,
    )


def dead_letter(record: Record, rejected: Rejected, topic: str, *, keep_value: bool = True) -> OutRecord:
    """The original key, value and headers, plus headers saying why and where from.

    Kafka refuses a record with neither key nor value, so a keyless tombstone becomes an empty value.
    keep_value=False (the DLQ topic refused the copy as too large) leaves out the value and the original
    headers; the dlq headers still say where the record is in its input topic.
    """
    value = record.value
    detail = rejected.detail
    if not keep_value:
        value = b""
        detail = f"{detail}; value and headers dropped: too large for the DLQ topic"
    elif value is not None and len(value) > DLQ_MAX_VALUE_BYTES:
        value = value[:DLQ_MAX_VALUE_BYTES]
        detail = f"{detail}; value truncated to its first {DLQ_MAX_VALUE_BYTES} bytes"
    if value is None and record.key is None:
        value = b""
    headers = [
        *(record.headers if keep_value else ()),
        (H_DLQ_REASON, rejected.reason.encode()),
        (H_DLQ_DETAIL, detail.encode("utf-8", "replace")),
        (H_DLQ_TOPIC, record.topic.encode("utf-8", "replace")),
        (H_DLQ_PARTITION, str(record.partition).encode()),
        (H_DLQ_OFFSET, str(record.offset).encode()),
    ]
    if rejected.exception:
        headers.append((H_DLQ_EXCEPTION, rejected.exception.encode()))
    return OutRecord(topic, record.key, value, headers, (record.topic, record.partition, record.offset))
