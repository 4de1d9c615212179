"""sentiment-worker CLI: run | counts | mood | schema | serve. Settings come from SENTIMENT_* variables.

Exit codes: 0 success; 1 a runtime problem (unreachable Kafka/Redis, unusable model, unknown conversation,
a batch that failed when asked to stop); 2 bad arguments or settings. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import urllib.parse
from pathlib import Path
from typing import Any, NoReturn

import redis
from pydantic import ValidationError

from worker.config import Settings, describe_error
from worker.counts import KINDS, CountStore, parse_window
from worker.messages import json_schemas, schema_text

log = logging.getLogger("worker")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _window(text: str) -> int:
    try:
        return parse_window(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sentiment-worker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="consume, classify, publish and count until stopped")
    run.add_argument(
        "--until-idle",
        type=_positive,
        metavar="SECONDS",
        help="exit 0 once nothing came for SECONDS and the group's committed offsets reached the end of "
        "every input partition (waiting while other members, live or dead, hold partitions with lag)",
    )
    run.add_argument(
        "--until-idle-max",
        type=_positive,
        default=120.0,
        metavar="SECONDS",
        help="with --until-idle: exit 1 when the group's lag has not gone down for SECONDS (default 120, "
        "above twice the 45 s default session timeout after which a dead member's partitions move)",
    )
    counts = sub.add_parser("counts", help="print the label counts of a recent window as JSON")
    counts.add_argument("--window", type=_window, default=900, help="e.g. 30s, 15m, 1h, 2d (default 15m)")
    counts.add_argument("--kind", choices=KINDS)
    counts.add_argument("--source", help="a review source or social platform")
    mood = sub.add_parser("mood", help="print a conversation's mood as JSON")
    mood.add_argument("conversation_id")
    schema = sub.add_parser("schema", help="print the message JSON Schemas, or write them to a folder")
    schema.add_argument("--write", type=Path, metavar="DIR", help="write one *.schema.json file per schema")
    serve = sub.add_parser("serve", help="serve the HTTP API and dashboard over Redis (no Kafka, no model)")
    serve.add_argument("--host", help="address to bind (default SENTIMENT_API_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port to bind (default SENTIMENT_API_PORT, 8080)")
    return parser


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return int(text)


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"sentiment-worker: {message}", file=sys.stderr)
    sys.exit(code)


def _where(url: str) -> str:
    """host:port of a URL, without credentials, for error messages."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


def _redis(settings: Settings) -> redis.Redis:
    try:
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.connect_timeout_s,
            socket_timeout=max(5.0, settings.connect_timeout_s),
            health_check_interval=30,
            **settings.redis_kwargs(),
        )
        client.ping()
    except (redis.RedisError, ValueError, OSError) as exc:
        _fail(f"cannot reach Redis at {_where(settings.redis_url)}: {type(exc).__name__}: {exc}")
    return client


def _store(settings: Settings, client: redis.Redis) -> CountStore:
    return CountStore(
        client,
        prefix=settings.redis_prefix,
        bucket_s=settings.bucket_seconds,
        retention_s=settings.retention_seconds,
        mood_size=settings.mood_size,
    )


def _print(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, sort_keys=False), flush=True)


def _schema(write: Path | None) -> None:
    schemas = json_schemas()
    if write is None:
        _print(schemas)
        return
    write.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        (write / name).write_text(schema_text(schema), encoding="utf-8")
    print(f"wrote {len(schemas)} schemas to {write}", file=sys.stderr)


