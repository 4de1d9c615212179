"""Ground truth: messages with known ids (good) and known keys with expected dead-letter reasons (bad)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaProducer

WORDS = (
    *("great", "awful", "fine", "love", "hate", "ok", "slow", "fast", "broken", "perfect", "refund", "never"),
    *("delivery", "meh", "wow", "\U0001f600", "\U0001f621", "\u05de\u05e6\u05d5\u05d9\u05df", "\u0645\u0645"),
)

Record = tuple[str, bytes | None, bytes | None]  # topic, key, value


@dataclass
class Traffic:
    records: list[Record] = field(default_factory=list)
    good: dict[str, str] = field(default_factory=dict)  # id -> kind
    bad: dict[str, str] = field(default_factory=dict)  # key -> expected DLQ reason ("" = any reason)

    def extend(self, other: Traffic) -> None:
        self.records.extend(other.records)
        self.good.update(other.good)
        self.bad.update(other.bad)


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 25)))


def good_messages(reviews: str, posts: str, n: int, *, tag: str, seed: int = 1) -> Traffic:
    """n valid messages alternating between the two topics; ids are unique per tag."""
    rng = random.Random(seed)
    now_ms = time.time_ns() // 1_000_000
    t = Traffic()
    for i in range(n):
        msg: dict[str, Any]
        if i % 2:
            msg = {
                "id": f"{tag}-r{i}",
                "text": _text(rng),
                "source": rng.choice(["shop", "web"]),
                "rating": 1 + i % 5,
            }
            topic, kind = reviews, "review"
        else:
            msg = {"id": f"{tag}-p{i}", "text": _text(rng), "platform": "x", "conversation_id": f"c{i % 7}"}
            topic, kind = posts, "social_post"
        msg["created_at"] = now_ms - rng.randint(0, 60_000)
        t.good[msg["id"]] = kind
        t.records.append((topic, msg["id"].encode(), json.dumps(msg, ensure_ascii=False).encode()))
    return t


def _nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


def poison_messages(reviews: str, posts: str, *, tag: str, max_bytes: int) -> Traffic:
    """Every kind of bad input (dead-lettered, with the reason) and odd-but-valid input (classified)."""
    post = {"platform": "x"}
    bad: list[tuple[bytes | None, str]] = [
        (b"\xff\xfe\x00 not utf-8", "not_utf8"),
        (b"{not json", "invalid_json"),
        (b'{"id": "x", "text": "unterminated', "invalid_json"),
        (json.dumps({"id": "x", **post}).encode(), "invalid_fields"),  # missing text
        (json.dumps({"id": "x", "text": 123, **post}).encode(), "invalid_fields"),
        (json.dumps({"id": 7, "text": "fine", **post}).encode(), "invalid_fields"),
        (
            json.dumps({"id": "x", "text": "fine", "source": "s", "rating": "5", "kind": "review"}).encode(),
            "invalid_fields",
        ),
        (
            json.dumps({"id": "x", "text": "fine", "source": "s", "rating": True, "kind": "review"}).encode(),
            "invalid_fields",
        ),
        (json.dumps({"id": "x", "text": "", **post}).encode(), "empty_text"),
        (json.dumps({"id": "x", "text": " \t\n ", **post}).encode(), "empty_text"),
        (b"", "invalid_json"),
        (None, "null_value"),
        (b"[1, 2, 3]", "not_object"),
        (b'"just a string"', "not_object"),
        (b"null", "not_object"),
        (_nested(2000), "invalid_json"),  # deeper than the JSON parser recurses
        (b'{"a":' * 2000 + b"1" + b"}" * 2000, "invalid_json"),
        (json.dumps({"id": "x", "text": "fine", "kind": "tweet"}).encode(), "unknown_kind"),
        (b'{"id": "x", "text": "lone \\ud800 surrogate", "platform": "x"}', "invalid_unicode"),
        (json.dumps({"id": "x", "text": "y" * max_bytes, **post}).encode(), "oversize"),
    ]
    t = Traffic()
    for j, (value, reason) in enumerate(bad):
        key = f"{tag}-bad{j}"
        t.bad[key] = reason
        t.records.append((posts if j % 2 else reviews, key.encode(), value))
    odd = [
        "control \x00\x01\x07\x1b[31m chars \x7f",
        "emoji \U0001f600\U0001f621\U0001f44d\U0001f3fd and ZWJ \U0001f469\u200d\U0001f4bb",
        "RTL \u202e\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u202c mixed",
        "\ufeffbom and \u00a0nbsp and combining e\u0301",
        "x",
    ]
    for j, text in enumerate(odd):
        msg = {"id": f"{tag}-odd{j}", "text": text, **post}
        t.good[msg["id"]] = "social_post"
        t.records.append((posts, msg["id"].encode(), json.dumps(msg, ensure_ascii=j % 2 == 0).encode()))
    return t


def produce(bootstrap: str, records: Iterable[Record], *, shuffle_seed: int | None = None) -> int:
    items = list(records)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(items)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4 * 1024 * 1024)
    try:
        for topic, key, value in items:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)
    return len(items)
