"""Benchmark traffic: messages in the worker's input formats, built from the shared labelled data sets (PURE).

Only train splits are read (the test splits stay untouched for evaluation): tweets become social posts,
movie-review sentences (SST) become reviews. The mix and order are fixed by a seed, so two runs and two
consumers (worker and baseline) see the same messages.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# (folder, file, kind, source/platform); all train splits.
SOURCES: tuple[tuple[str, str, str, str], ...] = (
    ("tweeteval_sentiment", "train.jsonl", "social_post", "twitter"),
    ("tweet_sentiment_extraction", "train.jsonl", "social_post", "twitter"),
    ("sst5_3class", "train.jsonl", "review", "sst"),
)
RATING = {"very negative": 1, "negative": 2, "neutral": 3, "positive": 4, "very positive": 5}
REVIEW_SHARE = 0.3
CONVERSATIONS = 50  # social posts are spread over this many conversation ids (moods in Redis)


class TrafficError(ValueError):
    """The data sets cannot be read; the message is one line meant for the user."""


@dataclass(frozen=True, slots=True)
class Row:
    text: str
    label: str
    kind: str
    origin: str
    label5: str | None = None


def datasets_dir(explicit: str | None = None) -> Path:
    """--datasets, else $SENTIMENT_DATASETS, else ../shared/datasets next to the repository."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("SENTIMENT_DATASETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


def read_jsonl(path: Path, limit: int | None = None) -> Iterator[dict[str, str]]:
    try:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f):
                if limit is not None and n >= limit:
                    return
                if line.strip():
                    yield json.loads(line)
    except (OSError, json.JSONDecodeError) as exc:
        raise TrafficError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def load_rows(root: Path, per_source: int) -> tuple[list[Row], list[Row]]:
    """(social rows, review rows), at most per_source rows from each source file, in file order."""
    social: list[Row] = []
    reviews: list[Row] = []
    for folder, name, kind, origin in SOURCES:
        path = root / folder / name
        if not path.is_file():
            raise TrafficError(f"data set file missing: {path} (set --datasets or SENTIMENT_DATASETS)")
        rows = [
            Row(text=r["text"], label=r["label"], kind=kind, origin=origin, label5=r.get("label5"))
            for r in read_jsonl(path, per_source)
            if r.get("text", "").strip()
        ]
        (social if kind == "social_post" else reviews).extend(rows)
    return social, reviews


STARS = {1: "very negative", 2: "negative", 3: "neutral", 4: "positive", 5: "very positive"}


def load_long_reviews(root: Path, limit: int) -> list[Row]:
    """Product and service reviews (review_sentiment train: clothing, amazon, yelp; median ~350 characters,
    many longer than 128 tokens): the reviews of the "long reviews" mix."""
    path = root / "review_sentiment" / "train.jsonl"
    if not path.is_file():
        raise TrafficError(f"data set file missing: {path} (set --datasets or SENTIMENT_DATASETS)")
    return [
        Row(
            text=r["text"],
            label=r["label"],
            kind="review",
            origin=str(r.get("domain") or "reviews"),
            label5=STARS.get(int(r["stars"])) if str(r.get("stars", "")).isdigit() else None,
        )
        for r in read_jsonl(path, limit)
        if r.get("text", "").strip()
    ]


def build_messages(
    social: list[Row], reviews: list[Row], n: int, *, seed: int = 0, run_id: str = "bench"
) -> list[dict[str, object]]:
    """n messages (dicts in the worker's input format), a seeded mix of reviews and social posts."""
    if n <= 0:
        return []
    if not social or not reviews:
        raise TrafficError("need at least one social post and one review to build traffic")
    rng = random.Random(seed)
    social_pool = rng.sample(social, len(social))
    review_pool = rng.sample(reviews, len(reviews))
    out: list[dict[str, object]] = []
    si = ri = 0
    for i in range(n):
        msg: dict[str, object]
        if rng.random() < REVIEW_SHARE:
            row = review_pool[ri % len(review_pool)]
            ri += 1
            msg = {"kind": "review", "id": f"{run_id}-{i}", "text": row.text, "source": row.origin}
            msg["product_id"] = f"p{rng.randrange(200)}"
            if row.label5 in RATING:
                msg["rating"] = RATING[row.label5]
        else:
            row = social_pool[si % len(social_pool)]
            si += 1
            msg = {"kind": "social_post", "id": f"{run_id}-{i}", "text": row.text, "platform": row.origin}
            if rng.random() < 0.5:
                msg["conversation_id"] = f"c{rng.randrange(CONVERSATIONS)}"
        out.append(msg)
    return out


def encode(msg: dict[str, object]) -> bytes:
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def texts_of(messages: list[dict[str, object]]) -> list[str]:
    return [str(m["text"]) for m in messages]


def validation_set(root: Path, limit: int | None = None) -> tuple[list[str], list[str]]:
    """(texts, labels) of tweeteval_sentiment/validation.jsonl: the set on which int8 vs fp32 is compared."""
    path = root / "tweeteval_sentiment" / "validation.jsonl"
    if not path.is_file():
        raise TrafficError(f"validation set missing: {path} (set --datasets or SENTIMENT_DATASETS)")
    rows = list(read_jsonl(path, limit))
    return [r["text"] for r in rows], [r["label"] for r in rows]
