"""`sentiment-worker serve`: an HTTP API and dashboard over the counts and moods in Redis.

A process of its own, separate from `run`: it reads Redis only (the same SENTIMENT_REDIS_* settings), so it
scales apart from the workers and never touches Kafka or the model. Endpoints (OpenAPI at /openapi.json):

GET /api/counts                 the numbers of `sentiment-worker counts`
GET /api/series                 per-step counts for charts
GET /api/moods                  the most recently updated conversations' moods
GET /api/mood/stream            Server-Sent Events from the worker's mood-updates channel
GET /api/mood/{conversation}    as `sentiment-worker mood` (404 when unknown)
GET /healthz                    200 while Redis answers
GET /                           the dashboard (static files in worker/static)

With SENTIMENT_API_TOKEN set, every endpoint above except the dashboard's static files wants
"Authorization: Bearer <token>". The page holds no data: it asks for the token and sends it with each call.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any, Literal

import redis
import redis.asyncio as aredis
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from worker import keys
from worker.config import Settings
from worker.counts import MOOD_INDEX_SIZE, CountStore, parse_window

log = logging.getLogger("worker.api")

MAX_SERIES_BUCKETS = 20_000  # one request reads at most this many bucket hashes (x2 for a source)
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream
RECONNECT_MS = 2000  # the SSE "retry" hint
MOOD_FIELDS = ("conversation_id", "label", "last_label", "score", "n", "updated_ms")

Kind = Literal["review", "social_post"]
Label = Literal["negative", "neutral", "positive"]


# Response models: they are the OpenAPI description of what CountStore returns (FastAPI checks each answer).
class Counts(BaseModel):
    window_s: int
    negative: int
    neutral: int
    positive: int
    total: int


class Point(BaseModel):
    start: int = Field(description="step start, epoch seconds, a multiple of step_s")
    negative: int
    neutral: int
    positive: int
    total: int


class Series(Counts):
    step_s: int
    points: list[Point] = Field(description="oldest first; the totals above are their sums")


class Mood(BaseModel):
    conversation_id: str
    label: Label = Field(
        description="the mood, from score: <= -0.25 negative, >= 0.25 positive, else neutral"
    )
    last_label: Label = Field(description="the latest message's label")
    score: float = Field(description="EWMA of p(positive) - p(negative) over the conversation, in [-1, 1]")
    n: int
    counts: dict[Label, int]
    recent: list[Label] = Field(description="the latest labels, newest first")
    updated_ms: int


_BEARER = HTTPBearer(auto_error=False, description="SENTIMENT_API_TOKEN, when the server sets one")


def _unprocessable(param: str, message: str) -> HTTPException:
    # The same body shape as FastAPI's own validation errors, so clients parse one format.
    return HTTPException(422, detail=[{"loc": ["query", param], "msg": message, "type": "value_error"}])


def _seconds(param: str, text: str) -> int:
    try:
        return parse_window(text)
    except ValueError as exc:
        raise _unprocessable(param, str(exc)) from None


def mood_event(mood: dict[str, Any]) -> str:
    """One SSE event: the mood's summary (the fields the worker publishes), whatever its source."""
    data = {k: mood[k] for k in MOOD_FIELDS}
    return f"event: mood\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def create_app(
    store: CountStore,
    subscriber: aredis.Redis,
    *,
    token: str | None = None,
) -> FastAPI:
    """The ASGI app. store reads with a sync client (in FastAPI's thread pool); subscriber carries SSE."""

    def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await subscriber.aclose()

    app = FastAPI(
        title="sentiment-stream API",
        summary="Rolling sentiment counts and conversation moods, read from the worker's Redis.",
        version="1",
        docs_url=None,  # Swagger UI loads its scripts from a CDN; /openapi.json is the description
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    api = [Depends(authorize)]
    channel = keys.mood_channel(store.prefix)

    @app.get("/openapi.json", include_in_schema=False, dependencies=api)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/healthz", dependencies=api, summary="200 while Redis answers a PING")
    def healthz() -> JSONResponse:
        try:
            store.client.ping()
        except redis.RedisError as exc:
            return JSONResponse({"status": "redis unavailable", "error": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get(
        "/api/counts", dependencies=api, response_model=Counts, summary="Label counts of a recent window"
    )
    def counts(
        window: Annotated[str, Query(description="30s, 15m, 1h, 2d", max_length=16)] = "15m",
        kind: Kind | None = None,
        source: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    ) -> dict[str, Any]:
        window_s = _seconds("window", window)
        try:
            return store.window(window_s, kind=kind, source=source)
        except ValueError as exc:
            raise _unprocessable("window", str(exc)) from None

    @app.get(
        "/api/series",
        dependencies=api,
        response_model=Series,
        summary="Per-step label counts of a recent window, oldest first",
    )
    def series(
        window: Annotated[str, Query(description="30s, 15m, 1h, 2d", max_length=16)] = "6h",
        step: Annotated[
            str, Query(description="a multiple of SENTIMENT_BUCKET_SECONDS", max_length=16)
        ] = "1m",
        kind: Kind | None = None,
        source: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    ) -> Response:
        window_s, step_s = _seconds("window", window), _seconds("step", step)
        if window_s // store.bucket_s > MAX_SERIES_BUCKETS:
            raise _unprocessable(
                "window", f"spans more than {MAX_SERIES_BUCKETS} buckets of {store.bucket_s}s"
            )
        if step_s % store.bucket_s or step_s > window_s:
            raise _unprocessable(
                "step", f"must be a multiple of the bucket width ({store.bucket_s}s) and at most the window"
            )
        try:
            body = store.series(window_s, step_s, kind=kind, source=source)
        except ValueError as exc:
            raise _unprocessable("window", str(exc)) from None
        # Serialized here: checking 1,440 points against the response model took longer than reading them.
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

    @app.get(
        "/api/moods",
        dependencies=api,
        response_model=list[Mood],
        summary="Moods of the most recently updated conversations",
    )
    def moods(limit: Annotated[int, Query(ge=1, le=MOOD_INDEX_SIZE)] = 20) -> list[dict[str, Any]]:
        return store.recent_moods(limit)

    @app.get(
        "/api/mood/stream",
        dependencies=api,
        summary="Server-Sent Events: one `mood` event per conversation a batch updated",
        description=(
            "Starts with the current mood (of conversation_id, or of the recently updated conversations), "
            "then follows the worker's updates, so a client that reconnects has the latest state again. "
            "An update that lands while the stream starts can arrive twice; keep the newest updated_ms."
        ),
        response_class=StreamingResponse,
    )
    async def stream(
        request: Request,
        conversation_id: Annotated[str | None, Query(min_length=1, max_length=1000)] = None,
    ) -> StreamingResponse:
        pubsub = subscriber.pubsub()
        # Subscribe before reading the current state, so no update can fall between the two.
        await pubsub.subscribe(channel)
        return StreamingResponse(
            _events(request, pubsub, store, conversation_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get(
        "/api/mood/{conversation_id:path}",
        dependencies=api,
        response_model=Mood,
        summary="A conversation's mood",
    )
    def mood(conversation_id: str) -> dict[str, Any]:
        found = store.mood(conversation_id)
        if found is None:
            raise HTTPException(404, detail="unknown conversation (never seen, or expired)")
        return found

    static = resources.files("worker").joinpath("static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(static.joinpath("index.html")), headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


async def _events(
    request: Request, pubsub: aredis.client.PubSub, store: CountStore, conversation_id: str | None
) -> AsyncIterator[str]:
    try:
        yield f"retry: {RECONNECT_MS}\n\n"
        if conversation_id is not None:
            current = await run_in_threadpool(store.mood, conversation_id)
            initial = [current] if current is not None else []
        else:
            initial = list(reversed(await run_in_threadpool(store.recent_moods, 50)))  # oldest first
        for m in initial:
            yield mood_event(m)
        while not await request.is_disconnected():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=KEEPALIVE_S)
            if message is None:
                yield ": keep-alive\n\n"
                continue
            data = json.loads(message["data"])
            if conversation_id is None or data.get("conversation_id") == conversation_id:
                yield mood_event(data)
    finally:
        await pubsub.aclose()


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is the caller's one-line error, not a log."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def serve(settings: Settings, client: redis.Redis, sock: socket.socket) -> int:
    """Run the API with uvicorn on sock until SIGTERM/SIGINT; returns the exit code."""
    import uvicorn

    store = CountStore(
        client,
        prefix=settings.redis_prefix,
        bucket_s=settings.bucket_seconds,
        retention_s=settings.retention_seconds,
        mood_size=settings.mood_size,
    )
    subscriber = aredis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.connect_timeout_s,
        health_check_interval=30,
        **settings.redis_kwargs(),
    )
    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    app = create_app(store, subscriber, token=token)
    host, port = sock.getsockname()[:2]
    log.info("api listening", extra={"host": host, "port": port, "token": token is not None})
    # uvicorn's access log would print every query string; our JSON log lines come from logs.setup.
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else 1
