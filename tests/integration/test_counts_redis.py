"""CountStore against a real redis-server: exact counts under redelivery, windows, moods, TTLs, atomicity."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker import keys
from worker.counts import MOOD_INDEX_SIZE, CountStore, Tally, mood_label, pack_apply

NOW_MS = time.time_ns() // 1_000_000
MINUTE_MS = 60_000
LABELS = ("negative", "neutral", "positive")


@pytest.fixture
def client(redis_clean_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_clean_url)
    yield c
    c.close()


@pytest.fixture
def store(client: redis.Redis) -> CountStore:
    return CountStore(client, bucket_s=60, retention_s=3600, mood_size=3)


def tally(offset: int, **kw: object) -> Tally:
    base = Tally(
        topic="in",
        partition=0,
        offset=offset,
        kind="review",
        source="yelp",
        label=LABELS[offset % 3],
        score=0.5,
        ts_ms=NOW_MS,
        conversation_id=None,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def run(n: int, start: int = 0, **kw: object) -> list[Tally]:
    return [tally(i, **kw) for i in range(start, start + n)]


def test_redelivered_batch_counts_once(store: CountStore, client: redis.Redis) -> None:
    batch = run(6, conversation_id="c1")
    assert store.apply(batch, {("in", 0): 6}) == 6
    snapshot = {k: client.dump(k) for k in client.keys("*")}
    mood = store.mood("c1")

    assert store.apply(batch, {("in", 0): 6}) == 0

    assert store.window(600, now_ms=NOW_MS) == {
        "window_s": 600,
        "negative": 2,
        "neutral": 2,
        "positive": 2,
        "total": 6,
    }
    assert {k: client.dump(k) for k in client.keys("*")} == snapshot
    assert store.mood("c1") == mood
    assert store.watermarks() == {("in", 0): 6}


def test_partially_overlapping_redelivery_counts_only_new_records(store: CountStore) -> None:
    assert store.apply(run(5), {("in", 0): 5}) == 5
    # Offsets 3..7 again: 3 and 4 were counted already.
    assert store.apply(run(5, start=3), {("in", 0): 8}) == 3
    assert store.window(600, now_ms=NOW_MS)["total"] == 8
    assert store.watermarks() == {("in", 0): 8}


def test_watermarks_per_partition_and_never_backwards(store: CountStore) -> None:
    # Partition 1's records were all dead-lettered: no tallies, but its watermark still moves.
    assert store.apply(run(2), {("in", 0): 2, ("in", 1): 40, ("other", 7): 3}) == 2
    assert store.watermarks() == {("in", 0): 2, ("in", 1): 40, ("other", 7): 3}
    assert store.apply([], {("in", 1): 10}) == 0
    assert store.watermarks()[("in", 1)] == 40
    # A tally of partition 1 below its watermark is a duplicate; one of partition 0 at its watermark is new.
    assert store.apply([tally(39, partition=1), tally(2)], {("in", 1): 40, ("in", 0): 3}) == 1
    assert store.window(600, now_ms=NOW_MS)["total"] == 3


def test_window_by_kind_and_source(store: CountStore) -> None:
    batch = [
        tally(0, kind="review", source="yelp", label="positive"),
        tally(1, kind="review", source="yelp", label="negative"),
        tally(2, kind="review", source="x:y{z}", label="neutral"),
        tally(3, kind="social_post", source="yelp", label="positive"),
        tally(4, kind="social_post", source="mastodon", label="negative"),
    ]
    store.apply(batch, {("in", 0): 5})

    def w(**kw: str) -> tuple[int, int, int, int]:
        r = store.window(300, now_ms=NOW_MS, **kw)
        return r["negative"], r["neutral"], r["positive"], r["total"]

    assert w() == (2, 1, 2, 5)
    assert w(kind="review") == (1, 1, 1, 3)
    assert w(kind="social_post") == (1, 0, 1, 2)
    assert w(kind="review", source="yelp") == (1, 0, 1, 2)
    assert w(source="yelp") == (1, 0, 2, 3)  # both kinds
    assert w(source="x:y{z}") == (0, 1, 0, 1)
    assert w(source="nobody") == (0, 0, 0, 0)


def test_window_excludes_buckets_outside_it(store: CountStore) -> None:
    base = NOW_MS // MINUTE_MS * MINUTE_MS  # start of the current minute
    batch = [
        tally(0, ts_ms=base + 5),  # this minute
        tally(1, ts_ms=base - 1),  # last minute
        tally(2, ts_ms=base - 10 * MINUTE_MS),  # ten minutes ago
        tally(3, ts_ms=base + 10 * MINUTE_MS),  # ten minutes ahead (a producer's clock): not in a window yet
    ]
    store.apply(batch, {("in", 0): 4})
    now = base + 5_000
    assert store.window(60, now_ms=now)["total"] == 2  # (now - 60 s, now] reaches into last minute
    assert store.window(5, now_ms=now)["total"] == 1
    assert store.window(5, now_ms=base + 4_999)["total"] == 1  # (base - 1 ms, base + 4999 ms]
    assert store.window(5, now_ms=base + 4_998)["total"] == 2  # (base - 2 ms, ...] holds base - 1 ms
    assert store.window(5 * 60, now_ms=now)["total"] == 2
    assert store.window(15 * 60, now_ms=now)["total"] == 3
    assert store.window(15 * 60, now_ms=base + 10 * MINUTE_MS)["total"] == 3  # the oldest fell out
    assert store.window(30 * 60, now_ms=base + 10 * MINUTE_MS)["total"] == 4


def test_window_rejects_spans_beyond_retention(store: CountStore) -> None:
    with pytest.raises(ValueError, match="retention"):
        store.window(2 * 3600)
    with pytest.raises(ValueError, match="kind"):
        store.window(60, kind="tweet")


def test_keys_expire_after_retention(store: CountStore, client: redis.Redis) -> None:
    old_ts = NOW_MS - 30 * MINUTE_MS
    store.apply([tally(0, conversation_id="c1"), tally(1, ts_ms=old_ts)], {("in", 0): 2})
    bucket = NOW_MS // 1000 // 60 * 60
    now_ms = time.time_ns() // 1_000_000
    expected = (bucket + 60 + 3600) * 1000 - now_ms
    for key in (
        keys.counts_all_key("sentiment", 60, bucket),
        keys.counts_kind_key("sentiment", 60, "review", bucket),
        keys.counts_source_key("sentiment", 60, "review", "yelp", bucket),
    ):
        assert expected - 5_000 < client.pttl(key) <= expected
    old_bucket = old_ts // 1000 // 60 * 60
    old_expected = (old_bucket + 60 + 3600) * 1000 - now_ms
    assert (
        old_expected - 5_000 < client.pttl(keys.counts_all_key("sentiment", 60, old_bucket)) <= old_expected
    )
    for key in (keys.mood_key("sentiment", "c1"), keys.mood_recent_key("sentiment", "c1")):
        assert 3_600_000 - 5_000 < client.pttl(key) <= 3_600_000
    assert client.ttl(keys.watermarks_key("sentiment")) == -1  # never expires


def test_records_older_than_retention_count_nowhere_but_advance_the_watermark(
    store: CountStore, client: redis.Redis
) -> None:
    assert store.apply([tally(0, ts_ms=NOW_MS - 3 * 3600 * 1000)], {("in", 0): 1}) == 1
    assert client.keys("*") == [keys.watermarks_key("sentiment").encode()]
    assert store.watermarks() == {("in", 0): 1}


def test_mood_and_pubsub(store: CountStore, client: redis.Redis) -> None:
    pubsub = client.pubsub()
    pubsub.subscribe(keys.mood_channel("sentiment"))
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"

    first = [
        tally(0, conversation_id="c:1", label="positive", score=0.8),
        tally(1, conversation_id="c:1", label="negative", score=-0.6),
        tally(2, conversation_id="c2", label="neutral", score=0.1),
        tally(3, conversation_id=None),
    ]
    store.apply(first, {("in", 0): 4})
    messages = [pubsub.get_message(timeout=2) for _ in range(2)]
    assert pubsub.get_message(timeout=0.2) is None  # one message per updated conversation, not per tally
    published = {json.loads(m["data"])["conversation_id"]: json.loads(m["data"]) for m in messages if m}

    alpha = 2 / (3 + 1)
    score_c1 = 0.8 + alpha * (-0.6 - 0.8)
    assert published.keys() == {"c:1", "c2"}
    # 0.8 then -0.6: the mood is still 0.1 (neutral) although the latest message was negative.
    assert published["c:1"]["label"] == "neutral"
    assert published["c:1"]["last_label"] == "negative"
    assert published["c2"]["label"] == "neutral"
    assert published["c:1"]["n"] == 2
    assert published["c:1"]["score"] == pytest.approx(score_c1)
    assert published["c2"]["score"] == pytest.approx(0.1)

    mood = store.mood("c:1")
    assert mood is not None
    assert mood["score"] == pytest.approx(score_c1)
    assert (mood["label"], mood["last_label"]) == ("neutral", "negative")
    assert mood["n"] == 2
    assert mood["counts"] == {"negative": 1, "neutral": 0, "positive": 1}
    assert mood["recent"] == ["negative", "positive"]
    assert mood["updated_ms"] == published["c:1"]["updated_ms"]
    assert abs(mood["updated_ms"] - time.time() * 1000) < 10_000

    # More than mood_size updates: recent keeps the newest three, n and counts keep everything.
    more = [
        tally(i, conversation_id="c:1", label=lab, score=0.0)
        for i, lab in zip(range(4, 7), LABELS, strict=True)
    ]
    store.apply(more, {("in", 0): 7})
    mood = store.mood("c:1")
    assert mood is not None
    assert mood["recent"] == ["positive", "neutral", "negative"]
    assert mood["n"] == 5
    assert mood["counts"] == {"negative": 2, "neutral": 1, "positive": 2}
    assert mood["score"] == pytest.approx(score_c1 * (1 - alpha) ** 3)
    assert json.loads(pubsub.get_message(timeout=2)["data"])["n"] == 5

    # A redelivered batch publishes nothing.
    store.apply(more, {("in", 0): 7})
    assert pubsub.get_message(timeout=0.2) is None
    assert store.mood("nobody") is None
    pubsub.close()


def test_mood_label_follows_the_score_not_the_latest_message(store: CountStore) -> None:
    # mood_size 3 (alpha 0.5): three negative messages, then a cheerful one.
    negative = [tally(i, conversation_id="c", label="negative", score=-0.9) for i in range(3)]
    store.apply([*negative, tally(3, conversation_id="c", label="positive", score=0.9)], {("in", 0): 4})
    mood = store.mood("c")
    assert mood is not None
    assert mood["score"] == pytest.approx(0.0)
    assert (mood["label"], mood["last_label"]) == ("neutral", "positive")
    store.apply([tally(4, conversation_id="c", label="negative", score=-0.8)], {("in", 0): 5})
    mood = store.mood("c")
    assert mood is not None
    assert (mood["label"], mood["last_label"]) == ("negative", "negative") == (mood_label(-0.4), "negative")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def test_old_mood_hash_reads_correctly_and_is_converted_by_the_next_write(
    store: CountStore, client: redis.Redis
) -> None:
    # A hash written before last_label existed: "label" held the latest message's label.
    key = keys.mood_key("sentiment", "old")
    client.hset(
        key,
        mapping={
            "n": 7,
            "score": "-0.72",
            "label": "positive",
            "negative": 5,
            "neutral": 1,
            "positive": 1,
            "updated_ms": NOW_MS - 1000,
        },
    )
    client.lpush(keys.mood_recent_key("sentiment", "old"), "negative", "positive")
    mood = store.mood("old")
    assert mood is not None
    assert (mood["label"], mood["last_label"], mood["n"]) == ("negative", "positive", 7)
    assert mood["counts"] == {"negative": 5, "neutral": 1, "positive": 1}

    store.apply([tally(0, conversation_id="old", label="neutral", score=0.0)], {("in", 0): 1})
    raw = {_text(k): _text(v) for k, v in client.hgetall(key).items()}
    alpha = 2 / (3 + 1)
    assert float(raw["score"]) == pytest.approx(-0.72 * (1 - alpha))
    assert (raw["label"], raw["last_label"], raw["n"]) == ("negative", "neutral", "8")
    assert (raw["negative"], raw["neutral"], raw["positive"]) == ("5", "2", "1")
    assert store.mood("old") == {
        "conversation_id": "old",
        "label": "negative",
        "last_label": "neutral",
        "score": pytest.approx(-0.36),
        "n": 8,
        "counts": {"negative": 5, "neutral": 2, "positive": 1},
        "recent": ["neutral", "positive", "negative"],
        "updated_ms": int(raw["updated_ms"]),
    }

    # An old worker still running during a rolling upgrade writes "label" = its latest label and leaves
    # last_label alone: the reads stay right, because they derive both.
    client.hset(key, "label", "positive")
    client.lpush(keys.mood_recent_key("sentiment", "old"), "positive")
    mood = store.mood("old")
    assert mood is not None and (mood["label"], mood["last_label"]) == ("negative", "positive")


def test_recent_moods_newest_first_and_bounded(store: CountStore, client: redis.Redis) -> None:
    assert store.recent_moods(10) == []
    store.apply([tally(0, conversation_id="a"), tally(1, conversation_id="b")], {("in", 0): 2})
    time.sleep(0.005)  # updated_ms orders the index
    store.apply([tally(2, conversation_id="c", score=-0.9, label="negative")], {("in", 0): 3})
    recent = store.recent_moods(10)
    assert recent[0]["conversation_id"] == "c"
    assert {m["conversation_id"] for m in recent} == {"a", "b", "c"}
    assert recent[0] == store.mood("c")
    assert len(store.recent_moods(2)) == 2
    # A conversation whose hash expired is left out even while the index still names it.
    client.delete(keys.mood_key("sentiment", "c"))
    assert [m["conversation_id"] for m in store.recent_moods(10)] != ["c"]
    assert "c" not in {m["conversation_id"] for m in store.recent_moods(10)}
    assert 3_600_000 - 5_000 < client.pttl(keys.mood_index_key("sentiment")) <= 3_600_000
    with pytest.raises(ValueError, match="limit"):
        store.recent_moods(MOOD_INDEX_SIZE + 1)


def test_mood_index_keeps_only_the_newest(client: redis.Redis) -> None:
    store = CountStore(client, bucket_s=60, retention_s=3600, mood_size=3)
    n = MOOD_INDEX_SIZE + 5
    store.apply([tally(i, conversation_id=f"c{i}") for i in range(n)], {("in", 0): n})
    assert client.zcard(keys.mood_index_key("sentiment")) == MOOD_INDEX_SIZE


def test_series_steps_sum_to_the_window(store: CountStore) -> None:
    base = NOW_MS // MINUTE_MS * MINUTE_MS
    batch = [
        tally(0, ts_ms=base + 5, label="positive"),
        tally(1, ts_ms=base - 1, label="negative"),
        tally(2, ts_ms=base - 1, label="negative", kind="social_post", source="x"),
        tally(3, ts_ms=base - 10 * MINUTE_MS, label="neutral"),
        tally(4, ts_ms=base - 40 * MINUTE_MS, label="neutral"),  # outside a 30 min window
    ]
    store.apply(batch, {("in", 0): 5})
    now = base + 5_000
    s = store.series(1800, 60, now_ms=now)
    w = store.window(1800, now_ms=now)
    assert {k: s[k] for k in w if k != "window_s"} == {k: v for k, v in w.items() if k != "window_s"}
    assert len(s["points"]) == 31
    assert [p["start"] for p in s["points"]] == list(range(base // 1000 - 1800, base // 1000 + 1, 60))
    last, before = s["points"][-1], s["points"][-2]
    assert (last["positive"], last["total"]) == (1, 1)
    assert (before["negative"], before["total"]) == (2, 2)
    assert s["points"][-11]["neutral"] == 1
    assert sum(p["total"] for p in s["points"]) == 4

    five = store.series(1800, 300, now_ms=now)
    assert five["total"] == 4 and all(p["start"] % 300 == 0 for p in five["points"])
    assert store.series(1800, 60, kind="social_post", now_ms=now)["total"] == 1
    assert store.series(1800, 60, source="yelp", now_ms=now)["total"] == 3
    with pytest.raises(ValueError, match="multiple"):
        store.series(1800, 90, now_ms=now)


def test_redis_failure_raises_and_loses_nothing(store: CountStore, redis_clean_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    dead = CountStore(redis.Redis(port=closed_port, retry=Retry(NoBackoff(), 0)), retention_s=3600)
    with pytest.raises(redis.ConnectionError):
        dead.apply(run(3), {("in", 0): 3})
    # The caller did not commit, so Kafka redelivers the batch; it is counted once, in full.
    assert store.apply(run(3), {("in", 0): 3}) == 3
    assert store.window(60, now_ms=NOW_MS)["total"] == 3


def _packed(tallies: list[Tally], offsets: dict[tuple[str, int], int]) -> tuple[list[str], dict[str, Any]]:
    key_list, arg = pack_apply(
        tallies, offsets, prefix="sentiment", bucket_s=60, retention_s=3600, mood_size=3, now_ms=NOW_MS
    )
    return key_list, json.loads(arg)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda p: p["t"][-1].__setitem__(2, "happy"),  # label, on the last tally
        lambda p: p["t"][-1].__setitem__(5, 3.0),  # score out of range
        lambda p: p["t"][-1][3].append(99),  # key index beyond KEYS
        lambda p: p["wm"][-1].__setitem__(1, -1),  # negative watermark
        lambda p: p["m"][-1].__setitem__(2, 0),  # mood list key index
        lambda p: p.__setitem__("ms", 0),  # mood size
    ],
)
def test_script_checks_everything_before_writing(
    store: CountStore, client: redis.Redis, corrupt: Callable[[dict[str, Any]], object]
) -> None:
    store.apply(run(2, conversation_id="c1"), {("in", 0): 2})
    before = {k: client.dump(k) for k in client.keys("*")}

    key_list, payload = _packed(run(4, start=2, conversation_id="c1"), {("in", 0): 6, ("in", 1): 5})
    corrupt(payload)
    with pytest.raises(redis.ResponseError, match="counts: bad"):
        store._script(keys=key_list, args=[json.dumps(payload)])

    assert {k: client.dump(k) for k in client.keys("*")} == before
    assert store.watermarks() == {("in", 0): 2}


def test_bad_tally_raises_before_redis_is_touched(store: CountStore, client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="label"):
        store.apply([tally(0), tally(1, label="happy")], {("in", 0): 2})
    assert client.dbsize() == 0


def test_survives_script_cache_flush_and_decoded_clients(store: CountStore, redis_clean_url: str) -> None:
    store.apply(run(1), {("in", 0): 1})
    store.client.script_flush()  # as after a Redis restart: EVALSHA gets NOSCRIPT and must reload
    assert store.apply(run(1, start=1), {("in", 0): 2}) == 1

    decoded = CountStore(redis.Redis.from_url(redis_clean_url, decode_responses=True), retention_s=3600)
    assert decoded.apply(run(1, start=2, conversation_id="ü"), {("in", 0): 3}) == 1
    assert decoded.watermarks() == {("in", 0): 3}
    assert decoded.window(60, now_ms=NOW_MS)["total"] == 3
    mood = decoded.mood("ü")
    assert mood is not None and mood["recent"] == ["positive"]
