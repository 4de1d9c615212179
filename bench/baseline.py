"""The baseline consumer: what typical Kafka + transformers examples do, for comparison with the worker.

kafka-python with auto-commit, one ``transformers.pipeline("text-classification")`` call per message, one
result produced per message (no flush check), and one Redis ``pipeline()`` per message for the counts. Same
model folder, max length and torch thread count as the worker. Its results carry ``input`` (topic, partition,
offset) like the worker's, so the harness measures both the same way.

    python -m bench.baseline --model DIR --bootstrap HOST:PORT --redis URL --topics a,b --output-topic out \
        --group g --until-idle 5
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from datetime import UTC, datetime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--topics", required=True, help="comma-separated input topics")
    p.add_argument("--output-topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--prefix", default="bench-baseline", help="Redis key prefix")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--until-idle", type=float, default=5.0, help="exit after this many seconds without messages"
    )
    args = p.parse_args(argv)

    import redis
    import torch
    from kafka import KafkaConsumer, KafkaProducer
    from transformers import pipeline

    torch.set_num_threads(args.threads)
    clf = pipeline("text-classification", model=args.model, top_k=None, device=-1)
    r = redis.Redis.from_url(args.redis)
    producer = KafkaProducer(bootstrap_servers=args.bootstrap)
    consumer = KafkaConsumer(
        *args.topics.split(","),
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=True,
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(args.until_idle * 1000),
    )

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(0)  # leave the loop below; the finally block flushes and closes

    signal.signal(signal.SIGTERM, on_term)
    n = 0
    try:
        for msg in consumer:
            data = json.loads(msg.value)
            out = clf(data["text"], truncation=True, max_length=args.max_length)
            if out and isinstance(out[0], list):  # one text in, a list of results out
                out = out[0]
            scores = {d["label"]: d["score"] for d in out}
            label = max(scores, key=scores.__getitem__)
            result = {
                "id": data["id"],
                "kind": data.get("kind"),
                "label": label,
                "scores": scores,
                "input": {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset},
                "processed_at": datetime.now(UTC).isoformat(),
            }
            producer.send(args.output_topic, key=str(data["id"]).encode(), value=json.dumps(result).encode())
            pipe = r.pipeline()
            pipe.hincrby(f"{args.prefix}:counts", label, 1)
            pipe.hincrby(f"{args.prefix}:counts:{data.get('kind')}", label, 1)
            pipe.execute()
            n += 1
    finally:
        producer.flush()
        consumer.close()
        producer.close()
        print(f"baseline: {n} messages", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
