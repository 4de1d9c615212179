"""The fault scenarios F1-F20. Each one gets a fresh Case (own topics, group, Redis prefix), drives traffic
and faults, and returns an Outcome built from the verifier's Verdict plus its own checks."""

from __future__ import annotations

import json
import pickle
import random
import shutil
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, OffsetSpec

from tests.faults.harness import BATCH_SIZE, MAX_BYTES, Case, Worker
from tests.faults.proxy import Link, Proxy
from tests.faults.stack import ROOT
from tests.faults.traffic import Traffic, good_messages, poison_messages, produce
from tests.faults.verify import Verdict
from tests.faults.verify import _read as read_topic
from trainer.registry import Registry, RegistryError
from worker.keys import H_DLQ_DETAIL
from worker.loop import FAULT_POINTS


@dataclass
class Outcome:
    verdict: Verdict | None
    recovery_s: float | None = None
    problems: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


Scenario = Callable[[Case], Outcome]


def _good(case: Case, n: int, seed: int = 1) -> Traffic:
    return good_messages(case.reviews, case.posts, n, tag=f"{case.tag}-s{seed}", seed=seed)


def _poison(case: Case) -> Traffic:
    return poison_messages(case.reviews, case.posts, tag=case.tag, max_bytes=MAX_BYTES)


def _drain(case: Case, timeout: float = 120) -> float:
    """Start a long-running worker, wait until it has committed everything, stop it with SIGTERM."""
    w = case.start()
    took = case.wait_caught_up(timeout)
    w.wait_ready()
    w.signal(signal.SIGTERM)
    rc = w.wait(60)
    if rc != 0:
        raise AssertionError(f"worker exited {rc} after SIGTERM")
    return took


def _wait_progress(case: Case, below: int, timeout: float = 90) -> None:
    """Wait until the group's lag is below `below` (the worker is mid-stream)."""
    deadline = time.monotonic() + timeout
    while case.lag() >= max(1, below):
        if time.monotonic() > deadline:
            raise TimeoutError("the worker made no progress")
        time.sleep(0.2)


def _reset_to_earliest(case: Case) -> None:
    admin = KafkaAdminClient(bootstrap_servers=case.stack.bootstrap)
    try:
        specs = {
            TopicPartition(t, p): OffsetSpec.EARLIEST for t in case.inputs for p in range(case.partitions)
        }
        errors = {tp: r["error"] for tp, r in admin.reset_group_offsets(case.group, specs).items()}
        bad = {tp: e for tp, e in errors.items() if e is not None and getattr(e, "errno", 0) != 0}
        if bad:
            raise RuntimeError(f"offset reset failed: {bad}")
    finally:
        admin.close()


def _feeder(case: Case, *, chunks: int, size: int, interval_s: float, first_seed: int) -> threading.Thread:
    """A thread that produces `chunks` batches of fresh messages, one every interval_s (steady traffic).
    The messages join the ground truth now, so a scenario that fails mid-way still counts them as expected."""
    batches = [_good(case, size, seed=first_seed + k) for k in range(chunks)]
    for t in batches:
        case.truth.extend(t)

    def feed() -> None:
        for t in batches:
            produce(case.stack.bootstrap, t.records)
            time.sleep(interval_s)

    return threading.Thread(target=feed, daemon=True)


def _catch_up_and_stop(
    case: Case, feeder: threading.Thread, workers: list[Worker], *, stop_wait_s: float
) -> tuple[float, list[str]]:
    """After a fault: seconds until the feeder is done and the group caught up, then SIGTERM each worker;
    returns that time and a problem per worker that did not exit 0."""
    t0 = time.monotonic()
    feeder.join()
    case.wait_caught_up(180)
    recovery = time.monotonic() - t0
    problems = []
    for w in workers:
        w.signal(signal.SIGTERM)
        if (rc := w.wait(stop_wait_s)) != 0:
            problems.append(f"worker {w.pid} exited {rc} on SIGTERM")
    return recovery, problems


# ------------------------------------------------------------------------------------------- scenarios


def f1_baseline(case: Case) -> Outcome:
    case.create_topics()
    case.produce(_good(case, 400))
    case.produce(_poison(case))
    case.run_until_idle()
    return Outcome(case.verify(max_duplicates=0))


def f2_kill_random(case: Case) -> Outcome:
    rng = random.Random(2)
    case.create_topics()
    case.produce(_good(case, 6000))
    kills = 0
    lag_at_kill = []
    for i in range(5):
        w = case.start()
        if i == 0:
            time.sleep(rng.uniform(0.5, 3))  # while still loading the model
        else:
            _wait_progress(case, case.lag() - BATCH_SIZE)
            time.sleep(rng.uniform(0, 0.5))  # mid-stream, at a random point of a batch
        w.kill()
        kills += 1
        lag_at_kill.append(case.lag())
    recovery = _drain(case)
    return Outcome(
        case.verify(max_duplicates=kills * BATCH_SIZE),
        recovery,
        notes={"kills": kills, "lag_at_kill": lag_at_kill},
    )


