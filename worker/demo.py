"""Demo traffic: stream realistic reviews and social posts (plus a few malformed records) through Kafka, then
follow the worker's output until every one of them has a result or a dead letter.

Reviews come from amazon_reviews_full_sample (star rating and a product id), posts from the TweetEval
validation set and sentiment140 (platform, some in conversations). Run by scripts/demo as
``python -m worker.demo --n 1000``; stdout's last line is a JSON summary with a conversation id to look up.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from tqdm import tqdm

STARS = {"very negative": 1, "negative": 2, "neutral": 3, "positive": 4, "very positive": 5}
MALFORMED: list[bytes | None] = [
    b'{"kind": "review", "id": "broken", "text": "unterminated',
    b"\xff\xfe not utf-8",
    b'{"kind": "social_post", "id": "empty", "text": "   ", "platform": "twitter"}',
    b'{"kind": "review", "id": "stars", "text": "fine", "source": "amazon", "rating": 11}',
    b'["not", "an", "object"]',
    None,
]


def load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def traffic(
    datasets: Path, n: int, run: str, rng: random.Random
) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(topic, key, value, gold label or '') for n records: ~40% reviews, ~58% posts, ~2% malformed."""
    reviews = load(datasets / "amazon_reviews_full_sample" / "test.jsonl")
    posts = load(datasets / "tweeteval_sentiment" / "validation.jsonl") + load(
        datasets / "sentiment140_test" / "test.jsonl"
    )
    now_ms = time.time_ns() // 1_000_000
    conversations = [f"{run}-conv{k}" for k in range(8)]
    out: list[tuple[str, bytes | None, bytes | None, str]] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.02:
            out.append(
                ("reviews" if i % 2 else "social-posts", f"{run}-bad{i}".encode(), rng.choice(MALFORMED), "")
            )
            continue
        msg: dict[str, Any]
        if roll < 0.42:
            row = rng.choice(reviews)
            msg = {
                "kind": "review",
                "id": f"{run}-r{i}",
                "text": row["text"],
                "source": rng.choice(["amazon", "amazon", "shop-eu"]),
                "product_id": f"B0{rng.randrange(16**6):06X}",
                "rating": STARS.get(row.get("label5", ""), 3),
                "created_at": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_ms / 1000 - rng.randint(0, 600))
                ),
            }
            topic = "reviews"
        else:
            row = rng.choice(posts)
            msg = {
                "id": f"{run}-p{i}",  # no "kind": the social-posts topic implies it
                "text": row["text"],
                "platform": rng.choice(["twitter", "twitter", "mastodon"]),
                "author": f"user{rng.randrange(500)}",
                "created_at": now_ms - rng.randint(0, 600_000),
            }
            if rng.random() < 0.4:
                msg["conversation_id"] = rng.choice(conversations)
            topic = "social-posts"
        out.append((topic, msg["id"].encode(), json.dumps(msg, ensure_ascii=False).encode(), row["label"]))
    return out


def end_offsets(consumer: KafkaConsumer, topics: list[str]) -> dict[TopicPartition, int]:
    """End offsets of the partitions of those topics that exist (the worker creates them on first use)."""
    consumer.topics()  # refreshes metadata
    tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
    return dict(consumer.end_offsets(tps)) if tps else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="records to send (default 1000)")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument(
        "--datasets", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the results")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be positive")
    if not (args.datasets / "tweeteval_sentiment").is_dir():
        parser.error(f"no datasets at {args.datasets} (expected ../shared/datasets)")

    run = uuid.uuid4().hex[:6]
    rng = random.Random(args.seed)
    records = traffic(args.datasets, args.n, run, rng)
    gold = {key.decode(): label for _, key, _, label in records if key and label}

    watch = ["sentiment-results", "sentiment-dlq"]
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, enable_auto_commit=False)
    before = end_offsets(consumer, watch)  # this run's results come after these offsets
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=5, compression_type="zstd")
    started = time.monotonic()
    for topic, key, value, _ in tqdm(records, desc="sent      ", unit="msg", file=sys.stderr):
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()

    labels: dict[str, str] = {}
    dead: set[str] = set()
    known: set[TopicPartition] = set()
    bar = tqdm(total=len(records), desc="classified", unit="msg", file=sys.stderr)
    deadline = time.monotonic() + args.timeout
    while len(labels) + len(dead) < len(records) and time.monotonic() < deadline:
        if {tp.topic for tp in known} != set(watch):  # a topic is still missing: look again
            now = set(end_offsets(consumer, watch))
            if now != known:
                known = now
                consumer.assign(list(known))
                for tp in known:  # re-reading is harmless: results are keyed by id below
                    consumer.seek(tp, before.get(tp, 0))
        for batch in consumer.poll(timeout_ms=500).values():
            for r in batch:
                key = (r.key or b"").decode("utf-8", "replace")
                if not key.startswith(run) or key in labels or key in dead:
                    continue  # another run's record, or a redelivered one (at least once)
                if r.topic == "sentiment-dlq":
                    dead.add(key)
                else:
                    labels[key] = json.loads(r.value)["label"]
                bar.update(1)
    bar.close()
    consumer.close()
    elapsed = time.monotonic() - started
    agree = [labels[k] == g for k, g in gold.items() if k in labels]
    counts = {k: sum(1 for v in labels.values() if v == k) for k in ("negative", "neutral", "positive")}
    conv = max(
        (f"{run}-conv{k}" for k in range(8)),
        key=lambda c: sum(1 for _, key, value, _ in records if value and c.encode() in value),
    )
    summary = {
        "run": run,
        "sent": len(records),
        "results": len(labels),
        "dead_letters": len(dead),
        "labels": counts,
        "agreement_with_dataset_labels": round(sum(agree) / len(agree), 3) if agree else None,
        "seconds": round(elapsed, 1),
        "conversation_id": conv,
    }
    print(json.dumps(summary))
    if len(labels) + len(dead) < len(records):
        sys.exit(
            f"demo: only {len(labels) + len(dead)} of {len(records)} records came back within {args.timeout}s"
        )


if __name__ == "__main__":
    main()
