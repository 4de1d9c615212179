"""`sentiment-worker serve` against a real Redis fed by a real worker: the same numbers as the CLI, the mood
stream with a real HTTP client, 422s with their reason, and the bearer token both ways."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.live import Api, Live
from worker.api import MOOD_FIELDS
from worker.counts import KINDS, LABELS, CountStore, Tally

TOKEN = "t0ken-for-the-api-test"


def summary(mood: Any) -> dict[str, Any]:
    return {k: mood[k] for k in MOOD_FIELDS}


def events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The data of each SSE event, parsed; comments and the retry hint are skipped."""
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            yield json.loads("\n".join(data))
            data = []


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"window": "1h"},
        {"window": "1h", "kind": "review"},
        {"window": "1h", "kind": "social_post"},
        {"window": "1h", "source": "shop"},
        {"window": "2d", "kind": "review", "source": "web"},
    ],
)
def test_counts_are_the_cli_numbers(live: Live, api: Api, query: dict[str, str]) -> None:
    args = [f"--{k}={v}" for k, v in query.items()]
    cli = live.cli("counts", *args)
    assert cli.returncode == 0, cli.stderr
    status, body = api.get("/api/counts?" + "&".join(f"{k}={v}" for k, v in query.items()))
    assert status == 200
    assert body == json.loads(cli.stdout)
    assert isinstance(body, dict) and body["total"] > 0


def test_series_sums_to_the_counts(live: Live, api: Api) -> None:
    status, counts = api.get("/api/counts?window=24h")
    assert status == 200 and isinstance(counts, dict)
    status, body = api.get("/api/series?window=24h&step=1m")
    assert status == 200 and isinstance(body, dict)
    assert body["step_s"] == 60 and len(body["points"]) in (1440, 1441)
    assert {k: body[k] for k in ("negative", "neutral", "positive", "total")} == {
        k: counts[k] for k in ("negative", "neutral", "positive", "total")
    }
    assert sum(p["total"] for p in body["points"]) == counts["total"] == live.produced
    assert [p["start"] for p in body["points"]] == sorted(p["start"] for p in body["points"])

    status, five = api.get("/api/series?window=6h&step=5m&kind=review")
    assert status == 200 and isinstance(five, dict)
    assert five["total"] == api.get("/api/counts?window=6h&kind=review")[1]["total"]  # type: ignore[index]
    assert all(p["start"] % 300 == 0 for p in five["points"])


def test_series_latency_over_a_full_day_of_minute_buckets(live: Live) -> None:
    """Every 60 s bucket of the last 24 h holds counts (both kinds, two sources), written by the worker's own
    Lua script under a prefix of its own; then /api/series?window=24h&step=1m is timed over HTTP."""
    store = CountStore(live.store.client, prefix=f"{live.store.prefix}-day")
    now_ms = time.time_ns() // 1_000_000
    tallies = [
        Tally(
            "day",
            0,
            i,
            KINDS[i % 2],
            ("shop", "x")[i % 2],
            LABELS[i % 3],
            0.0,
            now_ms - i // 6 * 60_000,
            None,
        )
        for i in range(1440 * 6)
    ]
    for first in range(0, len(tallies), 2000):
        store.apply(tallies[first : first + 2000], {("day", 0): min(first + 2000, len(tallies))})
    server = live.serve(SENTIMENT_REDIS_PREFIX=store.prefix)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            times = []
            for _ in range(50):
                start = time.perf_counter()
                response = client.get("/api/series", params={"window": "24h", "step": "1m"})
                times.append(time.perf_counter() - start)
                assert response.status_code == 200
            body = response.json()
            assert body["total"] == len(tallies)
            assert sum(1 for p in body["points"] if p["total"]) == 1440
        times.sort()
        median_ms, p95_ms, max_ms = (x * 1000 for x in (statistics.median(times), times[47], times[-1]))
        print(
            f"/api/series 24h/1m, 1,440 full buckets: median {median_ms:.1f} ms, p95 {p95_ms:.1f} ms, "
            f"max {max_ms:.1f} ms"
        )
        assert statistics.median(times) < 1.0
    finally:
        for key in store.client.scan_iter(match=f"{{{store.prefix}}}:*", count=1000):
            store.client.delete(key)


@pytest.mark.parametrize(
    ("path", "param", "fragment"),
    [
        ("/api/counts?window=soon", "window", "window must look like"),
        ("/api/counts?window=30d", "window", "longer than the retention"),
        ("/api/counts?kind=tweet", "kind", "review"),
        ("/api/counts?source=", "source", "at least 1"),
        ("/api/series?step=90s", "step", "multiple of the bucket width"),
        ("/api/series?window=1h&step=2h", "step", "at most the window"),
        ("/api/series?window=0s", "window", "positive"),
        ("/api/moods?limit=0", "limit", "greater than or equal to 1"),
    ],
)
def test_bad_query_parameters_are_422_with_the_reason(api: Api, path: str, param: str, fragment: str) -> None:
    status, body = api.get(path)
    assert status == 422
    assert isinstance(body, dict)
    (error,) = [e for e in body["detail"] if e["loc"] == ["query", param]]
    assert fragment in error["msg"]


