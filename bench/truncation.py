"""What head+tail truncation costs the worker, on tweets and on reviews: the worker's own encode + classify.

    .venv/bin/python -m bench.truncation --model models/minilm-mixed [--max-lengths 128,256] [--threads 2]

The same model folder is served with its truncation.json saying "right" and "head+tail" at each max length
(copies in a temporary folder), on TweetEval validation tweets and review_sentiment validation reviews. For
each: microseconds per text to tokenize (Classifier.encode) and to classify (Classifier.classify, CPU, fp32,
the worker's default forward-pass limits), best of --repeats. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.traffic import datasets_dir, read_jsonl
from worker.classifier import Classifier
from worker.config import default_forward_tokens


def best_us(fn: Any, arg: Any, n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - started)
    return round(1e6 * min(times) / n, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.truncation", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a model folder")
    p.add_argument("--datasets", help="default: ../shared/datasets")
    p.add_argument("--n", type=int, default=1000, help="texts per set (default 1000)")
    p.add_argument("--max-lengths", default="128,256", help="comma-separated (default 128,256)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    root = datasets_dir(args.datasets)
    sets = {
        "tweets": [r["text"] for r in read_jsonl(root / "tweeteval_sentiment" / "validation.jsonl", args.n)],
        "reviews": [r["text"] for r in read_jsonl(root / "review_sentiment" / "validation.jsonl", args.n)],
    }
    source = Path(args.model)
    out: dict[str, Any] = {"model": str(source), "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        for length, strategy in [
            (int(n), s) for n in args.max_lengths.split(",") for s in ("right", "head+tail")
        ]:
            folder = Path(tmp) / f"{strategy}-{length}"
            shutil.copytree(source, folder)
            (folder / "truncation.json").write_text(json.dumps({"max_length": length, "strategy": strategy}))
            clf = Classifier(
                folder,
                device="cpu",
                threads=args.threads,
                precision="fp32",
                max_tokens=default_forward_tokens("cpu"),
            )
            for name, texts in sets.items():
                encoded = clf.encode(texts)
                out[f"{name}, {strategy} {length}"] = {
                    "n": len(texts),
                    "mean_tokens": round(sum(map(len, encoded)) / len(encoded), 1),
                    "encode_us_per_text": best_us(clf.encode, texts, len(texts), args.repeats),
                    "classify_us_per_text": best_us(clf.classify, encoded, len(texts), args.repeats),
                }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
