"""The seam over confluent-kafka (librdkafka): 5-6x kafka-python's rate on the same cores.

An optional extra (``pip install 'lineage-ledger[fast]'``). Where it differs from
kafka-python, this module makes it behave the same:

- the end of a partition is the cached high watermark of the last fetch response
  (``get_watermark_offsets(cached=True)``); list-offsets (``cached=False``) under-reports
  on Tansu (DESIGN decision 7) and serves only as a starting point;
- a strict consumer resets nothing (``auto.offset.reset=error``): a partition with no
  committed offset is assigned at offset 0 explicitly, so a reset can only mean a
  position outside the log, raised as :class:`OffsetOutOfRange`;
- rebalance callbacks run inside ``poll`` on the caller's thread; the assignment is
  applied (at the committed offsets) before the caller's callback sees it;
- records come as :class:`LogRecord` tuples, and the producer asks for delivery reports
  of failures only, counting what is unsettled with ``len(producer)``;
- options given in kafka-python's names (``linger_ms``) are translated.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import version
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka import TopicPartition as RdPartition
from confluent_kafka.admin import AdminClient

from ledger.errors import UsageError
from ledger.log.broker import check_reachable
from ledger.log.clients.base import (
    ConsumerSettings,
    LogRecord,
    MessageTooLarge,
    OffsetOutOfRange,
    OnPartitions,
    Partition,
    Polled,
    TransportError,
    TransportTimeout,
    canonical_topic_id,
)
from ledger.log.timeouts import BrokerTimeouts, current_timeouts

NAME = "librdkafka"
log = logging.getLogger(__name__)

#: How long a topic id read from the cluster is taken as current (a metadata request).
TOPIC_ID_TTL_S = 5.0
#: librdkafka settings every client gets: its log through Python's logging, and no line
#: for each idle connection the broker closes (Tansu closes them after a few seconds).
_COMMON: dict[str, Any] = {"log.connection.close": False, "logger": log}

# librdkafka's local (client-side) error codes are spelled with a leading underscore.
_TIMED_OUT = KafkaError._TIMED_OUT  # noqa: SLF001
_TRANSPORT = KafkaError._TRANSPORT  # noqa: SLF001
_ALL_BROKERS_DOWN = KafkaError._ALL_BROKERS_DOWN  # noqa: SLF001
_AUTO_OFFSET_RESET = KafkaError._AUTO_OFFSET_RESET  # noqa: SLF001

#: kafka-python option names the producer accepts, in librdkafka's names.
PRODUCER_OPTIONS = {
    "acks": "acks",
    "linger_ms": "linger.ms",
    "batch_size": "batch.size",
    "max_request_size": "message.max.bytes",
    "compression_type": "compression.type",
    "client_id": "client.id",
    "retries": "retries",
    "request_timeout_ms": "request.timeout.ms",
    "delivery_timeout_ms": "delivery.timeout.ms",
    "max_in_flight_requests_per_connection": "max.in.flight.requests.per.connection",
    "enable_idempotence": "enable.idempotence",
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}


def client_version() -> str:
    return f"{version('confluent-kafka')} (librdkafka {confluent_kafka.libversion()[0]})"


def producer_config(kafka_config: Mapping[str, Any]) -> dict[str, Any]:
    """``kafka_config`` in librdkafka's names: kafka-python names are translated, dotted
    names pass as they are; anything else is refused (it would be ignored in silence)."""
    out: dict[str, Any] = {}
    for name, value in kafka_config.items():
        if "." in name:
            out[name] = value
        elif name in PRODUCER_OPTIONS:
            out[PRODUCER_OPTIONS[name]] = value
        else:
            raise UsageError(
                f"the producer option {name!r} has no librdkafka equivalent known to the ledger",
                hint="give it in librdkafka's name (e.g. 'linger.ms'), or run with "
                "LEDGER_KAFKA_CLIENT=kafka-python",
            )
    return out


def producer_settings(bootstrap: str, kafka_config: Mapping[str, Any]) -> dict[str, Any]:
    """The producer's librdkafka options (also the benchmarks' raw baseline): ``acks=all``,
    idempotent, a short linger, records up to 16 MiB, then ``kafka_config``
    (:func:`producer_config`)."""
    return {
        **_COMMON,
        "bootstrap.servers": bootstrap,
        "acks": "all",
        # As with kafka-python: a batch retried after a broker restart (its acknowledgement
        # lost) is not written twice (tests/test_apache_kafka.py).
        "enable.idempotence": True,
        "linger.ms": 10,
        "message.max.bytes": 16 * 1024 * 1024,
        **producer_config(kafka_config),
    }


def _uuid(found: Any) -> uuid.UUID | None:
    if found is None:
        return None
    high = found.get_most_significant_bits() & (2**64 - 1)
    low = found.get_least_significant_bits() & (2**64 - 1)
    return uuid.UUID(int=(high << 64) | low)


def _error(exc: BaseException) -> TransportError:
    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    code = err.code() if err is not None else None
    if code == KafkaError.MSG_SIZE_TOO_LARGE:
        return MessageTooLarge(str(err))
    if code in (_TIMED_OUT, _TRANSPORT, _ALL_BROKERS_DOWN):
        return TransportTimeout(str(err))
    return TransportError(str(err or exc))


def _metadata_partitions(client: Any, topic: str, timeout: float) -> set[int] | None:
    try:
        found = client.list_topics(topic, timeout=timeout).topics.get(topic)
    except KafkaException as exc:
        raise _error(exc) from exc
    if found is None or found.error is not None or not found.partitions:
        return None
    return set(found.partitions)


def consumer_config(bootstrap: str, settings: ConsumerSettings) -> dict[str, Any]:
    """``settings`` as librdkafka consumer options (also the benchmarks' raw baseline)."""
    config: dict[str, Any] = {
        **_COMMON,
        "bootstrap.servers": bootstrap,
        # An explicit assignment needs a group id too; it never joins nor commits.
        "group.id": settings.group or f"ledger-reader-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error" if settings.strict else "earliest",
        "fetch.wait.max.ms": settings.fetch_wait_ms,
        "max.partition.fetch.bytes": settings.partition_fetch_bytes,
        "fetch.max.bytes": settings.fetch_bytes,
        "receive.message.max.bytes": max(settings.fetch_bytes + 512, 100_000_000),
        "allow.auto.create.topics": False,
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        "partition.assignment.strategy": "range,roundrobin",  # eager, as kafka-python
    }
    if settings.receive_buffer_bytes is not None:
        config["socket.receive.buffer.bytes"] = settings.receive_buffer_bytes
    return config


class Consumer:
    """A librdkafka consumer behind :class:`~ledger.log.clients.base.LogConsumer`."""

    def __init__(self, bootstrap: str, settings: ConsumerSettings) -> None:
        self._timeout = current_timeouts().connect
        check_reachable(bootstrap, timeout=self._timeout)
        self._bootstrap = bootstrap
        self._strict = settings.strict
        self._start = 0 if settings.strict else confluent_kafka.OFFSET_BEGINNING
        config = consumer_config(bootstrap, settings)
        # A broker's connection failed (a restart may bring another log): topic ids are
        # asked for again before the next records are checked (served inside poll).
        config["error_cb"] = self._on_error
        # The next offset to read per assigned partition: set on assign and seek, moved by
        # each poll (librdkafka's position() knows nothing before the first record).
        self._next: dict[Partition, int] = {}
        self._assigned: set[Partition] = set()
        self._admin: AdminClient | None = None
        self._ids: dict[str, tuple[float, str | None]] = {}
        self._callbacks: tuple[OnPartitions, OnPartitions] | None = None
        try:
            self._rd = confluent_kafka.Consumer(config)
        except KafkaException as exc:
            raise _error(exc) from exc

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return _metadata_partitions(self._rd, topic, self._timeout)

    def assign(self, partitions: Sequence[Partition]) -> None:
        self._apply({Partition(*p): self._start for p in partitions})

    def _apply(self, starts: Mapping[Partition, int]) -> None:
        self._rd.assign([RdPartition(p.topic, p.partition, o) for p, o in starts.items()])
        self._assigned = set(starts)
        self._next = {p: o for p, o in starts.items() if o >= 0}

    def subscribe(
        self, topics: Sequence[str], *, on_assigned: OnPartitions, on_revoked: OnPartitions
    ) -> None:
        self._callbacks = (on_assigned, on_revoked)
        self._rd.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, rd: Any, assigned: list[Any]) -> None:
        # 1. start each partition at the group's committed offset, else at 0 (strict) or
        #    the earliest offset; 2. apply it here, so the caller's callback (which may
        #    pause them) sees them assigned.
        committed = rd.committed(assigned, timeout=self._timeout) if assigned else []
        self._apply(
            {
                Partition(c.topic, c.partition): c.offset if c.offset >= 0 else self._start
                for c in committed
            }
        )
        assert self._callbacks is not None  # noqa: S101 - set by subscribe()
        self._callbacks[0](sorted(self._assigned))

    def _on_revoke(self, rd: Any, revoked: list[Any]) -> None:
        assert self._callbacks is not None  # noqa: S101 - set by subscribe()
        self._callbacks[1]([Partition(r.topic, r.partition) for r in revoked])
        rd.unassign()
        self._assigned, self._next = set(), {}

    def assignment(self) -> set[Partition]:
        return set(self._assigned)

    def _on_error(self, err: Any) -> None:
        self._ids.clear()
        log.info("librdkafka: %s", err)  # it reconnects by itself

    def poll(self, timeout: float, max_records: int) -> Polled:
        try:
            messages: list[Any] = self._rd.consume(max_records, timeout)
        except KafkaException as exc:
            raise _error(exc) from exc
        out: dict[Partition, list[LogRecord]] = {}
        topic: Any = None
        partition: Any = -1
        add: Any = None
        record = tuple.__new__  # LogRecord without its Python-level __new__: 2x cheaper
        for m in messages:
            if m.error() is not None:
                self._failed(m)
                continue
            # A fetch returns runs of one partition: look the list up once per run.
            if m.partition() != partition or m.topic() != topic:
                topic, partition = m.topic(), m.partition()
                add = out.setdefault(Partition(topic, partition), []).append
            add(record(LogRecord, (topic, partition, m.offset(), m.key(), m.value())))
        for p, got in out.items():
            self._next[p] = got[-1].offset + 1
        return out

    def _failed(self, message: Any) -> None:
        err = message.error()
        code = err.code()
        if code in (_AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
            p = Partition(message.topic(), message.partition())
            raise OffsetOutOfRange({p: self._next.get(p, message.offset())})
        if err.fatal() or code == KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise TransportError(str(err))
        log.warning("librdkafka: %s", err)  # transient (a broker reconnect): it retries

    def pause(self, partitions: Iterable[Partition]) -> None:
        self._rd.pause([RdPartition(p[0], p[1]) for p in partitions])

    def resume(self, partitions: Iterable[Partition]) -> None:
        self._rd.resume([RdPartition(p[0], p[1]) for p in partitions])

    def seek(self, partition: Partition, offset: int) -> None:
        p = Partition(*partition)
        try:
            self._rd.seek(RdPartition(p.topic, p.partition, offset))
        except KafkaException:
            # Not fetching yet (assigned a moment ago): assign it again at the offset.
            self._apply({**{q: self._next.get(q, self._start) for q in self._assigned}, p: offset})
        self._next[p] = offset

    def position(self, partition: Partition) -> int:
        return self._next.get(Partition(*partition), 0)

    def highwater(self, partition: Partition) -> int | None:
        _, high = self._rd.get_watermark_offsets(
            RdPartition(partition[0], partition[1]), cached=True
        )
        return None if high is None or high < 0 else int(high)

    def beginning_offsets(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        return {Partition(*p): self._listed(p)[0] for p in partitions}

    def end_offsets(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        return {Partition(*p): self._listed(p)[1] for p in partitions}

    def _listed(self, p: Partition) -> tuple[int, int]:
        try:
            low, high = self._rd.get_watermark_offsets(
                RdPartition(p[0], p[1]), timeout=self._timeout, cached=False
            )
        except KafkaException as exc:
            raise _error(exc) from exc
        return int(low), int(high)

    def topic_id(self, topic: str) -> str | None:
        now = time.monotonic()
        cached = self._ids.get(topic)
        if cached is not None and now - cached[0] < TOPIC_ID_TTL_S:
            return cached[1]
        if self._admin is None:
            self._admin = AdminClient({**_COMMON, "bootstrap.servers": self._bootstrap})
        try:
            (future,) = self._admin.describe_topics(TopicCollection([topic])).values()
            found = canonical_topic_id(_uuid(future.result(self._timeout).topic_id))
        except (KafkaException, TimeoutError):
            found = None  # the broker does not describe it: no id to compare, as before
        self._ids[topic] = (now, found)
        return found

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        self._rd.commit(
            offsets=[RdPartition(p[0], p[1], o) for p, o in offsets.items()], asynchronous=True
        )

    def close(self) -> None:
        self._rd.close()
        self._admin = None


class Producer:
    """A librdkafka producer behind :class:`~ledger.log.clients.base.ProducerClient`."""

    def __init__(self, bootstrap: str, timeouts: BrokerTimeouts, **kafka_config: Any) -> None:
        check_reachable(bootstrap, timeout=timeouts.connect)
        self._timeouts = timeouts
        self._failures: list[BaseException] = []
        self._lock = threading.Lock()
        config: dict[str, Any] = {
            **producer_settings(bootstrap, kafka_config),
            # Failures only: pending() counts the rest with len(producer).
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
        }
        self.max_event_bytes = int(config["message.max.bytes"])
        try:
            self._rd = confluent_kafka.Producer(config)
        except KafkaException as exc:
            raise UsageError(f"librdkafka refused the producer's options: {exc}") from exc
        self._topics: set[str] = set()  # topics whose metadata was found
        self._unserved = 0

    def partitions_for(self, topic: str) -> set[int]:
        found = _metadata_partitions(self._rd, topic, self._timeouts.connect)
        if found is None:
            raise TransportTimeout(f"no metadata for topic {topic}")
        return found

    def _known(self, topic: str) -> None:
        # kafka-python waits for the topic's metadata on the first send (max_block_ms);
        # librdkafka would queue the records and fail them much later. All topics are
        # learnt at once, as kafka-python does: a send after the broker went down still
        # queues (and its flush says how many were not acknowledged).
        try:
            listed = self._rd.list_topics(timeout=self._timeouts.connect).topics
        except KafkaException as exc:
            raise _error(exc) from exc
        self._topics.update(name for name, t in listed.items() if t.error is None)
        if topic not in self._topics:
            self.partitions_for(topic)  # asks for it by name: raises if it does not come
            self._topics.add(topic)

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        if topic not in self._topics:
            self._known(topic)
        try:
            self._rd.produce(topic, value, key)
        except BufferError:
            self._produce_when_room(topic, key, value)
        except KafkaException as exc:
            raise _error(exc) from exc
        self._unserved += 1
        if self._unserved >= 1000:  # serve delivery reports (of failures) now and then
            self._unserved = 0
            self._rd.poll(0)

    def send_many(self, topic: str, keys: Sequence[bytes], values: Sequence[bytes]) -> int:
        if topic not in self._topics:
            self._known(topic)
        produce, sent = self._rd.produce, 0
        try:
            for key, value in zip(keys, values, strict=True):
                try:
                    produce(topic, value, key)
                except BufferError:
                    self._produce_when_room(topic, key, value)
                sent += 1
        except KafkaException as exc:
            raise _error(exc) from exc
        self._rd.poll(0)
        return sent

    def _produce_when_room(self, topic: str, key: bytes, value: bytes) -> None:
        deadline = time.monotonic() + self._timeouts.connect
        while True:
            self._rd.poll(0.05)  # the queue is full: let deliveries make room
            try:
                self._rd.produce(topic, value, key)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise TransportTimeout(
                        f"the producer's queue stayed full for {self._timeouts.connect:g}s"
                    ) from None

    def pending(self) -> int:
        return len(self._rd)

    def wait(self, seconds: float) -> None:
        self._rd.flush(seconds)

    def take_failures(self) -> list[BaseException]:
        with self._lock:
            failures, self._failures = self._failures, []
        return failures

    def close(self, *, graceful: bool) -> None:
        if not graceful or self._rd.flush(self._timeouts.flush) > 0:
            self._rd.purge()  # fail what is undelivered, so nothing is left behind
            self._rd.flush(0)
        self._rd.close()

    def _on_delivery(self, err: Any, _message: Any) -> None:
        if err is not None:
            with self._lock:
                self._failures.append(KafkaException(err))
