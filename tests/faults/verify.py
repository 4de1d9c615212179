"""The verifier: reads the output and DLQ topics (read_committed and read_uncommitted), Redis and the
committed offsets after a scenario, and judges them against the ground truth.

observe() does the I/O; judge() is pure."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

from tests.faults.traffic import Traffic
from worker.counts import LABELS, CountStore
from worker.keys import H_DLQ_REASON

logging.getLogger("kafka").setLevel(logging.ERROR)


@dataclass
class Copy:
    """One record read back from the output or DLQ topic."""

    key: str
    label: str = ""  # results: the label; dead letters: the DLQ reason
    position: tuple[str, int, int] | None = None  # results: the input record it came from


@dataclass
class Observed:
    out: dict[str, list[Copy]]  # isolation level -> records on the output topic
    dlq: dict[str, list[Copy]]
    lag: int  # sum over input partitions of end offset - committed offset
    redis_total: dict[str, int]  # label -> count, all kinds
    redis_by_kind: dict[str, dict[str, int]]


@dataclass
class Verdict:
    passed: bool
    lost: int
    duplicates: int  # extra copies a read_committed consumer sees (output + DLQ)
    duplicates_uncommitted: int
    counts_exact: bool
    lag: int
    problems: list[str] = field(default_factory=list)


def _read(bootstrap: str, topic: str, isolation: str, timeout_s: float = 60) -> list[Any]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level=isolation,
        fetch_max_bytes=8 << 20,
    )
    try:
        deadline = time.monotonic() + timeout_s
        parts = None
        while not parts:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no metadata for topic {topic}")
            consumer.topics()
            parts = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)  # the last stable offset under read_committed
        out: list[Any] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out reading {topic} ({isolation})")
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(batch)
        return out
    finally:
        consumer.close()


def _results(records: list[Any]) -> list[Copy]:
    copies = []
    for r in records:
        v = json.loads(r.value)
        i = v["input"]
        copies.append(Copy(v["id"], v["label"], (i["topic"], i["partition"], i["offset"])))
    return copies


def _dead_letters(records: list[Any]) -> list[Copy]:
    copies = []
    for r in records:
        reason = dict(r.headers).get(H_DLQ_REASON, b"").decode()
        copies.append(Copy((r.key or b"").decode("utf-8", "replace"), reason))
    return copies


def lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """End offset minus committed offset, summed over the input partitions (uncommitted = from 0)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        committed = {
            (tp.topic, tp.partition): om.offset
            for tp, om in admin.list_group_offsets(group).get(group, {}).items()
            if om.offset >= 0
        }
        consumer.topics()
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        end = consumer.end_offsets(tps)
        return sum(max(0, o - committed.get((tp.topic, tp.partition), 0)) for tp, o in end.items())
    finally:
        admin.close()
        consumer.close()


def redis_counts(redis_url: str, prefix: str) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    store = CountStore(redis.Redis.from_url(redis_url), prefix=prefix)

    def pick(w: dict[str, int]) -> dict[str, int]:
        return {label: w[label] for label in LABELS}

    by_kind = {kind: pick(store.window(3 * 3600, kind=kind)) for kind in ("review", "social_post")}
    return pick(store.window(3 * 3600)), by_kind


def observe(
    bootstrap: str, redis_url: str, *, prefix: str, group: str, inputs: list[str], out: str, dlq: str
) -> Observed:
    levels = ("read_committed", "read_uncommitted")
    total, by_kind = redis_counts(redis_url, prefix)
    return Observed(
        out={lvl: _results(_read(bootstrap, out, lvl)) for lvl in levels},
        dlq={lvl: _dead_letters(_read(bootstrap, dlq, lvl)) for lvl in levels},
        lag=lag(bootstrap, group, inputs),
        redis_total=total,
        redis_by_kind=by_kind,
    )


def _extra_copies(copies: list[Copy]) -> int:
    return sum(n - 1 for n in Counter(c.key for c in copies).values())


def judge(
    truth: Traffic,
    seen: Observed,
    *,
    max_duplicates: int,
    guarantee: str = "at_least_once",
    replayed: int = 0,
) -> Verdict:
    """Compare what the topics and Redis hold with the ground truth.

    Passing needs: nothing lost, every record on the right topic (with the expected DLQ reason), one label
    per id, Redis counts == the labels of the distinct results (and their number == the good messages),
    lag 0, and duplicates seen by a read_committed consumer <= max_duplicates (the at-least-once allowance
    for crashes and retries; 0 for exactly_once) + replayed (copies an operator's replay republishes).
    """
    problems: list[str] = []
    out, dlq = seen.out["read_committed"], seen.dlq["read_committed"]
    out_ids = {c.key for c in out}
    dlq_keys = {c.key for c in dlq}
    lost = len(truth.good.keys() - out_ids) + len(truth.bad.keys() - dlq_keys)
    stray = (out_ids - truth.good.keys()) | (dlq_keys - truth.bad.keys())
    if stray:
        problems.append(f"{len(stray)} unexpected or misrouted ids, e.g. {sorted(stray)[:3]}")
    labels: dict[str, str] = {}
    for c in out:
        if labels.setdefault(c.key, c.label) != c.label:
            problems.append(f"id {c.key} got two labels")
    wrong = {c.key for c in dlq if truth.bad.get(c.key) not in (None, "", c.label)}
    if wrong:
        problems.append(f"{len(wrong)} dead letters with an unexpected reason, e.g. {sorted(wrong)[:3]}")
    expected = Counter(labels[i] for i in truth.good if i in labels)
    counts_exact = seen.redis_total == {label: expected.get(label, 0) for label in LABELS} and sum(
        seen.redis_total.values()
    ) == len(truth.good)
    for kind, got in seen.redis_by_kind.items():
        want = Counter(labels[i] for i, k in truth.good.items() if k == kind and i in labels)
        if got != {label: want.get(label, 0) for label in LABELS}:
            counts_exact = False
    if not counts_exact:
        problems.append(
            f"Redis counts {seen.redis_total} (sum {sum(seen.redis_total.values())}) vs the labels of the"
            f" {sum(expected.values())} good ids on the output {dict(expected)}; {len(truth.good)} good sent"
        )
    dups = _extra_copies(out) + _extra_copies(dlq)
    dups_u = _extra_copies(seen.out["read_uncommitted"]) + _extra_copies(seen.dlq["read_uncommitted"])
    limit = replayed + (0 if guarantee == "exactly_once" else max_duplicates)
    if dups > limit:
        problems.append(f"{dups} duplicates > allowed {limit}")
    if lost:
        problems.append(f"{lost} lost")
    if seen.lag:
        problems.append(f"lag {seen.lag} at the end")
    return Verdict(not problems, lost, dups, dups_u, counts_exact, seen.lag, problems)