def f3_kill_at_each_point(case: Case) -> Outcome:
    case.create_topics()
    case.produce(_good(case, 1200))
    case.produce(_poison(case))
    problems = []
    for point in FAULT_POINTS:
        w = case.start(SENTIMENT_FAULT_POINT=point, SENTIMENT_FAULT_AFTER_N="2")
        rc = w.wait(120)
        if rc != -signal.SIGKILL:
            problems.append(f"{point}: worker exited {rc}, expected SIGKILL by the fault hook")
    recovery = _drain(case)
    return Outcome(case.verify(max_duplicates=len(FAULT_POINTS) * BATCH_SIZE), recovery, problems)


def f4_sigterm_under_load(case: Case) -> Outcome:
    case.create_topics()
    first = _good(case, 600, seed=1)
    case.produce(first)
    feeder = _feeder(case, chunks=5, size=200, interval_s=1, first_seed=2)
    w = case.start()
    _wait_progress(case, 600)
    feeder.start()
    time.sleep(1.5)
    t0 = time.monotonic()
    w.signal(signal.SIGTERM)
    rc = w.wait(60)
    drain_s = time.monotonic() - t0
    feeder.join()
    problems = [] if rc == 0 else [f"worker exited {rc} after SIGTERM, expected 0"]
    if drain_s > 30:
        problems.append(f"SIGTERM drain took {drain_s:.1f}s")
    _drain(case)
    return Outcome(case.verify(max_duplicates=0), drain_s, problems, {"drain_s": round(drain_s, 2)})


# The one line a worker exits with when a transaction call ran past SENTIMENT_TRANSACTION_CALL_TIMEOUT_S.
_CALL_TIMED_OUT = "did not finish within"


def _caught_up_restarting(
    case: Case,
    w: Worker,
    timeout: float,
    restartable: Callable[[str], bool] = lambda last: _CALL_TIMED_OUT in last,
    **env: str,
) -> tuple[Worker, float, list[str]]:
    """wait_caught_up, acting as the worker's supervisor: a worker that exits 1 with a last line that
    ``restartable`` accepts (by default: a transaction call ran past its bound) is started again, the
    documented way on; any other exit is a problem. Returns the worker running at the end, the seconds taken
    and the exits seen."""
    t0 = time.monotonic()
    exits: list[str] = []
    while case.lag():
        if w.proc.poll() is not None:
            last = (w.log().strip().splitlines() or [""])[-1]
            if w.proc.returncode != 1 or not restartable(last):
                raise AssertionError(f"worker exited {w.proc.returncode}: {last[:300]}")
            exits.append(last[:300])
            w = case.start(**env)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{case.name}: lag not 0 after {timeout:.0f}s")
        time.sleep(0.5)
    return w, time.monotonic() - t0, exits


def f5_broker_kill(case: Case) -> Outcome:
    case.create_topics()
    case.produce(_good(case, 3000))
    w = case.start()
    _wait_progress(case, 2700)
    case.stack.kill("kafka")
    time.sleep(2)
    case.stack.restart_kafka()
    w, recovery, exits = _caught_up_restarting(case, w, 180)
    w.signal(signal.SIGTERM)
    rc = w.wait(60)
    problems = [] if rc == 0 else [f"worker exited {rc}"]
    failed = case.failed_batches()
    v = case.verify(max_duplicates=(1 + failed + len(exits)) * BATCH_SIZE)
    return Outcome(v, recovery, problems, {"failed_batches": failed, "restarts_after_call_timeout": exits})


def _fatal_kafka_line(last: str) -> bool:
    """The one line of a worker that stopped because its transactional producer cannot go on."""
    return last.startswith("sentiment-worker: ") and (
        _CALL_TIMED_OUT in last or "Kafka transaction" in last or "Kafka producer failed fatally" in last
    )


