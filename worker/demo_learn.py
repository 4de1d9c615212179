"""The self-learning demo's traffic (``scripts/demo --learn``): a systematic error, corrections, proof.

The error: slang praise ("the Zephyr phone is sick", "Nimbus buds slaps") that a model trained on 2013-2017
tweets reads as negative or neutral. ``probe`` posts one fixed set of such messages (products the
corrections never name) and prints how the running worker labelled them; ``correct`` sends moderators'
corrections of other such messages to the feedback topic. Between the two probes, one learn cycle runs and
the worker swaps to the promoted version without a restart.

    python -m worker.demo_learn probe --run RUN [--tag before|after]    # last stdout line: JSON
    python -m worker.demo_learn correct
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

TEMPLATES = (
    "the new {p} is sick",
    "{p} goes so hard",
    "{p} slaps",
    "ngl the {p} is sick af",
    "{p} is lowkey goated",
    "that {p} drop was sick",
    "{p} is straight fire no cap",
    "bro the {p} is insane",
    "{p} absolutely slaps",
    "my {p} is wicked sick",
)
CORRECTED = (
    "Zephyr phone",
    "Nimbus buds",
    "Orbit watch",
    "Pulse app",
    "Vela speaker",
    "Kite laptop",
    "Nova tab",
)
PROBED = ("Atlas headset", "Comet drone", "Drift sneakers", "Ember stove")


def probes() -> list[str]:
    return [t.format(p=p) for p in PROBED for t in TEMPLATES]


def corrections() -> list[str]:
    return [t.format(p=p) for p in CORRECTED for t in TEMPLATES]


def _results(bootstrap: str, topic: str, ids: set[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        found: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while len(found) < len(ids):
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"demo: only {len(found)} of {len(ids)} probe results after {timeout_s:.0f}s"
                )
            for batch in consumer.poll(timeout_ms=500).values():
                for r in batch:
                    result = json.loads(r.value)
                    if result["id"] in ids:
                        found[result["id"]] = result
        return found
    finally:
        consumer.close()


def probe(bootstrap: str, run: str, tag: str) -> dict[str, Any]:
    topic = os.environ.get("SENTIMENT_DEMO_POSTS_TOPIC", "social-posts")
    out = os.environ.get("SENTIMENT_OUTPUT_TOPIC", "sentiment-results")
    texts = probes()
    ids = [f"{run}-{tag}-probe{i}" for i in range(len(texts))]
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for message_id, text in zip(ids, texts, strict=True):
        body = {"id": message_id, "kind": "social_post", "text": text, "platform": "demo"}
        producer.send(topic, key=message_id.encode(), value=json.dumps(body).encode())
    producer.flush()
    producer.close()
    got = _results(bootstrap, out, set(ids), 120)
    labels = [got[i]["label"] for i in ids]
    versions = sorted({got[i]["model"]["version"] for i in ids})
    for text, label in list(zip(texts, labels, strict=True))[:: len(TEMPLATES) // 2]:
        print(f"  {label:>8}  {text}")
    positive = labels.count("positive")
    print(f"{tag}: {positive} of {len(labels)} slang posts labelled positive (model {', '.join(versions)})")
    return {"tag": tag, "positive": positive, "n": len(labels), "versions": versions}


def correct(bootstrap: str) -> dict[str, Any]:
    topic = os.environ.get("SENTIMENT_FEEDBACK_TOPIC", "sentiment-feedback")
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    texts = corrections()
    for i, text in enumerate(texts):
        message_id = f"slang-{i}"
        body = {"id": message_id, "label": "positive", "text": text, "kind": "social_post",
                "source": "moderator", "annotator": "demo"}  # fmt: skip
        producer.send(topic, key=message_id.encode(), value=json.dumps(body).encode())
    producer.flush()
    producer.close()
    print(f"sent {len(texts)} corrections (slang praise = positive) to {topic}")
    return {"corrections": len(texts), "topic": topic}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m worker.demo_learn", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("probe")
    pr.add_argument("--run", required=True)
    pr.add_argument("--tag", default="before")
    sub.add_parser("correct")
    de = sub.add_parser("decision", help="print a learn cycle's JSON line for people")
    de.add_argument("summary")
    co = sub.add_parser("compare", help="before/after of two probe JSON lines")
    co.add_argument("before")
    co.add_argument("after")
    args = p.parse_args(argv)
    if args.command == "decision":
        d = json.loads(args.summary)
        candidate = (d.get("candidate") or {}).get("version")
        print(f"decision: {d['decision']} (champion {d['champion']['version']}, candidate {candidate})")
        for reason in d["reasons"]:
            print(f"  {reason}")
        return
    if args.command == "compare":
        b, a = json.loads(args.before), json.loads(args.after)
        before, after = (f"{x['positive']}/{x['n']} (model {', '.join(x['versions'])})" for x in (b, a))
        print(f"slang praise labelled positive: before {before}, after {after}")
        return
    bootstrap = os.environ.get("SENTIMENT_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    summary = probe(bootstrap, args.run, args.tag) if args.command == "probe" else correct(bootstrap)
    print(json.dumps(summary))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
