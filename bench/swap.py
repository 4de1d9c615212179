"""Hot-swap figures through real Kafka + Redis: swap latency, throughput during a swap, RSS over swaps.

    scripts/stack up && .venv/bin/python -m bench.swap [--model DIR] [--n 10000] [--swaps 5]

Two versions of the same architecture (the given model, default as bench.models picks it, and a copy with a
re-drawn classifier head) are registered; the worker (``python -m worker run`` with SENTIMENT_MODEL_REGISTRY
and its defaults) labels a steady backlog while the alias flips. Prints one JSON object:
- swap latency: alias flip -> the first result the new version labelled (its processed_at);
- throughput (results per second of processed_at) in the seconds around each swap against the run's median;
- worker RSS after each swap (the old model must be freed: TF Serving #1346 is what goes wrong otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from bench.models import REPO, choose_model
from trainer.registry import Registry


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def other_head(src: Path, dst: Path) -> Path:
    """The same model with its classifier re-drawn: same size and speed, another version id."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst, dirs_exist_ok=True)
    tensors = load_file(src / "model.safetensors")
    g = torch.Generator().manual_seed(7)
    for name in [k for k in tensors if k.startswith("classifier.")]:
        tensors[name] = torch.randn(tensors[name].shape, generator=g) * 0.05
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


class Results(threading.Thread):
    """Every result on the output topic: (processed_at epoch s, version)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        self.seen: list[tuple[float, str]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            for batch in self.consumer.poll(timeout_ms=200).values():
                for r in batch:
                    res = json.loads(r.value)
                    when = datetime.fromisoformat(res["processed_at"]).timestamp()
                    self.seen.append((when, res["model"]["version"]))
        self.consumer.close()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.swap", description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model folder (default: as python -m bench picks it)")
    p.add_argument("--n", type=int, default=10000, help="messages (default 10000)")
    p.add_argument("--swaps", type=int, default=5, help="alias flips (default 5)")
    p.add_argument("--every", type=float, default=6.0, help="seconds between flips (default 6)")
    args = p.parse_args()
    bootstrap = os.environ.get("SENTIMENT_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    redis_url = os.environ.get("SENTIMENT_REDIS_URL", "redis://127.0.0.1:6390/0")
    scratch = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    model, how = choose_model(args.model, scratch)
    reg = Registry(scratch / "registry")
    a = reg.register(model)["version"]
    b = reg.register(other_head(model, scratch / "b" / model.name))["version"]
    reg.promote(a)

    run = uuid.uuid4().hex[:8]
    posts, out = f"bench-swap-{run}-posts", f"bench-swap-{run}-results"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(t, 2, 1) for t in (posts, out, f"{out}-dlq")])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    env.update(
        SENTIMENT_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        SENTIMENT_REDIS_URL=redis_url,
        SENTIMENT_REDIS_PREFIX=f"bench-swap-{run}",
        SENTIMENT_MODEL_REGISTRY=str(reg.root),
        SENTIMENT_MODEL_POLL_S="0.5",
        SENTIMENT_INPUT_TOPICS=posts,
        SENTIMENT_TOPIC_KINDS=f"{posts}=social_post",
        SENTIMENT_OUTPUT_TOPIC=out,
        SENTIMENT_DLQ_TOPIC=f"{out}-dlq",
        SENTIMENT_GROUP_ID=f"bench-swap-{run}",
        SENTIMENT_METRICS_PORT="0",
        HF_HUB_OFFLINE="1",
    )
    log = (scratch / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env, cwd=REPO, stderr=log)
    results = Results(bootstrap, out)
    results.start()
    try:
        while '"partitions assigned", "partitions": ["' not in (scratch / "worker.log").read_text():
            if worker.poll() is not None:
                raise SystemExit(f"bench.swap: the worker exited {worker.returncode}; see {log.name}")
            time.sleep(0.2)
        texts = [json.loads(line)["text"] for line in _sample_lines(args.n)]
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        for i, text in enumerate(texts):  # a backlog: the worker runs flat out for the whole run
            producer.send(posts, json.dumps({"id": f"m{i}", "text": text, "platform": "x"}).encode())
        producer.flush()
        time.sleep(args.every)
        rss = {0: rss_mib(worker.pid)}
        flips: list[tuple[float, str]] = []
        for k in range(1, args.swaps + 1):
            target = b if k % 2 else a
            flips.append((time.time(), target))
            reg.promote(target)
            time.sleep(args.every)
            rss[k] = rss_mib(worker.pid)
        while len(results.seen) < args.n and worker.poll() is None:
            time.sleep(0.5)
    finally:
        worker.terminate()
        worker.wait(60)
        results.stopped.set()
        results.join(10)
        admin.delete_topics([posts, out, f"{out}-dlq"])
        admin.close()
    print(json.dumps(summary(results.seen, flips, rss, how, args.n, scratch), indent=1))


def summary(
    seen: list[tuple[float, str]],
    flips: list[tuple[float, str]],
    rss: dict[int, float],
    how: str,
    n: int,
    scratch: Path,
) -> dict[str, Any]:
    per_s = Counter(int(t) for t, _ in seen)
    first, last = min(per_s), max(per_s)
    steady = statistics.median(per_s.get(s, 0) for s in range(first + 1, last))  # full seconds only
    latencies, around = [], []
    for at, version in flips:
        later = [t for t, v in seen if v == version and t >= at]
        if later:
            latencies.append(round(min(later) - at, 2))
        around.append(statistics.mean(per_s.get(s, 0) for s in range(int(at), int(at) + 3)))
    return {
        "model": how,
        "messages": n,
        "results": len(seen),
        "swap_latency_s": latencies,
        "throughput_msg_s": {"median_per_second": steady, "in_the_3_s_after_each_flip": around},
        "rss_mib_after_swap": {k: round(v) for k, v in rss.items()},
        "rss_growth_1_to_5": round(rss[5] / rss[1] - 1, 3) if 5 in rss and 1 in rss else None,
        "worker_log": str(scratch / "worker.log"),
    }


def _sample_lines(n: int) -> list[str]:
    path = REPO.parent / "shared" / "datasets" / "tweeteval_sentiment" / "validation.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [lines[i % len(lines)] for i in range(n)]


if __name__ == "__main__":
    main()