def f23_transaction_call_bound(case: Case) -> Outcome:
    """The broker frozen 65 s: longer than a flush's 60 s bound, so whatever call the worker waits in
    fails, and longer than a transaction call's bound (3 s here). Exactly once: the worker exits 1 with one
    line instead of hanging (the bound's, or kafka-python's own fatal producer error after its 30 s request
    timeout; both seen) and a restart resumes with the output exact. With shorter freezes (20 s, 4 runs)
    the worker always waited in a flush and rode the freeze out. At least once has no transaction calls: the
    worker rides it out. Which happened is in the notes."""
    case.create_topics()
    case.produce(_good(case, 2000))
    env = {"SENTIMENT_TRANSACTION_CALL_TIMEOUT_S": "3"}
    w = case.start(**env)
    _wait_progress(case, 1800)
    case.stack.signal("kafka", signal.SIGSTOP)
    try:
        time.sleep(65)
    finally:
        case.stack.signal("kafka", signal.SIGCONT)
    problems: list[str] = []
    try:
        w, recovery, exits = _caught_up_restarting(case, w, 180, _fatal_kafka_line, **env)
    except AssertionError as exc:
        return Outcome(case.verify(max_duplicates=10 * BATCH_SIZE), None, [str(exc)], {})
    if case.guarantee != "exactly_once" and exits:
        problems.append(f"at least once, yet the worker stopped: {exits}")
    w.signal(signal.SIGTERM)
    rc = w.wait(60)
    if rc != 0:
        problems.append(f"worker exited {rc} on SIGTERM")
    failed = case.failed_batches()
    v = case.verify(max_duplicates=(1 + failed + len(exits)) * BATCH_SIZE)
    notes = {
        "failed_batches": failed,
        "exits": exits,
        "past_the_bound": sum(_CALL_TIMED_OUT in e for e in exits),
    }
    return Outcome(v, recovery, problems, notes)


def f6_broker_paused(case: Case) -> Outcome:
    case.create_topics()
    case.produce(_good(case, 3000))
    w = case.start()
    _wait_progress(case, 2700)
    case.stack.signal("kafka", signal.SIGSTOP)
    try:
        time.sleep(20)
    finally:
        case.stack.signal("kafka", signal.SIGCONT)
    recovery = case.wait_caught_up(180)
    w.signal(signal.SIGTERM)
    rc = w.wait(60)
    problems = [] if rc == 0 else [f"worker exited {rc}"]
    failed = case.failed_batches()
    v = case.verify(max_duplicates=(1 + failed) * BATCH_SIZE)
    return Outcome(v, recovery, problems, {"failed_batches": failed})


def f7_broker_down_at_start(case: Case) -> Outcome:
    case.create_topics()
    case.produce(_good(case, 300))
    problems = []
    case.stack.kill("kafka")
    try:
        # a: the broker stays down longer than CONNECT_TIMEOUT_S -> one line, exit 1
        t0 = time.monotonic()
        w = case.start(SENTIMENT_CONNECT_TIMEOUT_S="3")
        rc = w.wait(90)
        if rc != 1:
            problems.append(f"with the broker down the worker exited {rc}, expected 1")
        gave_up_s = time.monotonic() - t0
        # b: the broker comes back within CONNECT_TIMEOUT_S -> the worker starts normally
        w = case.start(SENTIMENT_CONNECT_TIMEOUT_S="60")
        time.sleep(5)
    finally:
        case.stack.restart_kafka()
    recovery = case.wait_caught_up(120)
    w.signal(signal.SIGTERM)
    if w.wait(60) != 0:
        problems.append("worker did not exit 0 on SIGTERM")
    return Outcome(
        case.verify(max_duplicates=0), recovery, problems, {"gave_up_after_s": round(gave_up_s, 1)}
    )


def f8_rebalances(case: Case) -> Outcome:
    """Under steady traffic a second worker joins and leaves (SIGTERM), a third joins and is killed (-9)."""
    case.partitions = 4
    case.create_topics()
    feeder = _feeder(case, chunks=60, size=150, interval_s=0.4, first_seed=10)

    def member(n: int) -> Worker:
        # exactly once: two instances on one host need distinct transactional ids
        return case.start(SENTIMENT_TRANSACTIONAL_ID=f"{case.group}-{n}")

    a = member(0)
    a.wait_ready()
    feeder.start()
    b = member(1)
    b.wait_ready()
    time.sleep(2)
    b.signal(signal.SIGTERM)
    problems = [] if b.wait(60) == 0 else ["the leaving worker did not exit 0 on SIGTERM"]
    c = member(2)
    c.wait_ready()
    time.sleep(2)
    feeding = feeder.is_alive()
    c.kill()
    t0 = time.monotonic()
    feeder.join()
    case.wait_caught_up(180)
    recovery = time.monotonic() - t0
    a.signal(signal.SIGTERM)
    if a.wait(60) != 0:
        problems.append("the first worker did not exit 0 on SIGTERM")
    if not feeding:
        problems.append("traffic ended before the kill: the scenario tested less than it should")
    assigned = sum(w.log().count('"partitions assigned"') for w in case.workers)
    failed = case.failed_batches()
    v = case.verify(max_duplicates=(1 + failed) * BATCH_SIZE)
    return Outcome(v, recovery, problems, {"assignments": assigned, "failed_batches": failed})


