"""Kafka producer adapter: send a batch's records, flush, check every delivery; optionally transactional."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from kafka import KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import (
    AuthorizationError,
    CommitFailedError,
    InvalidProducerEpochError,
    MessageSizeTooLargeError,
    ProducerFencedError,
    RecordListTooLargeError,
    UnsupportedForMessageFormatError,
    UnsupportedVersionError,
)

from worker.loop import FatalError, PartitionsLost
from worker.output import DeadLettersTooLarge, OutRecord

# Errors after which a transactional producer cannot continue (Kafka's "fatal" class): restart instead.
_FATAL = (
    ProducerFencedError,
    InvalidProducerEpochError,
    AuthorizationError,
    UnsupportedVersionError,
    UnsupportedForMessageFormatError,
)
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
T = TypeVar("T")


def bounded(call: Callable[[], T], timeout_s: float, what: str) -> T:
    """call() on a daemon thread, waiting at most timeout_s; FatalError when it has not returned by then.

    kafka-python's commit_transaction, abort_transaction and send_offsets_to_transaction wait for the
    broker's answer without a timeout, and after a broker restart that answer can be lost: the fault suite
    saw a worker hang for minutes (F5). A producer whose transaction call never returned is in an unknown
    state, so the only safe way on is a restart: init_transactions then aborts whatever it left open. The
    thread is a daemon, so a call stuck for good does not keep the process from exiting.
    """
    done = threading.Event()
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the caller's thread below
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=target, name=f"kafka-{what}", daemon=True).start()
    if not done.wait(timeout_s):
        raise FatalError(
            f"Kafka {what} did not finish within {timeout_s:g}s (SENTIMENT_TRANSACTION_CALL_TIMEOUT_S); "
            "exiting so that a restart aborts the open transaction and resumes from the committed offsets"
        )
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


class PublishError(Exception):
    """At least one record of the batch was not acknowledged; the batch must not be committed."""


class KafkaSink:
    """acks=all with idempotence (no duplicates from producer retries) and zstd compression.

    With a transactional_id (exactly once) the sink also runs the batch's transaction: begin(), then
    publish(), then commit(offsets) sends the consumed offsets into the transaction with the consumer's group
    metadata (KIP-447: the broker rejects offsets from a consumer that lost its partitions, so a zombie's
    transaction can only abort) and commits it. init_transactions() at start aborts whatever a previous
    instance with the same transactional_id left open, so read_committed consumers are not held back until
    the transaction timeout.
    """

    def __init__(
        self,
        *,
        client_id: str,
        connect_timeout_s: float,
        kafka_args: Mapping[str, Any],
        transactional_id: str | None = None,
        group_metadata: Callable[[], Any] | None = None,
        call_timeout_s: float = 30.0,
        make_producer: Callable[..., Any] = KafkaProducer,
    ) -> None:
        if (transactional_id is None) != (group_metadata is None):
            raise ValueError("transactional_id and group_metadata go together")
        self.flush_timeout_s = 60.0
        self.call_timeout_s = call_timeout_s  # each transaction call that waits for the broker
        self._make_producer = make_producer  # tests pass a fake
        self.group_metadata = group_metadata
        self._transactional = transactional_id is not None
        self._in_transaction = False
        extra: dict[str, Any] = {}
        if transactional_id is not None:
            extra["transactional_id"] = transactional_id
        self._config: dict[str, Any] = dict(
            acks="all",
            enable_idempotence=True,
            compression_type="zstd",
            linger_ms=5,
            bootstrap_timeout_ms=int(connect_timeout_s * 1000),
            # A send to a missing topic must fail the batch in bounded time, not block for long.
            max_block_ms=int(connect_timeout_s * 1000),
            client_id=client_id,
            **extra,
            **kafka_args,
        )
        self.producer = self._new_producer()

    def _new_producer(self) -> Any:
        producer = self._make_producer(**self._config)
        if self._transactional:
            self._guard(producer.init_transactions)
        return producer

    def _renew(self) -> None:
        """Replace the producer. kafka-python puts an idempotent producer in a fatal state when the broker
        refuses a record as too large, and fails every later send; only a new producer can go on (a
        transactional one's open transaction is aborted by the new one's init_transactions)."""
        self.producer.close(timeout=5)
        self._in_transaction = False
        self.producer = self._new_producer()

    def publish(self, records: Sequence[OutRecord]) -> None:
        sent = []
        errors: list[tuple[OutRecord, BaseException | None]] = []
        for r in records:
            try:
                sent.append((r, self.producer.send(r.topic, key=r.key, value=r.value, headers=r.headers)))
            except _FATAL as exc:
                raise FatalError(f"Kafka producer failed fatally: {type(exc).__name__}: {exc}") from exc
            except _TOO_LARGE as exc:  # above the producer's max_request_size: refused before sending
                errors.append((r, exc))
        self.producer.flush(timeout=self.flush_timeout_s)
        errors += [(r, f.exception) for r, f in sent if not f.is_done or f.failed()]
        refused = [r for r, e in errors if isinstance(e, _TOO_LARGE)]
        if refused:
            self._renew()
        # Retried as a whole, so the other failures (if any) get their second chance too.
        too_large = {r.origin for r in refused if r.origin is not None}
        if too_large:
            raise DeadLettersTooLarge(too_large)
        failed = [e for _, e in errors]
        if failed:
            first = failed[0]
            if isinstance(first, _FATAL):
                raise FatalError(f"Kafka producer failed fatally: {type(first).__name__}: {first}")
            raise PublishError(
                f"{len(failed)} of {len(records)} records not delivered; first error: "
                f"{type(first).__name__ if first else 'not done'}: {first}"
            )

    # ------------------------------------------------------------------------------------- transactions

    def begin(self) -> None:
        self._guard(self.producer.begin_transaction)
        self._in_transaction = True

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        assert self.group_metadata is not None, "not a transactional sink"
        if offsets:
            tx_offsets = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
            metadata = self.group_metadata()
            try:
                self._guard(
                    lambda: self.producer.send_offsets_to_transaction(tx_offsets, metadata),
                    "send_offsets_to_transaction",
                )
            except CommitFailedError as exc:  # KIP-447: the group moved on; this zombie must abort
                raise PartitionsLost(str(exc)) from exc
        self._guard(self.producer.commit_transaction, "commit_transaction")
        self._in_transaction = False

    def abort(self) -> None:
        if self._in_transaction:  # not after _renew: that transaction is gone with its producer
            self._guard(self.producer.abort_transaction, "abort_transaction")
            self._in_transaction = False

    def _guard(self, call: Callable[[], Any], bound: str | None = None) -> Any:
        """Run a producer call, turning Kafka's fatal producer errors into FatalError; with ``bound`` (the
        call's name) it may wait at most call_timeout_s (see bounded)."""
        try:
            if bound is not None:
                return bounded(call, self.call_timeout_s, bound)
            return call()
        except _FATAL as exc:
            raise FatalError(f"Kafka producer failed fatally: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self.producer.close(timeout=10)
