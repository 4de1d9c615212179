"""Every Redis key and Kafka header name the worker uses, in one place.

Redis keys share one hash tag (``{prefix}``) so that a batch's Lua update touches a single slot and runs
unchanged on Redis Cluster.
"""

from __future__ import annotations

import re
import urllib.parse

# Kafka headers on dead-letter records. Values are UTF-8 bytes. They never carry message text.
H_DLQ_REASON = "sentiment.dlq.reason"  # machine-readable reason, e.g. "invalid_json"
# Short human-readable detail (validator paths, limits); never payload text.
H_DLQ_DETAIL = "sentiment.dlq.detail"
H_DLQ_EXCEPTION = "sentiment.dlq.exception"  # exception class name, e.g. "JSONDecodeError"
H_DLQ_TOPIC = "sentiment.dlq.topic"
H_DLQ_PARTITION = "sentiment.dlq.partition"
H_DLQ_OFFSET = "sentiment.dlq.offset"

# Kafka headers on result records.
H_MODEL = "sentiment.model"

# ---------------------------------------------------------------------------------------------------------
# Redis keys. Every key starts with "{prefix}" (a Redis Cluster hash tag), so all of them live in one slot.
# User data (kinds, sources, conversation ids, topics) goes through escape_part() first, so it can never add
# a ':' separator or a '{'/'}' hash-tag brace to a key.
# ---------------------------------------------------------------------------------------------------------

_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]+")
_NEEDS_ESCAPE = re.compile(r"[%:{}\x00-\x1f\x7f]")


def check_prefix(prefix: str) -> str:
    """Return prefix if it can be used as the hash tag, else raise ValueError."""
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"Redis key prefix must match [A-Za-z0-9_.-]+, got {prefix!r}")
    return prefix


def escape_part(text: str) -> str:
    """Percent-encode '%', ':', '{', '}' and control characters; everything else is kept as is.

    Reversible (see unescape_part) and injective, so two different sources never share a key.
    """
    return _NEEDS_ESCAPE.sub(lambda m: f"%{ord(m.group()):02X}", text)


def unescape_part(text: str) -> str:
    return urllib.parse.unquote(text, errors="strict")


def tag(prefix: str) -> str:
    return "{" + check_prefix(prefix) + "}"


def counts_all_key(prefix: str, bucket_s: int, bucket: int) -> str:
    """Hash, fields negative/neutral/positive: all messages with a timestamp in [bucket, bucket+bucket_s)."""
    return f"{tag(prefix)}:counts:{bucket_s}:all:{bucket}"


def counts_kind_key(prefix: str, bucket_s: int, kind: str, bucket: int) -> str:
    return f"{tag(prefix)}:counts:{bucket_s}:kind:{escape_part(kind)}:{bucket}"


def counts_source_key(prefix: str, bucket_s: int, kind: str, source: str, bucket: int) -> str:
    return f"{tag(prefix)}:counts:{bucket_s}:source:{escape_part(kind)}:{escape_part(source)}:{bucket}"


def watermarks_key(prefix: str) -> str:
    """Hash: field "<topic>:<partition>" -> next offset not yet counted (a Kafka committed-offset value)."""
    return f"{tag(prefix)}:watermarks"


def watermark_field(topic: str, partition: int) -> str:
    return f"{escape_part(topic)}:{partition}"


def parse_watermark_field(field: str) -> tuple[str, int]:
    topic, sep, partition = field.rpartition(":")
    if not sep or not partition.isdigit():
        raise ValueError(f"not a watermark field: {field!r}")
    return unescape_part(topic), int(partition)


def mood_key(prefix: str, conversation_id: str) -> str:
    """Hash: n, score, label (from the score), last_label, negative, neutral, positive, updated_ms."""
    return f"{tag(prefix)}:mood:{escape_part(conversation_id)}"


def mood_recent_key(prefix: str, conversation_id: str) -> str:
    """List of the conversation's latest labels, newest first (LPUSH + LTRIM to mood_size)."""
    return f"{mood_key(prefix, conversation_id)}:recent"


def mood_index_key(prefix: str) -> str:
    """Sorted set: conversation id (as is, not escaped: a member, not a key) -> updated_ms of its mood.

    "moods" cannot clash with a conversation's own keys, which all start with "mood:".
    """
    return f"{tag(prefix)}:moods"


def mood_channel(prefix: str) -> str:
    """Pub/sub channel: one JSON message per conversation updated by a batch."""
    return f"{tag(prefix)}:mood-updates"


def model_channel(prefix: str) -> str:
    """Pub/sub channel the learner publishes a promoted version on (sentiment-train learn): a hint that
    makes workers look at their registry alias at once instead of at their next poll."""
    return f"{tag(prefix)}:model-promoted"