def f9_zombie(case: Case) -> Outcome:
    """A worker frozen mid-stream (SIGSTOP, like a stalled VM or a batch far slower than its deadlines) for
    longer than the session timeout: the group gives its partitions to the other worker; when it thaws, its
    in-flight batch must not be committed over the new owner's work (a zombie)."""
    case.create_topics()
    feeder = _feeder(case, chunks=50, size=150, interval_s=0.4, first_seed=10)
    a = case.start(SENTIMENT_TRANSACTIONAL_ID=f"{case.group}-0")
    a.wait_ready()
    feeder.start()
    b = case.start(SENTIMENT_TRANSACTIONAL_ID=f"{case.group}-1")
    b.wait_ready()
    time.sleep(2)
    a.signal(signal.SIGSTOP)
    try:
        time.sleep(15)  # > SESSION_TIMEOUT_MS (6 s): b now owns every partition
    finally:
        a.signal(signal.SIGCONT)
    recovery, problems = _catch_up_and_stop(case, feeder, [a, b], stop_wait_s=60)
    failed = case.failed_batches()
    v = case.verify(max_duplicates=(1 + failed) * BATCH_SIZE)
    return Outcome(v, recovery, problems, {"failed_batches": failed})


def f10_redis_down(case: Case) -> Outcome:
    case.create_topics()
    case.produce(_good(case, 2000))
    w = case.start()
    _wait_progress(case, 1800)
    case.stack.kill("redis")
    try:
        time.sleep(20)
    finally:
        case.stack.restart_redis()
    recovery = case.wait_caught_up(180)
    w.signal(signal.SIGTERM)
    rc = w.wait(60)
    problems = [] if rc == 0 else [f"worker exited {rc}"]
    # A batch that fails at the Redis step was published already; its retries only retry Redis and the
    # commit, so even at least once the output holds no duplicates.
    failed = case.failed_batches()
    v = case.verify(max_duplicates=0)
    return Outcome(v, recovery, problems, {"failed_batches": failed})


def f11_redis_data_loss(case: Case) -> Outcome:
    """Redis loses everything between two worker runs: the next worker sees its watermarks behind Kafka's
    committed offsets and re-counts the committed records without publishing them again."""
    case.create_topics()
    case.produce(_good(case, 300, seed=1))
    case.produce(_poison(case))
    case.run_until_idle()
    case.stack.wipe_redis()
    case.stack.restart_redis()
    t0 = time.monotonic()
    case.produce(_good(case, 300, seed=2))
    w = case.run_until_idle()
    replayed = w.log().count("re-counting without publishing")
    problems = [] if replayed else ["the worker did not notice that Redis lost its watermarks"]
    return Outcome(
        case.verify(max_duplicates=0), time.monotonic() - t0, problems, {"replayed_partitions": replayed}
    )


def f12_poison(case: Case) -> Outcome:
    case.create_topics()
    case.produce(_poison(case))
    case.produce(_good(case, 100))
    case.run_until_idle()
    return Outcome(case.verify(max_duplicates=0), notes={"poison": len(case.truth.bad)})


def f13_oversized(case: Case) -> Outcome:
    """Inputs far above SENTIMENT_MAX_MESSAGE_BYTES, one of them above the consumer's fetch size, and a DLQ
    topic whose max.message.bytes (64 KiB) is below the copies of the largest: every one is dead-lettered,
    the small enough ones with their value, the others without it, and nothing stalls."""
    dlq_limit = 64 * 1024
    case.create_topics(
        configs={
            case.reviews: {"max.message.bytes": str(4 << 20)},
            case.posts: {"max.message.bytes": str(4 << 20)},
            case.dlq: {"max.message.bytes": str(dlq_limit)},
        }
    )
    rng = random.Random(13)

    def text(n: int) -> str:  # random letters: zstd cannot shrink them below the DLQ topic's limit
        return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz ", k=n))

    big = {
        f"{case.tag}-big-2mib": json.dumps({"id": "x", "text": text(2 << 20), "platform": "x"}).encode(),
        f"{case.tag}-big-40kib": json.dumps({"id": "x", "text": text(40_000), "platform": "x"}).encode(),
        f"{case.tag}-big-binary": rng.randbytes(1536 << 10),
    }
    bad = Traffic()
    for key, value in big.items():
        bad.bad[key] = "oversize"
        bad.records.append((case.posts, key.encode(), value))
    case.produce(_good(case, 200))
    case.produce(bad)
    t0 = time.monotonic()
    case.run_until_idle()
    recovery = time.monotonic() - t0
    problems = []
    copies = {key: (value, headers) for key, value, headers in _dlq_records(case)}
    for key, value in big.items():
        if key not in copies:
            continue  # the verifier reports it as lost
        got, headers = copies[key]
        detail = headers.get(H_DLQ_DETAIL, b"").decode()
        if len(value) <= dlq_limit - 4096 and got != value:
            problems.append(f"{key}: the dead letter lost a value that fits the DLQ topic")
        if len(value) > dlq_limit and (got or "too large for the DLQ topic" not in detail):
            problems.append(f"{key}: expected an empty value and a detail saying why, got {len(got)} bytes")
    failed = case.failed_batches()
    return Outcome(
        case.verify(max_duplicates=failed * BATCH_SIZE), recovery, problems, {"failed_batches": failed}
    )


