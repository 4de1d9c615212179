"""Kafka producer adapter: send a batch's records, flush, and check every delivery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaProducer

from worker.output import OutRecord


class PublishError(Exception):
    """At least one record of the batch was not acknowledged; the batch must not be committed."""


class KafkaSink:
    """acks=all with idempotence (no duplicates from producer retries) and zstd compression."""

    def __init__(self, *, client_id: str, connect_timeout_s: float, kafka_args: Mapping[str, Any]) -> None:
        self.flush_timeout_s = 60.0
        self.producer = KafkaProducer(
            acks="all",
            enable_idempotence=True,
            compression_type="zstd",
            linger_ms=5,
            bootstrap_timeout_ms=int(connect_timeout_s * 1000),
            # A send to a missing topic must fail the batch in bounded time, not block for long.
            max_block_ms=int(connect_timeout_s * 1000),
            client_id=client_id,
            **kafka_args,
        )

    def publish(self, records: Sequence[OutRecord]) -> None:
        futures = [self.producer.send(r.topic, key=r.key, value=r.value, headers=r.headers) for r in records]
        self.producer.flush(timeout=self.flush_timeout_s)
        failed = [f.exception for f in futures if not f.is_done or f.failed()]
        if failed:
            first = failed[0]
            raise PublishError(
                f"{len(failed)} of {len(futures)} records not delivered; first error: "
                f"{type(first).__name__ if first else 'not done'}: {first}"
            )

    def close(self) -> None:
        self.producer.close(timeout=10)
