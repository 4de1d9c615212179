"""Rolling sentiment counts and per-conversation moods in Redis, exact under redelivery.

One batch is applied by one Lua script (counts.lua) that also moves a per-partition offset watermark, so the
counts and the watermark change together or not at all and a redelivered record is never counted twice.
Keys, expiry times and the script's argument are computed here in pure functions; key names live in keys.py.
Windows and series are read by a second, read-only script (counts_read.lua) that sums the buckets of each
step inside Redis, so a day of minute buckets costs one call and three numbers per step.

Buckets: a message counts in the bucket [start, start + bucket_s) holding its timestamp (epoch seconds,
start a multiple of bucket_s). A bucket key expires retention_s after the bucket's end, but never later than
retention_s + bucket_s from now, so a bogus far-future created_at cannot pin keys in Redis.

Mood score: an exponentially weighted moving average of Tally.score with alpha = 2 / (mood_size + 1) (the
usual "span" EWMA: about as reactive as a mean of the last mood_size scores); the first message sets it.
Mood label: from that score, <= -MOOD_THRESHOLD negative, >= MOOD_THRESHOLD positive, else neutral; the
latest message's own label is last_label. One cheerful reply (score 0.9) moves a -0.72 conversation
(mood_size 20) to about -0.57: still negative, as a chatbot should read it.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis

from worker import keys

LABELS = ("negative", "neutral", "positive")
KINDS = ("review", "social_post")
_MAX_INT = 2**53  # Lua numbers are doubles; offsets and times beyond this would lose precision.
# A score of p(positive) - p(negative) this far from 0 is a mood; nearer, the conversation reads neutral.
# 0.25 is a quarter of the range: a neutral-leaning model output (scores near 0) stays neutral, while an
# EWMA of clearly one-sided messages reaches it after two or three of them.
MOOD_THRESHOLD = 0.25
MOOD_INDEX_SIZE = 1000  # conversations kept in the recently-updated index (keys.mood_index_key)


@dataclass(frozen=True, slots=True)
class Tally:
    """One classified message's contribution."""

    topic: str
    partition: int
    offset: int
    kind: str  # "review" | "social_post"
    source: str  # review.source or social_post.platform
    label: str  # "negative" | "neutral" | "positive"
    score: float  # p(positive) - p(negative), in [-1, 1]
    ts_ms: int  # message created_at in epoch ms, else the Kafka record timestamp
    conversation_id: str | None


# --------------------------------------------------------------------------------------------- pure logic

_WINDOW_RE = re.compile(r"(\d+)([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(text: str) -> int:
    """Parse "15m" -> 900. Units s, m, h, d; a bare number is seconds. Bad input: ValueError, one line."""
    m = _WINDOW_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"window must look like 30s, 15m, 1h or 2d, got {text!r}")
    seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"window must be positive, got {text!r}")
    return seconds


def bucket_start(ts_ms: int, bucket_s: int) -> int:
    """Start (epoch seconds) of the bucket holding ts_ms."""
    return ts_ms // (bucket_s * 1000) * bucket_s


def window_buckets(now_ms: int, window_s: int, bucket_s: int) -> range:
    """Starts of the buckets overlapping the window (now - window_s, now], oldest first."""
    first = bucket_start(now_ms - window_s * 1000 + 1, bucket_s)
    return range(first, bucket_start(now_ms, bucket_s) + 1, bucket_s)


def mood_label(score: float, threshold: float = MOOD_THRESHOLD) -> str:
    """The mood a score stands for; counts.lua applies the same rule with the same threshold."""
    if score <= -threshold:
        return "negative"
    if score >= threshold:
        return "positive"
    return "neutral"