def f14_output_topic_missing(case: Case) -> Outcome:
    """The output topic does not exist when the worker starts (the broker does not auto-create topics): every
    batch fails and nothing is committed until an operator creates it; then everything flows."""
    case.create_topics(output=False)
    case.produce(_good(case, 300))
    case.produce(_poison(case))
    w = case.start(SENTIMENT_CONNECT_TIMEOUT_S="3")  # also the producer's metadata wait per send
    w.wait_ready()
    deadline = time.monotonic() + 90
    while case.failed_batches() < 2:
        if time.monotonic() > deadline or w.proc.poll() is not None:
            raise AssertionError("the worker did not report failed batches while the topic was missing")
        time.sleep(0.5)
    problems = []
    if (lag := case.lag()) != len(case.truth.good) + len(case.truth.bad):
        problems.append(f"records were committed while the output topic was missing (lag {lag})")
    t0 = time.monotonic()
    case.create([case.out])
    case.wait_caught_up(120)
    recovery = time.monotonic() - t0
    w.signal(signal.SIGTERM)
    if (rc := w.wait(60)) != 0:
        problems.append(f"worker exited {rc} on SIGTERM")
    failed = case.failed_batches()
    # Dead letters of a failed batch may have gone out before the send to the missing topic failed.
    v = case.verify(max_duplicates=failed * BATCH_SIZE)
    return Outcome(v, recovery, problems, {"failed_batches": failed})


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def f15_slow_network(case: Case) -> Outcome:
    """The worker reaches the broker through a slow link (30 ms per chunk, 48 KiB/s each way): it keeps up,
    loses and repeats nothing, and its memory stays flat (each batch is flushed before the next poll, so
    at most one batch waits in the producer)."""
    case.create_topics()
    case.produce(_good(case, 500))
    case.produce(_poison(case))
    with Proxy(case.stack.proxy_port, case.stack.proxied_port, link=Link(0.03, 48 * 1024)) as proxy:
        w = case.start(SENTIMENT_KAFKA_BOOTSTRAP_SERVERS=case.stack.proxy_bootstrap)
        w.wait_ready()
        start_rss = peak_rss = _rss_mib(w.pid)
        t0 = time.monotonic()
        while case.lag():
            if time.monotonic() - t0 > 240:
                raise TimeoutError("F15: lag not 0 after 240 s")
            peak_rss = max(peak_rss, _rss_mib(w.pid))
            time.sleep(0.25)
        took = time.monotonic() - t0
        w.signal(signal.SIGTERM)
        rc = w.wait(60)
        forwarded = proxy.bytes_forwarded
    problems = [] if rc == 0 else [f"worker exited {rc} on SIGTERM"]
    growth = peak_rss - start_rss
    if growth > 256:
        problems.append(f"worker memory grew by {growth:.0f} MiB on the slow link")
    if forwarded < 100_000:
        problems.append(f"only {forwarded} bytes went through the proxy: the worker bypassed it")
    notes = {
        "rss_start_mib": round(start_rss),
        "rss_peak_mib": round(peak_rss),
        "proxy_bytes": forwarded,
        "msg_per_s": round((len(case.truth.good) + len(case.truth.bad)) / took, 1),
    }
    return Outcome(case.verify(max_duplicates=0), took, problems, notes)


def f16_network_partition(case: Case) -> Outcome:
    """Worker a reaches the broker through the proxy, worker b directly. The proxy cuts a off for 20 s
    (> SESSION_TIMEOUT_MS, 6 s): b takes every partition; when the link heals a rejoins, its batch from
    before the cut is not committed over b's work, and nothing is lost."""
    case.create_topics()
    feeder = _feeder(case, chunks=50, size=150, interval_s=0.4, first_seed=10)
    with Proxy(case.stack.proxy_port, case.stack.proxied_port) as proxy:
        a = case.start(
            SENTIMENT_KAFKA_BOOTSTRAP_SERVERS=case.stack.proxy_bootstrap,
            SENTIMENT_TRANSACTIONAL_ID=f"{case.group}-0",
        )
        a.wait_ready()
        feeder.start()
        b = case.start(SENTIMENT_TRANSACTIONAL_ID=f"{case.group}-1")
        b.wait_ready()
        time.sleep(2)
        proxy.partition()
        try:
            time.sleep(20)
        finally:
            proxy.heal()
        recovery, problems = _catch_up_and_stop(case, feeder, [a, b], stop_wait_s=90)
    assigned_b = b.log().count('"partitions assigned"')
    if assigned_b < 2:
        problems.append("the directly connected worker never took over the cut-off worker's partitions")
    failed = case.failed_batches()
    v = case.verify(max_duplicates=(1 + failed) * BATCH_SIZE)
    return Outcome(v, recovery, problems, {"failed_batches": failed, "assignments_b": assigned_b})


