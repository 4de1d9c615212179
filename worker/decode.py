"""PURE: one raw Kafka record -> a validated message, or Rejected(reason) for the dead-letter topic.

Bad input is data, so nothing here raises for any bytes a producer can send. Reasons (stable codes, also the
DLQ header value and a metrics label):

  null_value       the record has no value (a tombstone)
  oversize         the value is longer than max_bytes
  not_utf8         the value is not valid UTF-8
  invalid_json     the value is not JSON (includes nesting too deep and numbers too long to parse)
  not_object       the JSON is not an object
  missing_kind     no "kind" and the topic maps to no kind
  unknown_kind     "kind" is not review/social_post
  invalid_fields   a field is missing, of the wrong type or out of range (detail: field paths and error types)
  invalid_unicode  a string holds a lone surrogate (\\ud800 escapes), which cannot be re-encoded as UTF-8
  empty_text       "text" is empty or whitespace only
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import ValidationError

from worker.messages import MESSAGE_ADAPTER, Record, Rejected, Review, SocialPost

DEFAULT_TOPIC_KINDS: dict[str, str] = {"reviews": "review", "social-posts": "social_post"}


def decode(
    record: Record, *, topic_kinds: Mapping[str, str], max_bytes: int
) -> Review | SocialPost | Rejected:
    value = record.value
    if value is None:
        return Rejected("null_value", "the record has no value")
    if len(value) > max_bytes:
        return Rejected("oversize", f"{len(value)} bytes > limit of {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected("not_utf8", f"invalid UTF-8 at byte {exc.start}", type(exc).__name__)
    try:
        obj = json.loads(text.removeprefix("\ufeff"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, int digit limit, nesting too deep
        return Rejected("invalid_json", _json_detail(exc), type(exc).__name__)
    if not isinstance(obj, dict):
        return Rejected("not_object", f"JSON {type(obj).__name__} instead of an object")
    if "kind" not in obj:
        kind = topic_kinds.get(record.topic)
        if kind is None:
            return Rejected("missing_kind", f'no "kind" and topic {record.topic!r} maps to no kind')
        obj["kind"] = kind
    if isinstance(obj.get("text"), str) and not obj["text"].strip():
        return Rejected("empty_text", "text is empty or whitespace only")
    try:
        return MESSAGE_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        return _rejected_for(exc)


def _json_detail(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nesting too deep"
    return str(exc).split(":")[0][
        :200
    ]  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"


def _rejected_for(exc: ValidationError) -> Rejected:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    types = {e["type"] for e in errors}
    if "union_tag_invalid" in types:
        return Rejected("unknown_kind", '"kind" must be "review" or "social_post"', type(exc).__name__)
    # Only field paths and error codes: pydantic's messages may quote the input.
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or '(root)'}: {e['type']}" for e in errors)
    # Strict str validation refuses lone surrogates ("\\ud800" escapes): they cannot be re-encoded as UTF-8.
    reason = "invalid_unicode" if "string_unicode" in types else "invalid_fields"
    return Rejected(reason, detail[:500], type(exc).__name__)
