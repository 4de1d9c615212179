"""Kafka producer adapter: send a batch's records, flush, check every delivery; optionally transactional."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kafka import KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import (
    AuthorizationError,
    InvalidProducerEpochError,
    ProducerFencedError,
    UnsupportedForMessageFormatError,
    UnsupportedVersionError,
)

from worker.loop import FatalError
from worker.output import OutRecord

# Errors after which a transactional producer cannot continue (Kafka's "fatal" class): restart instead.
_FATAL = (
    ProducerFencedError,
    InvalidProducerEpochError,
    AuthorizationError,
    UnsupportedVersionError,
    UnsupportedForMessageFormatError,
)


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
    ) -> None:
        if (transactional_id is None) != (group_metadata is None):
            raise ValueError("transactional_id and group_metadata go together")
        self.flush_timeout_s = 60.0
        self.group_metadata = group_metadata
        extra: dict[str, Any] = {}
        if transactional_id is not None:
            extra["transactional_id"] = transactional_id
        self.producer = KafkaProducer(
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
        if transactional_id is not None:
            self._guard(self.producer.init_transactions)

    def publish(self, records: Sequence[OutRecord]) -> None:
        try:
            futures = [
                self.producer.send(r.topic, key=r.key, value=r.value, headers=r.headers) for r in records
            ]
        except _FATAL as exc:
            raise FatalError(f"Kafka producer failed fatally: {type(exc).__name__}: {exc}") from exc
        self.producer.flush(timeout=self.flush_timeout_s)
        failed = [f.exception for f in futures if not f.is_done or f.failed()]
        if failed:
            first = failed[0]
            if isinstance(first, _FATAL):
                raise FatalError(f"Kafka producer failed fatally: {type(first).__name__}: {first}")
            raise PublishError(
                f"{len(failed)} of {len(futures)} records not delivered; first error: "
                f"{type(first).__name__ if first else 'not done'}: {first}"
            )

    # ------------------------------------------------------------------------------------- transactions

    def begin(self) -> None:
        self._guard(self.producer.begin_transaction)

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        assert self.group_metadata is not None, "not a transactional sink"
        if offsets:
            tx_offsets = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
            metadata = self.group_metadata()
            self._guard(lambda: self.producer.send_offsets_to_transaction(tx_offsets, metadata))
        self._guard(self.producer.commit_transaction)

    def abort(self) -> None:
        self._guard(self.producer.abort_transaction)

    def _guard(self, call: Callable[[], Any]) -> Any:
        """Run a producer call, turning Kafka's fatal producer errors into FatalError."""
        try:
            return call()
        except _FATAL as exc:
            raise FatalError(f"Kafka producer failed fatally: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self.producer.close(timeout=10)
