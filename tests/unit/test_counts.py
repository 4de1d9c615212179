"""Pure logic of the Redis counts: bucket maths, windows, key names and escaping, the Lua argument."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from worker import keys
from worker.counts import (
    MOOD_INDEX_SIZE,
    MOOD_THRESHOLD,
    Tally,
    bucket_expire_at_ms,
    bucket_start,
    mood_label,
    pack_apply,
    parse_window,
    series_steps,
    window_buckets,
)

NOW_MS = 1_700_000_040_000  # 2023-11-14T22:14:00Z, a multiple of 60 s


def pack(tallies: list[Tally], next_offsets: dict[tuple[str, int], int]) -> tuple[list[str], str]:
    return pack_apply(
        tallies, next_offsets, prefix="sentiment", bucket_s=60, retention_s=3600, mood_size=5, now_ms=NOW_MS
    )


def tally(offset: int = 0, **kw: object) -> Tally:
    base = Tally(
        topic="in",
        partition=0,
        offset=offset,
        kind="review",
        source="yelp",
        label="positive",
        score=0.75,
        ts_ms=NOW_MS + 1_500,
        conversation_id=None,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("1h", 3600), ("2d", 172_800), ("90", 90), (" 5m ", 300), ("007s", 7)],
)
def test_parse_window_accepts(text: str, seconds: int) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "15x", "1.5h", "-5m", "0s", "0", "15 m", "1h30m", "15M", "1w"])
def test_parse_window_rejects_with_one_line_message(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_window(text)
    assert "\n" not in str(info.value)
    assert "window" in str(info.value)


@pytest.mark.parametrize(
    ("ts_ms", "bucket_s", "start"),
    [
        (0, 60, 0),
        (59_999, 60, 0),
        (60_000, 60, 60),
        (NOW_MS + 59_999, 60, NOW_MS // 1000),
        (NOW_MS + 1, 300, (NOW_MS // 1000) // 300 * 300),
        (-1, 60, -60),  # before 1970: floor, not truncation towards zero
        (1_234, 1, 1),
    ],
)
def test_bucket_start(ts_ms: int, bucket_s: int, start: int) -> None:
    assert bucket_start(ts_ms, bucket_s) == start


@pytest.mark.parametrize(
    ("now_ms", "window_s", "bucket_s", "expected"),
    [
        # now exactly on a boundary: the bucket starting at now holds "now", the window's oldest
        # millisecond is now - 60 s + 1 ms, which lies in the previous bucket.
        (120_000, 60, 60, [60, 120]),
        (120_001, 60, 60, [60, 120]),
        (179_999, 60, 60, [120]),
        (179_999, 120, 60, [60, 120]),
        (600_000, 300, 60, [300, 360, 420, 480, 540, 600]),
        (600_000, 30, 60, [540, 600]),
        (599_999, 30, 60, [540]),
    ],
)
def test_window_buckets(now_ms: int, window_s: int, bucket_s: int, expected: list[int]) -> None:
    assert list(window_buckets(now_ms, window_s, bucket_s)) == expected


def test_window_buckets_overlap_exactly_the_window() -> None:
    # Brute force: bucket [b, b + bucket_s) overlaps (now - w, now] iff some integer ms lies in both.
    for now_ms in (0, 1, 59_999, 60_000, 61_234, 3_600_000, 3_599_999):
        for window_s in (1, 30, 60, 61, 3600):
            for bucket_s in (1, 7, 60, 300):
                got = set(window_buckets(now_ms, window_s, bucket_s))
                lo, hi = now_ms - window_s * 1000, now_ms
                candidates = range(bucket_start(lo, bucket_s) - bucket_s, hi // 1000 + bucket_s, bucket_s)
                want = {b for b in candidates if b * 1000 <= hi and (b + bucket_s) * 1000 - 1 > lo}
                assert got == want, (now_ms, window_s, bucket_s)


@pytest.mark.parametrize(
    ("bucket", "now_ms", "expected_ms"),
    [
        (NOW_MS // 1000, NOW_MS, NOW_MS + (60 + 3600) * 1000),  # current bucket: end + retention
        (NOW_MS // 1000 - 3600, NOW_MS, NOW_MS + 60_000),  # old bucket: expires soon
        (NOW_MS // 1000 - 3660, NOW_MS, NOW_MS),  # past retention: already due
        (NOW_MS // 1000 + 10**6, NOW_MS, NOW_MS + (3600 + 60) * 1000),  # far future: capped
    ],
)
def test_bucket_expiry(bucket: int, now_ms: int, expected_ms: int) -> None:
    assert bucket_expire_at_ms(bucket, bucket_s=60, retention_s=3600, now_ms=now_ms) == expected_ms


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("yelp", "yelp"),
        ("a:b", "a%3Ab"),
        ("{tag}", "%7Btag%7D"),
        ("100%", "100%25"),
        ("%3A", "%253A"),  # an already-escaped-looking value stays distinct from ":"
        ("line\nbreak\x00\x7f", "line%0Abreak%00%7F"),
        ("café 😀 /x", "café 😀 /x"),
        ("", ""),
    ],
)
def test_escape_part_round_trips(raw: str, escaped: str) -> None:
    assert keys.escape_part(raw) == escaped
    assert keys.unescape_part(escaped) == raw
    assert not set(":{}") & set(keys.escape_part(raw))


def test_key_names() -> None:
    assert keys.counts_all_key("sentiment", 60, 120) == "{sentiment}:counts:60:all:120"
    assert keys.counts_kind_key("sentiment", 60, "review", 120) == "{sentiment}:counts:60:kind:review:120"
    assert (
        keys.counts_source_key("s", 300, "social_post", "x:y", 0)
        == "{s}:counts:300:source:social_post:x%3Ay:0"
    )
    assert keys.watermarks_key("sentiment") == "{sentiment}:watermarks"
    assert keys.mood_key("sentiment", "c:1") == "{sentiment}:mood:c%3A1"
    assert keys.mood_recent_key("sentiment", "c:1") == "{sentiment}:mood:c%3A1:recent"
    assert keys.mood_channel("sentiment") == "{sentiment}:mood-updates"


def test_conversation_ids_cannot_collide_with_recent_lists() -> None:
    # "a:recent" must not name the same key as the recent list of conversation "a".
    assert keys.mood_key("p", "a:recent") != keys.mood_recent_key("p", "a")


@pytest.mark.parametrize(("topic", "partition"), [("in", 0), ("my.topic-1_x", 17), ("odd:name", 3)])
def test_watermark_field_round_trips(topic: str, partition: int) -> None:
    assert keys.parse_watermark_field(keys.watermark_field(topic, partition)) == (topic, partition)


@pytest.mark.parametrize("field", ["in", "in:", "in:x", ":-1"])
def test_parse_watermark_field_rejects(field: str) -> None:
    with pytest.raises(ValueError):
        keys.parse_watermark_field(field)


@pytest.mark.parametrize("prefix", ["", "a}b", "{a", "a:b", "a b"])
def test_bad_prefix_rejected(prefix: str) -> None:
    with pytest.raises(ValueError):
        keys.tag(prefix)


def test_pack_apply_layout() -> None:
    tallies = [
        tally(5, conversation_id="c1"),
        tally(6, kind="social_post", source="x", label="negative", score=-0.5, conversation_id="c1"),
        tally(7, partition=1, ts_ms=NOW_MS - 60_000, conversation_id="c2"),
    ]
    key_list, arg = pack(tallies, {("in", 0): 7, ("in", 1): 8, ("in", 2): 3})
    p = json.loads(arg)
    b = NOW_MS // 1000
    assert key_list == [
        "{sentiment}:watermarks",
        f"{{sentiment}}:counts:60:all:{b}",
        f"{{sentiment}}:counts:60:kind:review:{b}",
        f"{{sentiment}}:counts:60:source:review:yelp:{b}",
        "{sentiment}:mood:c1",
        "{sentiment}:mood:c1:recent",
        f"{{sentiment}}:counts:60:kind:social_post:{b}",
        f"{{sentiment}}:counts:60:source:social_post:x:{b}",
        f"{{sentiment}}:counts:60:all:{b - 60}",
        f"{{sentiment}}:counts:60:kind:review:{b - 60}",
        f"{{sentiment}}:counts:60:source:review:yelp:{b - 60}",
        "{sentiment}:mood:c2",
        "{sentiment}:mood:c2:recent",
        "{sentiment}:moods",
    ]
    assert p["wm"] == [["in:0", 7], ["in:1", 8], ["in:2", 3]]
    # Lua indexes are 1-based: KEYS[2] is the first bucket key.
    assert p["t"] == [
        [1, 5, "positive", [2, 3, 4], 1, 0.75],
        [1, 6, "negative", [2, 7, 8], 1, -0.5],
        [2, 7, "positive", [9, 10, 11], 2, 0.75],
    ]
    assert p["m"] == [["c1", 5, 6], ["c2", 12, 13]]
    expire_now, expire_prev = (b + 60 + 3600) * 1000, (b + 3600) * 1000
    assert p["kx"] == {
        **{str(i): expire_now for i in (2, 3, 4, 7, 8)},
        **{str(i): expire_prev for i in (9, 10, 11)},
    }
    assert (p["ms"], p["ttl"], p["now"], p["ch"]) == (5, 3_600_000, NOW_MS, "{sentiment}:mood-updates")
    assert math.isclose(p["a"], 2 / 6)
    assert (p["th"], p["mi"], p["mx"]) == (MOOD_THRESHOLD, 14, MOOD_INDEX_SIZE)


def test_pack_apply_without_conversations_has_no_mood_index() -> None:
    key_list, arg = pack([tally(0), tally(1)], {("in", 0): 2})
    assert "{sentiment}:moods" not in key_list
    assert json.loads(arg)["mi"] == 0


@pytest.mark.parametrize(
    ("score", "label"),
    [
        (-1.0, "negative"),
        (-0.72, "negative"),
        (-0.25, "negative"),
        (-0.2499, "neutral"),
        (0.0, "neutral"),
        (0.2499, "neutral"),
        (0.25, "positive"),
        (1.0, "positive"),
    ],
)
def test_mood_label_thresholds(score: float, label: str) -> None:
    assert mood_label(score) == label


def test_one_cheerful_reply_does_not_flip_a_negative_mood() -> None:
    # The example: a conversation at -0.72 (mood_size 20), then one reply scored 0.9.
    alpha = 2 / 21
    score = -0.72 + alpha * (0.9 + 0.72)
    assert mood_label(score) == "negative"


def test_series_steps_group_buckets_at_step_multiples() -> None:
    now = NOW_MS + 90_000  # 1.5 min into a 60 s bucket: the window (now - 5 min, now] touches 6 buckets
    steps = series_steps(now, 300, 120, 60)
    b = NOW_MS // 1000
    assert [x for _, bs in steps for x in bs] == list(window_buckets(now, 300, 60))
    assert all(start % 120 == 0 and all(start <= x < start + 120 for x in bs) for start, bs in steps)
    assert steps[-1][1][-1] == b + 60
    assert series_steps(now, 300, 60, 60) == [(x, [x]) for x in window_buckets(now, 300, 60)]


@pytest.mark.parametrize(
    ("window_s", "step_s", "message"),
    [(300, 90, "multiple"), (300, 0, "multiple"), (300, 600, "longer than the window")],
)
def test_series_steps_rejects(window_s: int, step_s: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        series_steps(NOW_MS, window_s, step_s, 60)


def test_pack_apply_tallies_sharing_a_bucket_share_its_keys() -> None:
    old = NOW_MS - 2 * 3600 * 1000  # past retention: no bucket keys, however many share it
    key_list, arg = pack(
        [tally(1), tally(2, score=-0.5, label="negative"), tally(3, ts_ms=old), tally(4, ts_ms=old)],
        {("in", 0): 5},
    )
    p = json.loads(arg)
    assert len(key_list) == 4
    assert [t[3] for t in p["t"]] == [[2, 3, 4], [2, 3, 4], [], []]
    assert set(p["kx"]) == {"2", "3", "4"}


def test_pack_apply_dead_letter_only_partition_and_expired_bucket() -> None:
    # Past retention: counts in no bucket, but still moves the watermark.
    old = tally(0, ts_ms=NOW_MS - 2 * 3600 * 1000)
    key_list, arg = pack([old], {("in", 0): 1, ("dlq-only", 4): 99})
    p = json.loads(arg)
    assert key_list == ["{sentiment}:watermarks"]
    assert p["t"] == [[1, 0, "positive", [], 0, 0.75]]
    assert p["kx"] == {}
    assert p["wm"] == [["in:0", 1], ["dlq-only:4", 99]]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (tally(label="happy"), "label"),
        (tally(kind="tweet"), "kind"),
        (tally(score=1.5), "score"),
        (tally(score=math.nan), "score"),
        (tally(offset=-1), "position"),
        (tally(partition=1), "no entry in next_offsets"),
        (tally(offset=10), "not below next offset"),
        (tally(source="\ud800"), "UTF-8"),
        (tally(conversation_id="\udfff"), "UTF-8"),
        (tally(ts_ms=2**60), "ts_ms"),
    ],
)
def test_pack_apply_rejects_bad_tallies(bad: Tally, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pack([tally(0), bad], {("in", 0): 10})


def test_pack_apply_keeps_user_text_in_the_argument_intact() -> None:
    t = tally(0, source='a:"b"{c}', conversation_id="ü:1 😀")
    key_list, arg = pack([t], {("in", 0): 1})
    assert json.loads(arg)["m"][0][0] == "ü:1 😀"  # published as is
    assert "{sentiment}:mood:ü%3A1 😀" in key_list
    assert all(k.startswith("{sentiment}:") and k.count("{") == 1 for k in key_list)
