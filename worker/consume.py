"""Kafka consumer adapter: poll records, commit offsets, seek back, and report revoked partitions and lag."""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import AuthorizationError, CommitFailedError, IllegalStateError

from worker.loop import FatalError, PartitionsLost, group_lag
from worker.messages import Record

log = logging.getLogger(__name__)


class _Listener(ConsumerRebalanceListener):
    """Remembers revoked partitions for the loop; kafka-python may call it from its network thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._revoked: set[tuple[str, int]] = set()
        self._assigned: set[tuple[str, int]] = set()
        self.assignments = 0

    def on_partitions_revoked(self, revoked: Any) -> None:
        with self._lock:
            self._revoked.update((tp.topic, tp.partition) for tp in revoked)
        if revoked:
            log.info(
                "partitions revoked",
                extra={"partitions": sorted(f"{t.topic}:{t.partition}" for t in revoked)},
            )

    def on_partitions_assigned(self, assigned: Any) -> None:
        with self._lock:
            self.assignments += 1
            self._assigned.update((tp.topic, tp.partition) for tp in assigned)
        log.info(
            "partitions assigned", extra={"partitions": sorted(f"{t.topic}:{t.partition}" for t in assigned)}
        )

    def take_revoked(self) -> set[tuple[str, int]]:
        with self._lock:
            out, self._revoked = self._revoked, set()
        return out

    def take_assigned(self) -> set[tuple[str, int]]:
        with self._lock:
            out, self._assigned = self._assigned, set()
        return out


class KafkaSource:
    """The consumer side of the loop. Auto-commit is off; offsets are committed explicitly after each batch.

    max_poll_records equals the batch size, so one batch never holds more than one poll's worth of work and
    the time between polls stays far below max.poll.interval.ms (see the README's note on slow inference).
    """

    def __init__(
        self,
        topics: Sequence[str],
        *,
        group_id: str,
        max_poll_records: int,
        max_poll_interval_ms: int,
        session_timeout_ms: int = 45_000,
        max_message_bytes: int,
        connect_timeout_s: float,
        kafka_args: Mapping[str, Any],
        read_committed: bool = False,
    ) -> None:
        self._listener = _Listener()
        self.consumer = KafkaConsumer(
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
            max_poll_interval_ms=max_poll_interval_ms,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(100, session_timeout_ms // 3),
            # Oversize records are still fetched (then dead-lettered), so fetch at least one whole record.
            max_partition_fetch_bytes=max(1024 * 1024, max_message_bytes + 64 * 1024),
            bootstrap_timeout_ms=int(connect_timeout_s * 1000),
            client_id=f"{group_id}-consumer",
            # Exactly once: never read an upstream transaction's aborted or still open records.
            isolation_level="read_committed" if read_committed else "read_uncommitted",
            **kafka_args,
        )
        self.consumer.subscribe(topics=list(topics), listener=self._listener)
        self._topics = set(topics)
        self._group_id, self._kafka_args = group_id, dict(kafka_args)
        self._timeout_ms = int(connect_timeout_s * 1000)
        self._admin: Any = None  # made at the first group_lag() (only --until-idle asks)
        self._positions: dict[tuple[str, int], int] = {}  # next offset to read, as far as polls told us

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        try:
            batches = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except AuthorizationError as exc:  # e.g. no READ on the consumer group: retrying cannot help
            raise FatalError(f"Kafka consumer not authorized: {type(exc).__name__}: {exc}") from exc
        # kafka-python raises a topic authorization error inside a metadata callback, where it is lost, and
        # the consumer then waits for an assignment forever; the client's cluster metadata still has it.
        denied = self._topics & set(self.consumer._client.cluster.unauthorized_topics)
        if denied:
            raise FatalError(
                f"Kafka consumer not authorized: TopicAuthorizationFailedError: {', '.join(sorted(denied))}"
            )
        for tp, records in batches.items():
            if records:
                self._positions[(tp.topic, tp.partition)] = records[-1].offset + 1
        return [
            Record(
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                key=r.key,
                value=r.value,
                headers=list(r.headers or []),
                timestamp_ms=r.timestamp if r.timestamp is not None else -1,
            )
            for records in batches.values()
            for r in records
        ]

    def take_revoked(self) -> set[tuple[str, int]]:
        return self._listener.take_revoked()

    def take_assigned(self) -> set[tuple[str, int]]:
        """Partitions assigned since the last call (the loop checks their Redis watermarks)."""
        return self._listener.take_assigned()

    def committed(self, partitions: Collection[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The group's committed offset of each partition that has one."""
        out: dict[tuple[str, int], int] = {}
        for topic, partition in partitions:
            offset = self.consumer.committed(TopicPartition(topic, partition))
            if offset is not None and offset >= 0:
                out[(topic, partition)] = offset
        return out

    def beginning(self, partitions: Collection[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The earliest offset still in Kafka per partition."""
        tps = [TopicPartition(t, p) for t, p in partitions]
        return {(tp.topic, tp.partition): o for tp, o in self.consumer.beginning_offsets(tps).items()}

    def group_lag(self) -> dict[tuple[str, int], int]:
        """Records not yet done on every partition of the input topics, over the whole group (see
        worker.loop.group_lag): the group's committed offsets from the admin client, end offsets for all
        partitions, this consumer's positions for its own."""
        from kafka.admin import KafkaAdminClient

        if self._admin is None:
            self._admin = KafkaAdminClient(
                client_id=f"{self._group_id}-admin", request_timeout_ms=self._timeout_ms, **self._kafka_args
            )
        offsets = self._admin.list_group_offsets(self._group_id).get(self._group_id, {})
        committed = {(tp.topic, tp.partition): om.offset for tp, om in offsets.items() if om.offset >= 0}
        tps = [
            TopicPartition(t, p)
            for t in sorted(self._topics)
            for p in sorted(self.consumer.partitions_for_topic(t) or ())
        ]
        end = self.consumer.end_offsets(tps, timeout_ms=self._timeout_ms)
        beginning = self.consumer.beginning_offsets(tps, timeout_ms=self._timeout_ms)
        positions: dict[tuple[str, int], int] = {}
        for tp in self.consumer.assignment():
            try:
                position = self.consumer.position(tp, timeout_ms=self._timeout_ms)
            except IllegalStateError:  # revoked since assignment() was read
                continue
            if position is not None:
                positions[(tp.topic, tp.partition)] = position
        return group_lag(
            {(tp.topic, tp.partition): o for tp, o in end.items()},
            committed,
            {(tp.topic, tp.partition): o for tp, o in beginning.items()},
            positions,
        )

    def group_metadata(self) -> Any:
        """The consumer's group metadata (generation, member id) for send_offsets_to_transaction."""
        return self.consumer.group_metadata()

    @property
    def assignments(self) -> int:
        """How many assignments happened so far (the loop resets its idle clock when this changes)."""
        return self._listener.assignments

    def assigned(self) -> bool:
        return bool(self.consumer.assignment())

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        try:
            self.consumer.commit(
                {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
            )
        except CommitFailedError as exc:
            raise PartitionsLost(str(exc)) from exc
        except AuthorizationError as exc:
            raise FatalError(f"Kafka consumer not authorized: {type(exc).__name__}: {exc}") from exc

    def seek(self, offsets: Mapping[tuple[str, int], int]) -> None:
        assignment = self.consumer.assignment()
        for (topic, partition), offset in offsets.items():
            tp = TopicPartition(topic, partition)
            if tp in assignment:  # a revoked partition restarts from its committed offset anyway
                self.consumer.seek(tp, offset)
                self._positions[(topic, partition)] = offset

    def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet consumed per assigned partition (high watermark - position), where both are known.

        Positions come from the records polled, so this needs no network round trip.
        """
        out: dict[tuple[str, int], int] = {}
        for tp in self.consumer.assignment():
            try:
                high = self.consumer.highwater(tp)
            except IllegalStateError:  # revoked since assignment() was read
                continue
            position = self._positions.get((tp.topic, tp.partition))
            if high is not None and position is not None:
                out[(tp.topic, tp.partition)] = max(0, high - position)
        return out

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
        self.consumer.close(autocommit=False)