def test_mood_is_the_cli_mood_and_unknown_is_404(live: Live, api: Api) -> None:
    for conversation in ("c0", "c1", "c2"):
        cli = live.cli("mood", conversation)
        assert cli.returncode == 0, cli.stderr
        status, body = api.get(f"/api/mood/{conversation}")
        assert status == 200
        assert body == json.loads(cli.stdout)
        assert isinstance(body, dict) and body["label"] in ("negative", "neutral", "positive")
        assert body["last_label"] == body["recent"][0]
    status, body = api.get("/api/mood/nobody")
    assert status == 404 and isinstance(body, dict) and "unknown conversation" in body["detail"]
    assert live.cli("mood", "nobody").returncode == 1


def test_conversation_ids_with_slashes_and_spaces_reach_their_mood(live: Live, api: Api) -> None:
    live.send(4, seed=4, conversations=("team/a b",))
    live.wait_counted()
    cli = live.cli("mood", "team/a b")
    assert cli.returncode == 0, cli.stderr
    for path in ("/api/mood/team/a%20b", "/api/mood/team%2Fa%20b"):
        assert api.get(path) == (200, json.loads(cli.stdout))


def test_recent_moods_list_the_conversations_newest_first(api: Api) -> None:
    status, body = api.get("/api/moods?limit=10")
    assert status == 200 and isinstance(body, list)
    assert {m["conversation_id"] for m in body} >= {"c0", "c1", "c2"}
    assert [m["updated_ms"] for m in body] == sorted((m["updated_ms"] for m in body), reverse=True)


def test_mood_stream_sends_the_current_mood_first_then_live_updates_and_again_on_reconnect(
    live: Live, api: Api
) -> None:
    url = f"{api.url}/api/mood/stream"
    with httpx.Client(timeout=httpx.Timeout(60)) as client:
        with client.stream("GET", url, params={"conversation_id": "c1"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = events(response)
            first = next(stream)
            assert first == summary(api.get("/api/mood/c1")[1])

            # 20 messages, 10 of them posts in c1: the worker's updates arrive on the open stream.
            live.send(20, seed=2, conversations=("c1",))
            seen = [first]
            while seen[-1]["n"] < first["n"] + 10:
                update = next(stream)
                assert update["conversation_id"] == "c1"  # the filter holds
                seen.append(update)
            assert [u["n"] for u in seen] == sorted(u["n"] for u in seen)
        live.wait_counted()
        latest = summary(api.get("/api/mood/c1")[1])
        assert seen[-1] == {**latest, "score": pytest.approx(latest["score"])}

        # A client that reconnects gets the latest state first, not only what happens next.
        with client.stream("GET", url, params={"conversation_id": "c1"}) as response:
            assert next(events(response)) == latest
        recent = api.get("/api/moods?limit=50")[1]
        assert isinstance(recent, list)
        with client.stream("GET", url) as response:  # all conversations: the recent moods first, oldest first
            stream = events(response)
            initial = [next(stream) for _ in recent]
            assert initial == [summary(m) for m in reversed(recent)]
            assert {m["conversation_id"]: m for m in initial}["c1"] == latest


def test_healthz_and_openapi(api: Api) -> None:
    assert api.get("/healthz") == (200, {"status": "ok"})
    status, spec = api.get("/openapi.json")
    assert status == 200 and isinstance(spec, dict)
    assert set(spec["paths"]) >= {
        "/api/counts",
        "/api/series",
        "/api/moods",
        "/api/mood/stream",
        "/api/mood/{conversation_id}",
        "/healthz",
    }


PROTECTED = [
    "/healthz",
    "/openapi.json",
    "/api/counts",
    "/api/series",
    "/api/moods",
    "/api/mood/c0",
    "/api/mood/stream",
]


@pytest.mark.parametrize("source", ["variable", "file"])
def test_token_is_required_by_every_endpoint_when_set(live: Live, tmp_path: Path, source: str) -> None:
    if source == "variable":
        server = live.serve(SENTIMENT_API_TOKEN=TOKEN)
    else:
        (tmp_path / "token").write_text(TOKEN + "\n", encoding="utf-8")
        server = live.serve(SENTIMENT_API_TOKEN_FILE=str(tmp_path / "token"))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for path in PROTECTED:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                response = client.get(path, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
            good = {"Authorization": f"Bearer {TOKEN}"}
            if path == "/api/mood/stream":
                with client.stream("GET", path, headers=good) as response:
                    assert response.status_code == 200
                    assert next(events(response))["conversation_id"] in ("c0", "c1", "c2")
            else:
                assert client.get(path, headers=good).status_code == 200, path
        # The page and its scripts hold no data; it asks for the token and sends it with each call.
        for path in ("/", "/static/dashboard.js"):
            assert client.get(path).status_code == 200
    assert TOKEN not in server.log.read_text()


def test_without_a_token_nothing_asks_for_one(api: Api) -> None:
    for path in PROTECTED:
        if path != "/api/mood/stream":
            assert api.get(path, token="")[0] == 200, path
