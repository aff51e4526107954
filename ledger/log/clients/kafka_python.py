"""The seam over kafka-python: the design's client, pure Python, works everywhere.

Its two private uses live here and nowhere else: a topic's id (KIP-516), which
kafka-python keeps in its cluster metadata without a public accessor, and the sender
thread's force close, which its ``close()`` skips when events are undelivered.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import version
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
    UnknownTopicOrPartitionError,
)
from kafka.structs import OffsetAndMetadata

from ledger.log.broker import connect_client
from ledger.log.clients.base import (
    ConsumerSettings,
    MessageTooLarge,
    OffsetOutOfRange,
    OnPartitions,
    Partition,
    Polled,
    TransportError,
    TransportTimeout,
    canonical_topic_id,
)
from ledger.log.timeouts import BrokerTimeouts, using_timeouts

NAME = "kafka-python"
log = logging.getLogger(__name__)
#: The producer drops settled futures once this many are kept (a service that never flushes).
_PRUNE_AT = 10_000


def client_version() -> str:
    return version("kafka-python")


def _error(exc: KafkaError) -> TransportError:
    if isinstance(exc, MessageSizeTooLargeError):
        return MessageTooLarge(str(exc))
    if isinstance(exc, KafkaTimeoutError):
        return TransportTimeout(str(exc))
    return TransportError(str(exc))


def consumer_config(settings: ConsumerSettings) -> dict[str, Any]:
    """``settings`` as ``KafkaConsumer`` options (also the benchmarks' raw baseline)."""
    config: dict[str, Any] = {
        "enable_auto_commit": False,
        # strict: never jump silently, an out-of-range position is a gap (DESIGN decision 9)
        "auto_offset_reset": "none" if settings.strict else "earliest",
        "max_poll_records": settings.max_records,
        "fetch_max_wait_ms": settings.fetch_wait_ms,
        "max_partition_fetch_bytes": settings.partition_fetch_bytes,
        "fetch_max_bytes": settings.fetch_bytes,
        "allow_auto_create_topics": False,  # a mistyped prefix must not create topics
    }
    if settings.receive_buffer_bytes is not None:
        config["receive_buffer_bytes"] = settings.receive_buffer_bytes
    if settings.group is not None:
        config.update(
            group_id=settings.group,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
        )
    return config


class Consumer:
    """A ``KafkaConsumer`` behind :class:`~ledger.log.clients.base.LogConsumer`."""

    def __init__(self, bootstrap: str, settings: ConsumerSettings) -> None:
        config = consumer_config(settings)
        self._kafka: KafkaConsumer = connect_client(KafkaConsumer, bootstrap, **config)
        self._tps: dict[tuple[str, int], TopicPartition] = {}

    def _tp(self, p: tuple[str, int]) -> TopicPartition:
        tp = self._tps.get(p)
        if tp is None:
            tp = self._tps[p] = TopicPartition(p[0], p[1])
        return tp

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        try:
            found = self._kafka.partitions_for_topic(topic)
        except KafkaError as exc:
            raise _error(exc) from exc
        return set(found) if found else None

    def assign(self, partitions: Sequence[Partition]) -> None:
        self._kafka.assign([self._tp(p) for p in partitions])

    def subscribe(
        self, topics: Sequence[str], *, on_assigned: OnPartitions, on_revoked: OnPartitions
    ) -> None:
        self._kafka.subscribe(list(topics), listener=_Listener(on_assigned, on_revoked))

    def assignment(self) -> set[Partition]:
        return {Partition(tp.topic, tp.partition) for tp in self._kafka.assignment()}

    def poll(self, timeout: float, max_records: int) -> Polled:
        try:
            # Keys are kafka-python's TopicPartition: a named tuple equal to Partition.
            polled: Polled = self._kafka.poll(
                timeout_ms=int(timeout * 1000), max_records=max_records
            )
            return polled
        except OffsetOutOfRangeError as exc:
            parts = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            raise OffsetOutOfRange(
                {Partition(tp.topic, tp.partition): offset for tp, offset in parts.items()}
            ) from exc
        except NoOffsetForPartitionError as exc:
            # strict: never read by anyone in the group, so the whole log (not its start).
            for tp in exc.args[0] if exc.args else ():
                self._kafka.seek(tp, 0)
            return {}
        except UnknownTopicOrPartitionError as exc:  # a deleted topic, as with librdkafka
            raise _error(exc) from exc
        except KafkaError as exc:
            if not exc.retriable:
                raise _error(exc) from exc
            # A broker restarting or a coordinator moving: kafka-python reconnects on the
            # next poll, as librdkafka does inside its own (which only logs it).
            log.warning("kafka-python: %s; polling again", exc)
            time.sleep(timeout)  # the poll's wait, which the error cut short
            return {}

    def pause(self, partitions: Iterable[Partition]) -> None:
        self._kafka.pause(*(self._tp(p) for p in partitions))

    def resume(self, partitions: Iterable[Partition]) -> None:
        self._kafka.resume(*(self._tp(p) for p in partitions))

    def seek(self, partition: Partition, offset: int) -> None:
        self._kafka.seek(self._tp(partition), offset)

    def position(self, partition: Partition) -> int:
        tp = self._tp(partition)
        try:
            return int(self._kafka.position(tp))
        except NoOffsetForPartitionError:
            self._kafka.seek(tp, 0)  # strict: never read by anyone in the group
            return 0
        except KafkaError as exc:
            raise _error(exc) from exc

    def highwater(self, partition: Partition) -> int | None:
        hw = self._kafka.highwater(self._tp(partition))
        return None if hw is None else int(hw)

    def beginning_offsets(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        return self._offsets(self._kafka.beginning_offsets, partitions)

    def end_offsets(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        return self._offsets(self._kafka.end_offsets, partitions)

    def _offsets(self, ask: Any, partitions: Sequence[Partition]) -> dict[Partition, int]:
        try:
            found = ask([self._tp(p) for p in partitions])
        except KafkaError as exc:
            raise _error(exc) from exc
        return {Partition(tp.topic, tp.partition): int(o) for tp, o in found.items()}

    def topic_id(self, topic: str) -> str | None:
        # KafkaConsumer has no public accessor for the ids its metadata holds (KIP-516).
        cluster = self._kafka._client.cluster  # noqa: SLF001
        found = cluster.topic_id(topic)
        return canonical_topic_id(None if found is None else uuid.UUID(str(found)))

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        self._kafka.commit_async(
            {self._tp(p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
        )

    def close(self) -> None:
        self._kafka.close(autocommit=False)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_assigned: OnPartitions, on_revoked: OnPartitions) -> None:
        self._assigned, self._revoked = on_assigned, on_revoked

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._revoked([Partition(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._assigned([Partition(tp.topic, tp.partition) for tp in assigned])


class Producer:
    """A ``KafkaProducer`` behind :class:`~ledger.log.clients.base.ProducerClient`."""

    def __init__(self, bootstrap: str, timeouts: BrokerTimeouts, **kafka_config: Any) -> None:
        self._flush_timeout = timeouts.flush
        # The futures of records not known settled, oldest first: the caller's thread looks
        # at them (no callback per record on the client's sender thread, no lock per send).
        self._futures: collections.deque[Any] = collections.deque()
        self._failures: list[BaseException] = []
        config: dict[str, Any] = {
            "acks": "all",
            # kafka-python's default, stated: a batch retried after a broker restart (its
            # acknowledgement lost) is not written twice (tests/test_apache_kafka.py).
            "enable_idempotence": True,
            "linger_ms": 10,
            "batch_size": 256 * 1024,
            "max_request_size": 16 * 1024 * 1024,
            "bootstrap_timeout_ms": timeouts.connect_ms,
            "max_block_ms": timeouts.connect_ms,
            **kafka_config,
        }
        self.max_event_bytes = int(config["max_request_size"])
        with using_timeouts(timeouts):
            self._kafka = connect_client(KafkaProducer, bootstrap, **config)

    def partitions_for(self, topic: str) -> set[int]:
        try:
            return set(self._kafka.partitions_for(topic) or ())
        except KafkaError as exc:
            raise _error(exc) from exc

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        try:
            self._futures.append(self._kafka.send(topic, key=key, value=value))
        except KafkaError as exc:
            raise _error(exc) from exc
        if len(self._futures) > _PRUNE_AT:
            self._prune()

    def send_many(self, topic: str, keys: Sequence[bytes], values: Sequence[bytes]) -> int:
        send, keep, sent = self._kafka.send, self._futures.append, 0
        try:
            for key, value in zip(keys, values, strict=True):
                keep(send(topic, key=key, value=value))
                sent += 1
        except KafkaError as exc:
            raise _error(exc) from exc
        finally:
            self._prune()
        return sent

    def _prune(self) -> None:
        """Drop the settled futures at the front, keeping the failures they hold."""
        futures = self._futures
        while futures and futures[0].is_done:
            done = futures.popleft()
            if done.failed():
                self._failures.append(done.exception)

    def pending(self) -> int:
        self._prune()
        return sum(1 for f in self._futures if not f.is_done)

    def wait(self, seconds: float) -> None:
        # kafka-python's flush(timeout) waits up to ``timeout`` per batch: callers wait in
        # short steps and judge progress by pending().
        try:
            self._kafka.flush(timeout=seconds)
        except KafkaTimeoutError:
            pass  # not done yet: the caller judges by progress
        except KafkaError as exc:
            raise _error(exc) from exc

    def take_failures(self) -> list[BaseException]:
        self._prune()
        failures, self._failures = self._failures, []
        return failures

    def close(self, *, graceful: bool) -> None:
        if graceful:
            try:
                self._kafka.close(timeout=self._flush_timeout)
                return
            except KafkaError:
                pass  # events left undelivered: force the close below
        # kafka-python 3.0.12's close() flushes first and raises while events are
        # undelivered (the broker is gone), before its own force close; without that step
        # its sender thread lives on and __del__ prints a traceback at exit.
        sender = self._kafka._sender  # noqa: SLF001 - the client has no public force close
        sender.force_close()
        sender.join(self._flush_timeout)
        with contextlib.suppress(KafkaError):
            # Safe to ignore: the sender has stopped and failed what it held, so only
            # the client's bookkeeping is left to release.
            self._kafka.close(timeout=0)
