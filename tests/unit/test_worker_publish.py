"""The Kafka sink's transaction calls with a fake producer: each one that waits for the broker is bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator
from typing import Any

import pytest
from kafka.errors import CommitFailedError, ProducerFencedError

from worker.loop import FatalError, PartitionsLost
from worker.publish import KafkaSink, bounded


class FakeProducer:
    """Records the calls; the ones named in ``hang`` block until ``release`` is set (a lost broker answer)."""

    def __init__(self, release: threading.Event, hang: set[str], raises: dict[str, Exception]) -> None:
        self.release, self.hang, self.raises = release, hang, raises
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.hang:
            self.release.wait()
        if name in self.raises:
            raise self.raises[name]

    def init_transactions(self) -> None:
        self._call("init_transactions")

    def begin_transaction(self) -> None:
        self._call("begin_transaction")

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any) -> None:
        self._call("send_offsets_to_transaction")

    def commit_transaction(self) -> None:
        self._call("commit_transaction")

    def abort_transaction(self) -> None:
        self._call("abort_transaction")

    def close(self, timeout: float | None = None) -> None:
        self._call("close")


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # lets the calls left hanging by a test end, so no thread outlives it


def make_sink(
    release: threading.Event,
    *,
    hang: Collection[str] = frozenset(),
    raises: dict[str, Exception] | None = None,
) -> tuple[KafkaSink, FakeProducer]:
    made: list[FakeProducer] = []

    def factory(**config: Any) -> FakeProducer:
        assert config["transactional_id"] == "tx-1"
        made.append(FakeProducer(release, set(hang), raises or {}))
        return made[-1]

    sink = KafkaSink(
        client_id="c",
        connect_timeout_s=5,
        kafka_args={"bootstrap_servers": ["127.0.0.1:1"]},
        transactional_id="tx-1",
        group_metadata=lambda: "group-metadata",
        call_timeout_s=0.3,
        make_producer=factory,
    )
    return sink, made[0]


@pytest.mark.parametrize(
    ("hang", "step"),
    [
        ("send_offsets_to_transaction", "commit"),
        ("commit_transaction", "commit"),
        ("abort_transaction", "abort"),
    ],
)
def test_a_transaction_call_that_never_returns_is_fatal_within_the_bound(
    release: threading.Event, hang: str, step: str
) -> None:
    sink, producer = make_sink(release, hang={hang})
    sink.begin()
    t0 = time.monotonic()
    with pytest.raises(FatalError) as caught:
        if step == "commit":
            sink.commit({("reviews", 0): 5})
        else:
            sink.abort()
    waited = time.monotonic() - t0
    assert 0.25 <= waited < 2.0
    message = str(caught.value)
    assert "\n" not in message
    assert f"Kafka {hang} did not finish within 0.3s" in message
    assert "SENTIMENT_TRANSACTION_CALL_TIMEOUT_S" in message
    assert producer.calls[-1] == hang


def test_calls_that_answer_in_time_go_through_in_order(release: threading.Event) -> None:
    sink, producer = make_sink(release)
    sink.begin()
    sink.commit({("reviews", 0): 5})
    sink.begin()
    sink.abort()
    sink.abort()  # nothing open any more: no call
    assert producer.calls == [
        "init_transactions",
        "begin_transaction",
        "send_offsets_to_transaction",
        "commit_transaction",
        "begin_transaction",
        "abort_transaction",
    ]


def test_errors_of_bounded_calls_keep_their_meaning(release: threading.Event) -> None:
    sink, _ = make_sink(release, raises={"send_offsets_to_transaction": CommitFailedError("stale member")})
    sink.begin()
    with pytest.raises(PartitionsLost):
        sink.commit({("reviews", 0): 5})
    sink, _ = make_sink(release, raises={"commit_transaction": ProducerFencedError()})
    sink.begin()
    with pytest.raises(FatalError, match="failed fatally: ProducerFencedError"):
        sink.commit({})


def test_bounded_returns_the_value_and_reraises_on_the_callers_thread() -> None:
    assert bounded(lambda: 42, 1.0, "x") == 42
    with pytest.raises(ValueError, match="boom"):
        bounded(lambda: (_ for _ in ()).throw(ValueError("boom")), 1.0, "x")