def f17_model_oom(case: Case) -> Outcome:
    """The model runs out of memory on forward passes above 100 padded tokens (fault hook): batches are split
    and retried; a text that still fails alone (a 128-token one) is dead-lettered as inference_failed."""
    case.create_topics()
    case.produce(_good(case, 300))
    long = Traffic()
    for j in range(5):
        msg = {"id": f"{case.tag}-long{j}", "text": " ".join(["great"] * 200), "platform": "x"}
        long.bad[msg["id"]] = "inference_failed"
        long.records.append((case.posts, msg["id"].encode(), json.dumps(msg).encode()))
    case.produce(long)
    w = case.run_until_idle(SENTIMENT_FAULT_OOM_TOKENS="100")
    splits = w.log().count("forward pass out of memory; splitting it")
    problems = [] if splits else ["no forward pass ran out of memory: the scenario tested nothing"]
    return Outcome(case.verify(max_duplicates=0), problems=problems, notes={"oom_splits": splits})


def f18_canaries(case: Case) -> Outcome:
    """Secrets (in the Redis URL, a password setting) and message texts never reach the logs, even at DEBUG,
    nor the dead-letter headers: in a normal run, with Redis unreachable, and with a bad setting."""
    secret_url, secret_ssl, secret_redis = (f"SECRET{uuid.uuid4().hex}" for _ in range(3))
    text_canary = f"TEXTCANARY{uuid.uuid4().hex}"
    case.create_topics()
    good = _good(case, 60)
    for k, (topic, key, value) in enumerate(good.records):  # every text carries the canary
        msg = json.loads(value or b"{}")
        msg["text"] = f"{msg['text']} {text_canary}" if k % 2 else f"{text_canary} {msg['text']}"
        good.records[k] = (topic, key, json.dumps(msg).encode())
    case.produce(good)
    bad = Traffic()
    for j, value in enumerate(
        [
            f'{{"id": "x", "text": "{text_canary}'.encode(),  # invalid JSON
            json.dumps({"id": text_canary, "text": 5, "platform": "x"}).encode(),  # invalid fields
            json.dumps({"id": "x", "text": text_canary, "kind": text_canary}).encode(),  # unknown kind
            json.dumps({"id": "x", "text": text_canary * 500, "platform": "x"}).encode(),  # oversize
            text_canary.encode() + b"\xff",  # not UTF-8
        ]
    ):
        bad_key = f"{case.tag}-canary-bad{j}"
        bad.bad[bad_key] = ""
        bad.records.append((case.posts, bad_key.encode(), value))
    case.produce(bad)
    port = case.stack.redis_port
    case.run_until_idle(
        SENTIMENT_LOG_LEVEL="DEBUG",
        SENTIMENT_REDIS_URL=f"redis://default:{secret_url}@127.0.0.1:{port}/0",
        SENTIMENT_KAFKA_SSL_PASSWORD=secret_ssl,
    )
    unreachable = case.start(
        "--until-idle",
        "1",
        SENTIMENT_LOG_LEVEL="DEBUG",
        SENTIMENT_REDIS_URL=f"redis://default:{secret_url}@127.0.0.1:1/0",
        SENTIMENT_CONNECT_TIMEOUT_S="2",
    )
    bad_setting = case.start(SENTIMENT_REDIS_PASSWORD=secret_redis, SENTIMENT_BATCH_SIZE="zero")
    problems = []
    if (rc := unreachable.wait(120)) != 1:
        problems.append(f"with Redis unreachable the worker exited {rc}, expected 1")
    if (rc := bad_setting.wait(120)) != 2:
        problems.append(f"with a bad setting the worker exited {rc}, expected 2")
    logs = "\n".join(w.log() for w in case.workers)
    for name, canary in (("Redis URL password", secret_url), ("SSL password", secret_ssl)):
        if canary in logs:
            problems.append(f"the {name} appears in the logs")
    if secret_redis in logs:
        problems.append("the Redis password appears in the logs")
    if text_canary in logs:
        problems.append("message text appears in the logs")
    leaked = [h for h in dlq_headers(case) if text_canary.encode() in h]
    if leaked:
        problems.append(f"message text appears in {len(leaked)} dead-letter header values")
    if '"level": "DEBUG"' not in logs:
        problems.append("no DEBUG line was logged: the check proves little")
    return Outcome(case.verify(max_duplicates=0), problems=problems, notes={"log_bytes": len(logs)})


