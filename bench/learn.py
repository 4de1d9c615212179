"""One learn cycle's figures: corrections drawn from a labelled set the champion never trained on.

    scripts/stack up && .venv/bin/python -m bench.learn --champion models/minilm-mixed \\
        --corrections ../shared/datasets/tweet_sentiment_extraction/train.jsonl --n 500 \\
        --validation ../shared/datasets/tweeteval_sentiment/validation.jsonl ... [--max-steps 300]

Registers the champion in a fresh registry, sends N rows of the corrections file to a fresh feedback topic
(as source "user"), runs ``sentiment-train learn --once`` with the TweetEval training data, and prints the
cycle's JSON line (champion vs candidate per validation set and on the held-out corrections).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from bench.models import REPO
from trainer.registry import Registry

DATASETS = REPO.parent / "shared" / "datasets"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.learn", description=__doc__.splitlines()[0])
    p.add_argument("--champion", required=True, help="an exported model folder (sentiment-train train)")
    p.add_argument("--corrections", required=True, help="a labelled .jsonl file the champion did not see")
    p.add_argument("--n", type=int, default=500, help="corrections to send (default 500)")
    p.add_argument("--train", default=str(DATASETS / "tweeteval_sentiment" / "train.jsonl"))
    p.add_argument("--validation", nargs="+", required=True)
    p.add_argument("--max-steps", type=int, default=300)
    args = p.parse_args()
    bootstrap = os.environ.get("SENTIMENT_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    scratch = Path(tempfile.mkdtemp(prefix="bench-learn-"))
    reg = Registry(scratch / "registry")
    reg.promote(reg.register(args.champion)["version"])

    rows = [json.loads(line) for line in Path(args.corrections).read_text(encoding="utf-8").splitlines()]
    rows = random.Random(0).sample(rows, min(args.n, len(rows)))
    run = uuid.uuid4().hex[:8]
    topic = f"bench-learn-{run}-feedback"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1), NewTopic(f"{topic}-dlq", 1, 1)])
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i, row in enumerate(rows):
        body = {"id": f"c{i}", "label": row["label"], "text": row["text"], "source": "user"}
        producer.send(topic, key=body["id"].encode(), value=json.dumps(body).encode())
    producer.flush()
    producer.close()
    env = {
        **os.environ,
        "SENTIMENT_FEEDBACK_DLQ_TOPIC": f"{topic}-dlq",
        "SENTIMENT_LEARNER_GROUP_ID": f"bench-learn-{run}",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [sys.executable, "-m", "trainer", "learn", "--once", "--registry", str(reg.root)]
    cmd += ["--feedback-topic", topic, "--train", args.train, "--validation", *args.validation]
    cmd += ["--max-steps", str(args.max_steps), "--report-dir", str(scratch / "report")]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    finally:
        admin.delete_topics([topic, f"{topic}-dlq"])
        admin.close()
    if out.returncode != 0:
        raise SystemExit(f"bench.learn: the learner failed:\n{out.stderr[-2000:]}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    summary["report"] = str(scratch / "report" / "learn_report.md")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