def series_steps(now_ms: int, window_s: int, step_s: int, bucket_s: int) -> list[tuple[int, list[int]]]:
    """(step start, bucket starts in it) for the buckets overlapping (now - window_s, now], oldest first.

    Steps start at multiples of step_s, so a chart polled every few seconds keeps its x positions; the first
    step may hold fewer buckets than the others.
    """
    if step_s <= 0 or step_s % bucket_s:
        raise ValueError(f"step must be a positive multiple of the bucket width ({bucket_s}s), got {step_s}s")
    if step_s > window_s:
        raise ValueError(f"step ({step_s}s) must not be longer than the window ({window_s}s)")
    steps: dict[int, list[int]] = {}
    for bucket in window_buckets(now_ms, window_s, bucket_s):
        steps.setdefault(bucket // step_s * step_s, []).append(bucket)
    return list(steps.items())


def bucket_expire_at_ms(bucket: int, *, bucket_s: int, retention_s: int, now_ms: int) -> int:
    return min((bucket + bucket_s + retention_s) * 1000, now_ms + (retention_s + bucket_s) * 1000)


def check_tally(t: Tally) -> None:
    """Raise ValueError if the tally cannot be counted (a caller bug, so nothing of the batch is written)."""
    if t.kind not in KINDS:
        raise ValueError(f"tally kind must be one of {KINDS}, got {t.kind!r}")
    if t.label not in LABELS:
        raise ValueError(f"tally label must be one of {LABELS}, got {t.label!r}")
    if not (isinstance(t.score, int | float) and math.isfinite(t.score) and -1.0 <= t.score <= 1.0):
        raise ValueError(f"tally score must be a number in [-1, 1], got {t.score!r}")
    if not (0 <= t.offset < _MAX_INT and t.partition >= 0):
        raise ValueError(f"bad tally position {t.topic}:{t.partition}@{t.offset}")
    if not abs(t.ts_ms) < _MAX_INT:
        raise ValueError(f"tally ts_ms out of range: {t.ts_ms!r}")
    for name, text in (
        ("topic", t.topic),
        ("source", t.source),
        ("conversation_id", t.conversation_id or ""),
    ):
        if not _utf8(text):
            raise ValueError(f"tally {name} is not valid UTF-8 text (lone surrogate?)")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def pack_apply(
    tallies: Sequence[Tally],
    next_offsets: Mapping[tuple[str, int], int],
    *,
    prefix: str,
    bucket_s: int,
    retention_s: int,
    mood_size: int,
    now_ms: int,
) -> tuple[list[str], str]:
    """Build (KEYS, ARGV[1]) for counts.lua. Validates everything; raises ValueError on bad input.

    Every tally's partition must be in next_offsets with a next offset above the tally's offset. Tallies whose
    bucket is already past retention are still applied (watermark, mood) but touch no bucket key.
    """
    wm_index: dict[tuple[str, int], int] = {}
    wm: list[list[Any]] = []
    for (topic, partition), nxt in next_offsets.items():
        if not (partition >= 0 and 0 <= nxt < _MAX_INT):
            raise ValueError(f"bad next offset {topic}:{partition} -> {nxt!r}")
        wm_index[(topic, partition)] = len(wm) + 1
        wm.append([keys.watermark_field(topic, partition), nxt])

    key_list = [keys.watermarks_key(prefix)]
    key_index: dict[str, int] = {}

    def index(key: str) -> int:
        if key not in key_index:
            key_list.append(key)
            key_index[key] = len(key_list)  # Lua KEYS are 1-based
        return key_index[key]

    expiry: dict[str, int] = {}
    moods: list[list[Any]] = []
    mood_index: dict[str, int] = {}
    packed: list[list[Any]] = []
    bucket_keys_of: dict[tuple[int, str, str], list[int]] = {}
    for t in tallies:
        check_tally(t)
        w = wm_index.get((t.topic, t.partition))
        if w is None:
            raise ValueError(f"tally {t.topic}:{t.partition}@{t.offset} has no entry in next_offsets")
        if t.offset >= wm[w - 1][1]:
            raise ValueError(f"tally offset {t.offset} is not below next offset {wm[w - 1][1]}")
        bucket = bucket_start(t.ts_ms, bucket_s)
        # Most tallies of a batch share a bucket, kind and source: build their keys once.
        bucket_keys = bucket_keys_of.get((bucket, t.kind, t.source))
        if bucket_keys is None:
            bucket_keys = []
            expire_at = bucket_expire_at_ms(bucket, bucket_s=bucket_s, retention_s=retention_s, now_ms=now_ms)
            if expire_at > now_ms:
                for key in (
                    keys.counts_all_key(prefix, bucket_s, bucket),
                    keys.counts_kind_key(prefix, bucket_s, t.kind, bucket),
                    keys.counts_source_key(prefix, bucket_s, t.kind, t.source, bucket),
                ):
                    i = index(key)
                    bucket_keys.append(i)
                    expiry[str(i)] = expire_at
            bucket_keys_of[(bucket, t.kind, t.source)] = bucket_keys
        m = 0
        if t.conversation_id:
            m = mood_index.get(t.conversation_id, 0)
            if not m:
                moods.append(
                    [
                        t.conversation_id,
                        index(keys.mood_key(prefix, t.conversation_id)),
                        index(keys.mood_recent_key(prefix, t.conversation_id)),
                    ]
                )
                m = mood_index[t.conversation_id] = len(moods)
        packed.append([w, t.offset, t.label, bucket_keys, m, float(t.score)])
    index_key = index(keys.mood_index_key(prefix)) if moods else 0

    payload = {
        "wm": wm,
        "t": packed,
        "kx": expiry,
        "m": moods,
        "ms": mood_size,
        "a": 2.0 / (mood_size + 1),
        "ttl": retention_s * 1000,
        "now": now_ms,
        "ch": keys.mood_channel(prefix),
        "th": MOOD_THRESHOLD,
        "mi": index_key,
        "mx": MOOD_INDEX_SIZE,
    }
    return key_list, json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --------------------------------------------------------------------------------------------- Redis I/O


class CountStore:
    """Thin Redis wrapper: one Lua call per batch to write, plain reads for windows, moods and watermarks."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "sentiment",
        bucket_s: int = 60,
        retention_s: int = 7 * 24 * 3600,
        mood_size: int = 20,
    ) -> None:
        keys.check_prefix(prefix)
        if bucket_s <= 0 or retention_s <= 0 or mood_size <= 0:
            raise ValueError("bucket_s, retention_s and mood_size must be positive")
        self.client = client
        self.prefix = prefix
        self.bucket_s = bucket_s
        self.retention_s = retention_s
        self.mood_size = mood_size
        source = resources.files("worker").joinpath("counts.lua").read_text(encoding="utf-8")
        # register_script runs EVALSHA and reloads the script by itself after a Redis restart (NOSCRIPT).
        self._script = client.register_script(source)
        self._read_script = client.register_script(
            resources.files("worker").joinpath("counts_read.lua").read_text(encoding="utf-8")
        )

    def apply(self, tallies: Sequence[Tally], next_offsets: Mapping[tuple[str, int], int]) -> int:
        """Count the tallies not counted before and advance the watermarks, atomically; see counts.lua.

        For each (topic, partition) in next_offsets, tallies below the stored watermark are skipped; the
        watermark becomes max(stored, next offset), also for partitions without tallies (all dead-lettered).
        Returns how many tallies were applied. Raises ValueError on bad input (nothing written) and lets
        Redis errors propagate: the caller must not commit Kafka offsets then.
        """
        if not next_offsets:
            if tallies:
                raise ValueError("tallies given without next_offsets")
            return 0
        key_list, arg = pack_apply(
            tallies,
            next_offsets,
            prefix=self.prefix,
            bucket_s=self.bucket_s,
            retention_s=self.retention_s,
            mood_size=self.mood_size,
            now_ms=time.time_ns() // 1_000_000,
        )
        return int(self._script(keys=key_list, args=[arg]))

    def watermarks(self) -> dict[tuple[str, int], int]:
        """Next offset not yet counted, per (topic, partition): compare with Kafka's committed offsets."""
        raw = self.client.hgetall(keys.watermarks_key(self.prefix))
        return {keys.parse_watermark_field(_text(f)): int(_text(v)) for f, v in raw.items()}

    def _check_window(self, window_s: int, kind: str | None) -> None:
        if window_s <= 0:
            raise ValueError(f"window must be positive, got {window_s}")
        if window_s > self.retention_s:
            raise ValueError(f"window of {window_s}s is longer than the retention of {self.retention_s}s")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def _sum_counts(
        self, groups: Sequence[Sequence[int]], kind: str | None, source: str | None
    ) -> list[tuple[int, int, int]]:
        """(negative, neutral, positive) summed over each group of bucket starts, in one Redis call."""
        p, b = self.prefix, self.bucket_s
        key_list: list[str] = []
        sizes: list[int] = []
        for group in groups:
            before = len(key_list)
            if source is not None:
                kinds = [kind] if kind else KINDS
                key_list += [keys.counts_source_key(p, b, k, source, x) for x in group for k in kinds]
            elif kind is not None:
                key_list += [keys.counts_kind_key(p, b, kind, x) for x in group]
            else:
                key_list += [keys.counts_all_key(p, b, x) for x in group]
            sizes.append(len(key_list) - before)
        flat = [int(v) for v in self._read_script(keys=key_list, args=sizes)]
        return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]

    def window(
        self,
        window_s: int,
        *,
        kind: str | None = None,
        source: str | None = None,
        now_ms: int | None = None,
    ) -> dict[str, int]:
        """Label counts summed over the buckets overlapping (now - window_s, now].

        source without kind sums that source over both kinds. A window longer than the retention is an error
        rather than a silently partial answer.
        """
        self._check_window(window_s, kind)
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        (row,) = self._sum_counts([window_buckets(now, window_s, self.bucket_s)], kind, source)
        totals = dict(zip(LABELS, row, strict=True))
        return {"window_s": window_s, **totals, "total": sum(totals.values())}

    def series(
        self,
        window_s: int,
        step_s: int,
        *,
        kind: str | None = None,
        source: str | None = None,
        now_ms: int | None = None,
    ) -> dict[str, Any]:
        """The buckets of window() grouped into steps of step_s (a multiple of bucket_s), oldest first.

        {"window_s", "step_s", "points": [{"start" (epoch s), "negative", "neutral", "positive", "total"}],
        "negative", "neutral", "positive", "total"}: the totals equal window() over the same window.
        """
        self._check_window(window_s, kind)
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        steps = series_steps(now, window_s, step_s, self.bucket_s)
        rows = self._sum_counts([bs for _, bs in steps], kind, source)
        points = []
        totals = dict.fromkeys(LABELS, 0)
        for (start, _), (neg, neu, pos) in zip(steps, rows, strict=True):
            points.append(
                {"start": start, "negative": neg, "neutral": neu, "positive": pos, "total": neg + neu + pos}
            )
            totals["negative"] += neg
            totals["neutral"] += neu
            totals["positive"] += pos
        return {
            "window_s": window_s,
            "step_s": step_s,
            "points": points,
            **totals,
            "total": sum(totals.values()),
        }

    def mood(self, conversation_id: str) -> dict[str, Any] | None:
        """{"conversation_id", "label" (the mood, from the score; see MOOD_THRESHOLD), "last_label" (the
        latest message's), "score" (EWMA, see module doc), "n", "counts", "recent" (labels, newest first, at
        most mood_size), "updated_ms"}; None if unknown or expired."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(keys.mood_key(self.prefix, conversation_id))
        pipe.lrange(keys.mood_recent_key(self.prefix, conversation_id), 0, self.mood_size - 1)
        raw, recent = pipe.execute()
        return _mood(conversation_id, raw, recent)

    def recent_moods(self, limit: int) -> list[dict[str, Any]]:
        """The moods of the most recently updated conversations (at most limit, newest first)."""
        if not 1 <= limit <= MOOD_INDEX_SIZE:
            raise ValueError(f"limit must be in 1..{MOOD_INDEX_SIZE}, got {limit}")
        members = self.client.zrevrange(keys.mood_index_key(self.prefix), 0, limit - 1)
        ids = [_text(x) for x in members if isinstance(x, bytes | str)]  # no WITHSCORES: plain members
        pipe = self.client.pipeline(transaction=True)
        for conversation_id in ids:
            pipe.hgetall(keys.mood_key(self.prefix, conversation_id))
            pipe.lrange(keys.mood_recent_key(self.prefix, conversation_id), 0, self.mood_size - 1)
        rows = pipe.execute() if ids else []
        moods = (_mood(c, rows[2 * i], rows[2 * i + 1]) for i, c in enumerate(ids))
        return [m for m in moods if m is not None]  # an expired hash can outlive its index entry briefly


def _mood(conversation_id: str, raw: Mapping[Any, Any], recent: Sequence[Any]) -> dict[str, Any] | None:
    if not raw:
        return None
    h = {_text(k): _text(v) for k, v in raw.items()}
    score = float(h["score"])
    labels = [_text(x) for x in recent]
    # Derived rather than read, so that a hash written before last_label existed (its "label" was the latest
    # message's), or by an old worker during a rolling upgrade, reads right too; counts.lua rewrites both.
    return {
        "conversation_id": conversation_id,
        "label": mood_label(score),
        "last_label": labels[0] if labels else h.get("last_label", h["label"]),
        "score": score,
        "n": int(h["n"]),
        "counts": {lab: int(h.get(lab, 0)) for lab in LABELS},
        "recent": labels,
        "updated_ms": int(h["updated_ms"]),
    }