def _dlq_records(case: Case) -> list[tuple[str, bytes, dict[str, bytes]]]:
    """(key, value, headers) of every record on the DLQ topic."""
    consumer = KafkaConsumer(
        bootstrap_servers=case.stack.bootstrap, enable_auto_commit=False, fetch_max_bytes=8 << 20
    )
    try:
        tps = [TopicPartition(case.dlq, p) for p in range(case.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[tuple[str, bytes, dict[str, bytes]]] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(
                    ((r.key or b"").decode(errors="replace"), r.value or b"", dict(r.headers)) for r in batch
                )
        return out
    finally:
        consumer.close()


def dlq_headers(case: Case) -> list[bytes]:
    return [v for _, _, headers in _dlq_records(case) for v in headers.values()]


def f19_unsafe_model(case: Case) -> Outcome:
    case.create_topics()
    case.produce(_good(case, 20))
    unsafe = case.work / f"{case.tag}-pickle-model"
    shutil.rmtree(unsafe, ignore_errors=True)
    shutil.copytree(case.model_dir, unsafe)
    for f in unsafe.glob("*.safetensors"):
        f.unlink()
    canary = case.work / f"{case.tag}-unpickled"

    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(canary), "w"))  # unpickling this creates the canary file

    (unsafe / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": Boom()}))
    w = case.start(SENTIMENT_MODEL_DIR=str(unsafe))
    rc = w.wait(120)
    problems = []
    if rc != 1:
        problems.append(f"worker exited {rc} on a pickle-only model folder, expected 1")
    if canary.exists():
        problems.append("the pickle was loaded: its payload ran")
    lines = [x for x in w.log().splitlines() if x.strip()]
    if not lines or "safetensors" not in lines[-1]:
        problems.append(f"last log line does not name safetensors: {lines[-1:]!r}")
    if case.lag() != 20:
        problems.append("records were consumed with an unusable model")
    return Outcome(None, problems=problems, notes={"exit": rc})


def f20_reset_to_earliest(case: Case) -> Outcome:
    case.create_topics()
    case.produce(_good(case, 300))
    case.produce(_poison(case))
    case.run_until_idle()
    first = case.verify(max_duplicates=0)
    t0 = time.monotonic()
    _reset_to_earliest(case)
    case.run_until_idle()
    total = len(case.truth.good) + len(case.truth.bad)
    v = case.verify(replayed=total)
    problems = [] if first.passed else [f"before the reset: {p}" for p in first.problems]
    if v.duplicates != total:
        problems.append(f"a replay of {total} records produced {v.duplicates} extra copies")
    return Outcome(v, time.monotonic() - t0, problems)


def _near_copy(src: Path, dst: Path) -> Path:
    """The same model with one classifier bias moved by 1e-6: another version (other weights, other hash)
    that labels everything as the original does, so a record redelivered across a swap keeps its label and
    the verifier's one-label-per-id rule still holds."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst, dirs_exist_ok=True)
    tensors = load_file(src / "model.safetensors")
    tensors["classifier.bias"] = tensors["classifier.bias"] + 1e-6
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _registry(case: Case) -> tuple[Registry, str, str]:
    """A registry in the case's folder with two versions: A (the case's model, champion) and B."""
    reg = Registry(case.work / f"{case.tag}-registry")
    other = _near_copy(case.model_dir, case.work / f"{case.tag}-model-b" / case.model_dir.name)
    a, b = reg.register(case.model_dir)["version"], reg.register(other)["version"]
    reg.promote(a)
    return reg, a, b


def _versions_seen(case: Case) -> Counter[str]:
    records = read_topic(case.stack.bootstrap, case.out, "read_committed")
    return Counter(json.loads(r.value)["model"]["version"] for r in records)


def f21_kill_during_model_load(case: Case) -> Outcome:
    """kill -9 while the worker loads a newly promoted version: nothing is lost, the registry stays valid
    and the next worker starts on the new champion."""
    reg, a, b = _registry(case)
    case.create_topics()
    env = {"SENTIMENT_MODEL_REGISTRY": str(reg.root), "SENTIMENT_MODEL_POLL_S": "0.2"}
    feeder = _feeder(case, chunks=20, size=60, interval_s=0.2, first_seed=50)
    w = case.start(**env)
    w.wait_ready()
    feeder.start()
    _wait_progress(case, case.lag() - BATCH_SIZE)
    reg.promote(b)
    deadline = time.monotonic() + 30
    while '"loading model version"' not in w.log() and time.monotonic() < deadline:
        time.sleep(0.01)
    loading = '"loading model version"' in w.log()
    w.kill()
    problems = [] if loading else ["the worker never started loading the new version: nothing was tested"]
    if reg.aliases() != {"champion": b, "previous": a}:
        problems.append(f"aliases changed by the kill: {reg.aliases()}")
    problems += [f"version {v} no longer verifies: {e}" for v in (a, b) if (e := _verify_error(reg, v))]
    feeder.join()
    after = case.run_until_idle(5, 180, **env)
    if f'"version": "{b}"' not in after.log().split('"worker started"', 1)[-1].split("\n", 1)[0]:
        problems.append("the restarted worker did not start on the new champion")
    seen = _versions_seen(case)
    return Outcome(
        case.verify(max_duplicates=2 * BATCH_SIZE),
        problems=problems,
        notes={"results_by_version": dict(seen)},
    )


def _verify_error(reg: Registry, version: str) -> str | None:
    try:
        reg.verify(version)
    except RegistryError as exc:
        return str(exc)
    return None


def f22_alias_flips(case: Case) -> Outcome:
    """Ten alias flips in ten seconds under steady load: no loss, exact counts, every result names A or B,
    and the worker's memory after five swaps within 15 % of after one (the old model is freed)."""
    reg, a, b = _registry(case)
    case.create_topics()
    env = {"SENTIMENT_MODEL_REGISTRY": str(reg.root), "SENTIMENT_MODEL_POLL_S": "0.2"}
    feeder = _feeder(case, chunks=60, size=40, interval_s=0.2, first_seed=80)
    w = case.start(**env)
    w.wait_ready()
    feeder.start()
    rss: dict[int, float] = {}
    for flip in range(10):
        reg.promote(b if flip % 2 == 0 else a)
        time.sleep(1.0)
        swaps = w.log().count('"model swapped"')
        rss.setdefault(swaps, _rss_mib(w.pid))
    recovery, problems = _catch_up_and_stop(case, feeder, [w], stop_wait_s=60)
    swaps = w.log().count('"model swapped"')
    if swaps < 5:
        problems.append(f"only {swaps} swaps in 10 flips")
    if 1 in rss and 5 in rss and rss[5] > 1.15 * rss[1]:
        problems.append(f"RSS grew from {rss[1]:.0f} MiB after one swap to {rss[5]:.0f} MiB after five")
    seen = _versions_seen(case)
    if set(seen) - {a, b}:
        problems.append(f"results from unknown versions: {sorted(set(seen) - {a, b})}")
    return Outcome(
        case.verify(max_duplicates=0),
        recovery,
        problems,
        {"swaps": swaps, "rss_mib_after_swaps": rss, "results_by_version": dict(seen)},
    )


