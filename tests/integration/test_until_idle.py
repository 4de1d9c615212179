"""`run --until-idle` waits for the whole group, not only its own partitions (real Kafka + Redis).

Another member of the group holds partitions with lag and never processes them, as a member that was
killed does until its session timeout: a worker that only looked at its own partitions would finish those,
see nothing for the idle time and exit 0 with work left behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from tests.integration.helpers import (
    ROOT,
    Topics,
    committed,
    end_offsets,
    make_traffic,
    produce,
    run_worker,
    unique_results,
    worker_env,
)

# A consumer in the worker's group that takes its share of the partitions and never processes or commits
# them: it polls (so it stays in the group through rebalances) with every partition it holds paused.
HOLDER = textwrap.dedent(
    """
    import sys
    from kafka import KafkaConsumer
    bootstrap, group, *topics = sys.argv[1:]
    c = KafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                      auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=1000)
    said = False
    while True:
        c.poll(timeout_ms=200)
        held = c.assignment()
        c.pause(*held)
        if held and not said:
            print("holding", len(held), flush=True)
            said = True
    """
)


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> Topics:
    return Topics(
        reviews=new_topic("reviews", partitions=3),
        posts=new_topic("posts", partitions=3),
        out=new_topic("out", partitions=2),
        dlq=new_topic("dlq"),
        group=new_topic("group"),  # a unique name; the topic itself is not used
    )


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert proc.poll() is None, f"exited {proc.returncode} before {text!r}: {path.read_text()[-800:]}"
        assert time.monotonic() < deadline, f"no {text!r} after {timeout:.0f}s: {path.read_text()[-800:]}"
        time.sleep(0.2)


def test_until_idle_waits_for_partitions_a_killed_member_held(
    kafka_bootstrap: str,
    redis_clean_url: str,
    tiny_model: Callable[..., Path],
    topics: Topics,
    tmp_path: Path,
) -> None:
    traffic = make_traffic(topics, n=400, n_bad=0)
    produce(kafka_bootstrap, traffic.records)
    env = worker_env(
        kafka_bootstrap, redis_clean_url, tiny_model(), topics, SENTIMENT_SESSION_TIMEOUT_MS="6000"
    )
    holder_log = tmp_path / "holder.log"
    holder_out: IO[bytes] = holder_log.open("wb")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, kafka_bootstrap, topics.group, topics.reviews, topics.posts],
        stdout=holder_out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        _wait_for(holder_log, "holding", holder, 60)

        # 1. While the other member holds partitions with lag, the run does not call that done: it gives up
        # after --until-idle-max with one line and exit 1.
        gave_up = run_worker(env, "run", "--until-idle", "1", "--until-idle-max", "4", timeout=120)
        last = gave_up.stderr.strip().splitlines()[-1]
        assert gave_up.returncode == 1, gave_up.stderr[-1500:]
        assert last.startswith("sentiment-worker: --until-idle: idle here, but the group still has "), last
        assert "held by other members" in last and "(--until-idle-max)" in last
        ends = end_offsets(kafka_bootstrap, topics.reviews, topics.posts)
        done = committed(kafka_bootstrap, topics.group)
        assert any(done.get(tp, 0) < end for tp, end in ends.items())

        # 2. A run that is waiting for the group when the holder is killed takes its partitions once its
        # session times out, processes them, and only then stops, with exit 0.
        log_path = tmp_path / "worker.log"
        log_file: IO[bytes] = log_path.open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", "--until-idle", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            cwd=ROOT,
        )
        try:
            _wait_for(log_path, "idle here, but the group is not done", worker, 90)
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
            assert worker.wait(120) == 0, log_path.read_text()[-1500:]
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
            log_file.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        holder_out.close()

    logs = log_path.read_text()
    assert '"idle, stopping"' in logs
    assert committed(kafka_bootstrap, topics.group) == end_offsets(
        kafka_bootstrap, topics.reviews, topics.posts
    )
    results, _ = unique_results(kafka_bootstrap, topics.out)
    assert set(results) == set(traffic.valid)