def _run(settings: Settings, until_idle_s: float | None, until_idle_max_s: float = 120.0) -> int:
    # Heavy imports (torch) only for the command that needs them.
    from kafka.errors import KafkaError

    from worker.batching import Limits
    from worker.classifier import Classifier, ModelError, pick_device
    from worker.consume import KafkaSource
    from worker.keys import model_channel
    from worker.loop import FatalError, GroupNotDone, Loop, LoopConfig, fault_hook, overlap_pays
    from worker.metrics import Metrics, serve
    from worker.publish import KafkaSink
    from worker.registry import RegistryError, resolve, verify
    from worker.swap import Swapper

    metrics = Metrics()
    if settings.metrics_port:
        serve(
            metrics,
            settings.metrics_host,
            settings.metrics_port,
            stale_after_s=60 + settings.max_wait_ms / 1000,
        )
    store = _store(settings, _redis(settings))

    def load(path: Path, name: str | None = None) -> Classifier:
        return Classifier(
            path,
            device=device,
            max_length=settings.max_length,
            max_rows=settings.effective_batch_size(device),
            max_tokens=settings.effective_forward_tokens(device),
            threads=settings.effective_threads(),
            precision=settings.precision,
            fault_oom_tokens=settings.fault_oom_tokens,
            name=name,
        )

    registry = settings.model_registry
    try:
        device = pick_device(settings.device).type
        if registry is None:
            model = load(settings.model_dir)
        else:
            wanted = resolve(registry, settings.model_alias)
            version = verify(registry, wanted)
            model = load(version.path, version.name)
            if model.model_ref.version != wanted:
                raise RegistryError(f"version {wanted}: its weights hash to {model.model_ref.version}")
    except (ModelError, RegistryError) as exc:
        _fail(str(exc))
    swapper = (
        None
        if registry is None
        else Swapper(
            registry,
            settings.model_alias,
            lambda v: load(v.path, v.name),
            serving=model,
            poll_s=settings.model_poll_s,
            metrics=metrics,
            device=device,
        )
    )
    metrics.model_loaded = True
    metrics.model_info.labels(model.model_ref.name, model.model_ref.version, device).set(1)
    batch_size = settings.effective_batch_size(device)
    kafka_args = settings.kafka_common()
    exactly_once = settings.processing_guarantee == "exactly_once"
    try:
        source = KafkaSource(
            settings.input_topics,
            group_id=settings.group_id,
            max_poll_records=batch_size,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            session_timeout_ms=settings.session_timeout_ms,
            max_message_bytes=settings.max_message_bytes,
            connect_timeout_s=settings.connect_timeout_s,
            kafka_args=kafka_args,
            read_committed=exactly_once,
        )
        sink = KafkaSink(
            client_id=f"{settings.group_id}-producer",
            connect_timeout_s=settings.connect_timeout_s,
            kafka_args=kafka_args,
            transactional_id=settings.effective_transactional_id() if exactly_once else None,
            group_metadata=source.group_metadata if exactly_once else None,
            call_timeout_s=settings.transaction_call_timeout_s,
        )
    except FatalError as exc:
        _fail(str(exc))
    except KafkaError as exc:
        from worker.security import kafka_hint

        _fail(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {type(exc).__name__}: {exc}"
            + kafka_hint(kafka_args)
        )
    metrics.assigned = source.assigned
    loop = Loop(
        source,
        sink,
        store,
        model,
        LoopConfig(
            limits=Limits(
                max_records=batch_size,
                max_tokens=settings.effective_batch_tokens(device),
                max_wait_s=settings.max_wait_ms / 1000,
            ),
            output_topic=settings.output_topic,
            dlq_topic=settings.dlq_topic,
            topic_kinds=settings.topic_kinds,
            max_message_bytes=settings.max_message_bytes,
            log_text=settings.log_text,
        ),
        metrics=metrics,
        transactions=sink if exactly_once else None,
        offsets=source,
        watermarks=store.watermarks,
        overlap=overlap_pays(device, settings.effective_threads(), len(os.sched_getaffinity(0))),
        models=swapper,
        group=source,
        hook=fault_hook(settings.fault_point, settings.fault_after_n) if settings.fault_point else _no_fault,
    )

    def on_signal(signum: int, _frame: object) -> None:
        log.info("stopping after the current batch", extra={"signal": signal.Signals(signum).name})
        loop.request_stop()
        signal.signal(signum, signal.SIG_DFL)  # a second signal stops at once

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "worker started",
        extra={
            "topics": settings.input_topics,
            "group_id": settings.group_id,
            "batch_size": batch_size,
            "device": device,
            "guarantee": settings.processing_guarantee,
            "overlap": loop.overlap,
            "model": model.model_ref.name,
            "version": model.model_ref.version,
            "registry": None if registry is None else str(registry),
            "alias": None if registry is None else settings.model_alias,
        },
    )
    del model  # the loop holds the served model; after a swap nothing else may keep the old one alive
    if swapper is not None:
        swapper.start()
        swapper.listen(store.client, model_channel(settings.redis_prefix))
    fatal: FatalError | GroupNotDone | None = None
    try:
        ok = loop.run(until_idle_s=until_idle_s, until_idle_max_s=until_idle_max_s)
    except FatalError as exc:  # fenced, not authorized, a transaction that cannot be aborted or timed out
        fatal = exc
    except GroupNotDone as exc:  # --until-idle: other members still hold partitions with lag
        fatal = exc
    finally:
        if swapper is not None:
            swapper.close()
        source.close()
        sink.close()
    if isinstance(fatal, FatalError):
        # The producer's state is unknown (fenced, or a call past its bound whose kafka-python threads may
        # still be stuck and logging): the operator's one line comes last, then the process goes at once
        # rather than wait at exit for threads that may never end.
        logging.disable(logging.CRITICAL)
        print(f"sentiment-worker: {fatal}", file=sys.stderr, flush=True)
        os._exit(1)
    if fatal is not None:
        _fail(str(fatal))  # after closing, so that the operator's one line is the last one
    log.info("worker stopped", extra={"processed": loop.processed, "clean": ok})
    return 0 if ok else 1


def _no_fault(point: str) -> None:
    pass


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        _schema(args.write)
        return
    try:
        settings = Settings()
    except ValidationError as exc:
        _fail(describe_error(exc), 2)
    from worker import logs

    logs.setup(settings.log_level)
    if args.command == "run":
        sys.exit(_run(settings, args.until_idle, args.until_idle_max))
    if args.command == "serve":
        from worker.api import listen, serve  # fastapi and uvicorn only for the command that needs them

        host, port = args.host or settings.api_host, settings.api_port if args.port is None else args.port
        try:
            sock = listen(host, port)
        except OSError as exc:
            _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        sys.exit(serve(settings, _redis(settings), sock))
    store = _store(settings, _redis(settings))
    if args.command == "counts":
        try:
            _print(store.window(args.window, kind=args.kind, source=args.source))
        except ValueError as exc:
            _fail(str(exc), 2)
    elif args.command == "mood":
        mood = store.mood(args.conversation_id)
        if mood is None:
            _fail(f"unknown conversation {args.conversation_id!r} (never seen, or expired)")
        _print(mood)


if __name__ == "__main__":
    main()
