"""The services the worker relies on, proven with the same clients it uses: kafka-python and redis-py.

Offsets committed by hand and resumed by a second group member, transactions with read_committed and
read_uncommitted readers, and the Redis features the counters need (pipelines, Lua, pub/sub).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

DEADLINE_S = 20.0
# The broker's default group.min.session.timeout.ms is 6000; shorter would be rejected.
GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


@contextmanager
def producer(bootstrap: str, **config: Any) -> Iterator[KafkaProducer]:
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, **config)
    try:
        yield p
    finally:
        p.close(timeout=10)


@contextmanager
def consumer(bootstrap: str, **config: Any) -> Iterator[KafkaConsumer]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=100, **config)
    try:
        yield c
    finally:
        c.close(autocommit=False)


def poll_until(
    c: KafkaConsumer, done: Callable[[list[Any]], bool], max_records: int | None = None
) -> list[Any]:
    """Poll until done(records so far) holds; fails after DEADLINE_S."""
    records: list[Any] = []
    deadline = time.monotonic() + DEADLINE_S
    while not done(records):
        assert time.monotonic() < deadline, f"gave up after {DEADLINE_S}s with {len(records)} records"
        for batch in c.poll(timeout_ms=200, max_records=max_records).values():
            records.extend(batch)
    return records


def read_to_end(c: KafkaConsumer, tp: TopicPartition) -> list[bytes]:
    """Every value the consumer's isolation level lets it see in `tp`, from offset 0 to the current end."""
    c.assign([tp])
    c.seek_to_beginning(tp)
    end = c.end_offsets([tp])[tp]
    values: list[bytes] = []
    deadline = time.monotonic() + DEADLINE_S
    while c.position(tp) < end:
        assert time.monotonic() < deadline, f"stuck at offset {c.position(tp)} of {end}"
        for batch in c.poll(timeout_ms=200).values():
            values.extend(r.value for r in batch)
    return values


def test_produce_then_consume_keeps_order_keys_and_headers(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic("stack-rt")
    sent = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(5)]
    with producer(kafka_bootstrap) as p:
        metas = [
            p.send(topic, key=k, value=v, headers=[("n", str(i).encode())]) for i, (k, v) in enumerate(sent)
        ]
        p.flush(timeout=10)
        offsets = [m.get(timeout=10).offset for m in metas]
    assert offsets == list(range(5))

    with consumer(kafka_bootstrap, auto_offset_reset="earliest", enable_auto_commit=False) as c:
        c.assign([TopicPartition(topic, 0)])
        got = poll_until(c, lambda rs: len(rs) >= 5)
    assert [(r.key, r.value) for r in got] == sent
    assert [r.headers for r in got] == [[("n", str(i).encode())] for i in range(5)]