def f1_real_model(case: Case) -> Outcome:
    """F1 with the trained model (run.py gives REAL_MODEL scenarios models/minilm-mixed)."""
    return f1_baseline(case)


# ----------------------------------------------------------------------------------------------- registry

TITLES = {
    "F1": "baseline",
    "F1r": "baseline, real model",
    "F2": "kill -9 worker at random x5",
    "F3": "kill at each commit point",
    "F4": "SIGTERM drain under load",
    "F5": "broker kill -9 + restart",
    "F6": "broker SIGSTOP 20 s",
    "F7": "broker down at worker start",
    "F8": "rebalance: 2nd worker joins/leaves",
    "F9": "zombie: worker frozen > session timeout",
    "F10": "Redis down 20 s",
    "F11": "Redis restart with data loss",
    "F12": "poison records",
    "F13": "oversized input and output",
    "F14": "output topic missing a while",
    "F15": "slow network / backpressure",
    "F16": "partition > session timeout",
    "F17": "model OOM on a big batch",
    "F18": "secret/text canaries not logged",
    "F19": "unsafe (pickle) model folder",
    "F20": "offsets reset to earliest",
    "F21": "kill -9 during a model load",
    "F22": "10 alias flips in 10 s",
    "F23": "broker frozen 65 s: transaction calls bounded",
}

SCENARIOS: dict[str, Scenario] = {
    "F1": f1_baseline,
    "F1r": f1_real_model,
    "F2": f2_kill_random,
    "F3": f3_kill_at_each_point,
    "F4": f4_sigterm_under_load,
    "F5": f5_broker_kill,
    "F6": f6_broker_paused,
    "F7": f7_broker_down_at_start,
    "F8": f8_rebalances,
    "F9": f9_zombie,
    "F10": f10_redis_down,
    "F11": f11_redis_data_loss,
    "F12": f12_poison,
    "F13": f13_oversized,
    "F14": f14_output_topic_missing,
    "F15": f15_slow_network,
    "F16": f16_network_partition,
    "F17": f17_model_oom,
    "F18": f18_canaries,
    "F19": f19_unsafe_model,
    "F20": f20_reset_to_earliest,
    "F21": f21_kill_during_model_load,
    "F22": f22_alias_flips,
    "F23": f23_transaction_call_bound,
}

FAST = ("F1", "F3", "F12", "F13", "F17", "F20", "F21", "F22")
REAL_MODEL = {"F1r"}


def real_model_dir() -> Path:
    return ROOT / "models" / "minilm-mixed"