def test_new_topic_is_created_with_the_requested_partitions(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    first, second = new_topic("stack-parts", partitions=3), new_topic("stack-parts", partitions=3)
    assert first != second and first.startswith("stack-parts-")
    with consumer(kafka_bootstrap) as c:
        assert c.partitions_for_topic(first) == {0, 1, 2}


def test_second_group_member_resumes_from_committed_offset(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic("stack-group")
    tp = TopicPartition(topic, 0)
    group = f"g-{uuid.uuid4().hex[:8]}"
    with producer(kafka_bootstrap) as p:
        for i in range(10):
            p.send(topic, value=str(i).encode())
        p.flush(timeout=10)

    member = dict(group_id=group, enable_auto_commit=False, auto_offset_reset="earliest", **GROUP_TIMEOUTS)
    with consumer(kafka_bootstrap, **member) as first:
        first.subscribe([topic])
        got = poll_until(first, lambda rs: len(rs) >= 4, max_records=4)
        assert [r.value for r in got[:4]] == [b"0", b"1", b"2", b"3"]
        # Commit after the 4th record only, whatever the client fetched ahead.
        first.commit({tp: OffsetAndMetadata(got[3].offset + 1, "", -1)})
        assert first.committed(tp) == 4

    with consumer(kafka_bootstrap, **member) as second:
        second.subscribe([topic])
        rest = poll_until(second, lambda rs: len(rs) >= 6)
    assert [r.value for r in rest] == [str(i).encode() for i in range(4, 10)]


def test_transactions_commit_and_abort_atomically_with_consumed_offsets(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    src, out = new_topic("stack-txn-in"), new_topic("stack-txn-out")
    src_tp, out_tp = TopicPartition(src, 0), TopicPartition(out, 0)
    group = f"g-{uuid.uuid4().hex[:8]}"
    with producer(kafka_bootstrap) as p:
        for i in range(3):
            p.send(src, value=f"in{i}".encode())
        p.flush(timeout=10)

    member = dict(
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **GROUP_TIMEOUTS,
    )
    with (
        consumer(kafka_bootstrap, **member) as c,
        producer(kafka_bootstrap, transactional_id=f"txn-{uuid.uuid4().hex[:8]}") as tx,
    ):
        c.subscribe([src])
        inputs = poll_until(c, lambda rs: len(rs) >= 3)
        tx.init_transactions()

        tx.begin_transaction()
        tx.send(out, value=b"from-" + inputs[0].value)
        tx.send_offsets_to_transaction({src_tp: OffsetAndMetadata(1, "", -1)}, c.group_metadata())
        tx.commit_transaction()

        tx.begin_transaction()
        tx.send(out, value=b"from-" + inputs[1].value)
        tx.send_offsets_to_transaction({src_tp: OffsetAndMetadata(2, "", -1)}, c.group_metadata())
        tx.flush(timeout=10)
        tx.abort_transaction()

        tx.begin_transaction()
        tx.send(out, value=b"from-" + inputs[1].value + b"-retry")
        tx.commit_transaction()

        # The aborted transaction's offset commit was discarded with its records.
        assert c.committed(src_tp) == 1

    with consumer(kafka_bootstrap, isolation_level="read_committed") as committed_reader:
        assert read_to_end(committed_reader, out_tp) == [b"from-in0", b"from-in1-retry"]
    with consumer(kafka_bootstrap, isolation_level="read_uncommitted") as raw_reader:
        assert read_to_end(raw_reader, out_tp) == [b"from-in0", b"from-in1", b"from-in1-retry"]


def test_redis_set_get_expiry_and_pipeline(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0  # the fixture emptied the DB
    redis_client.set("greeting", "héllo", ex=30)
    assert redis_client.get("greeting") == "héllo".encode()
    assert 0 < redis_client.ttl("greeting") <= 30

    with redis_client.pipeline(transaction=True) as pipe:
        pipe.incrby("n", 2)
        pipe.hincrby("h", "pos", 3)
        pipe.hincrby("h", "neg", 1)
        pipe.expire("h", 60)
        assert pipe.execute() == [2, 3, 1, True]
    assert redis_client.hgetall("h") == {b"pos": b"3", b"neg": b"1"}


def test_redis_lua_script_runs_atomically(redis_client: redis.Redis) -> None:
    script = """
    local total = redis.call('HINCRBY', KEYS[1], ARGV[1], tonumber(ARGV[2]))
    redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
    return {total, redis.call('HLEN', KEYS[1])}
    """
    assert redis_client.eval(script, 1, "counts", "positive", 5, 120) == [5, 1]
    assert redis_client.eval(script, 1, "counts", "negative", 2, 120) == [2, 2]
    registered = redis_client.register_script(script)
    assert registered(keys=["counts"], args=["positive", 1, 120]) == [6, 2]
    assert redis_client.ttl("counts") > 0


def test_redis_pubsub_delivers_a_message(redis_client: redis.Redis) -> None:
    channel = f"ch-{uuid.uuid4().hex[:8]}"
    with redis_client.pubsub(ignore_subscribe_messages=True) as sub:
        sub.subscribe(channel)
        # The subscription is live once the server confirmed it.
        deadline = time.monotonic() + DEADLINE_S
        while redis_client.pubsub_numsub(channel)[0][1] < 1:
            assert time.monotonic() < deadline
            sub.get_message(timeout=0.05)
        assert redis_client.publish(channel, b"ping") == 1
        message = None
        while message is None:
            assert time.monotonic() < deadline, "no pub/sub message"
            message = sub.get_message(timeout=0.2)
    assert message["channel"] == channel.encode()
    assert message["data"] == b"ping"
