"""The transport seam: what the rest of the ledger asks of a Kafka client.

Two implementations sit behind it (:mod:`ledger.log.clients.kafka_python`, the design's
client, and :mod:`ledger.log.clients.librdkafka`, the fast one); :mod:`ledger.log.clients`
picks one. Nothing outside ``ledger.log`` names either client: partitions are
:class:`Partition` tuples, records carry ``.topic .partition .offset .key .value``, and
failures are the exceptions below or :class:`~ledger.errors.LedgerError`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class Partition(NamedTuple):
    """A topic-partition; equal to the plain ``(topic, partition)`` tuple."""

    topic: str
    partition: int


class LogRecord(NamedTuple):
    """One record read from the log."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


#: A poll's records, per partition, each list in offset order.
Polled = Mapping[Partition, Sequence[LogRecord]]
#: Called with the partitions a group assigned or revoked, inside ``poll``.
OnPartitions = Callable[[list[Partition]], None]

_NO_ID = uuid.UUID(int=0)


def canonical_topic_id(found: uuid.UUID | None) -> str | None:
    """A topic id as both clients report it (the canonical UUID text), ``None`` for none."""
    return None if found is None or found == _NO_ID else str(found)


class TransportError(Exception):
    """A client's failure, in the seam's terms (the log stage turns it into a LedgerError)."""


class TransportTimeout(TransportError):
    """The client waited its time (metadata, buffer space, acknowledgements)."""


class MessageTooLarge(TransportError):
    """A record is larger than the client or the broker takes."""


class OffsetOutOfRange(TransportError):
    """A position outside its partition's log, never reset: ``partitions`` maps each
    partition to the offset the consumer asked for."""

    def __init__(self, partitions: Mapping[Partition, int]) -> None:
        super().__init__(dict(partitions))
        self.partitions = dict(partitions)


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """How a consumer reads, in the seam's terms (each client maps them to its own names).

    Args:
        group: a consumer group to join (``subscribe``); ``None`` for explicit assignment.
        strict: a position outside the log raises :class:`OffsetOutOfRange` and a partition
            with no committed offset starts at offset 0 (never at the log's current start);
            otherwise both start at the earliest offset.
        max_records: most records one ``poll`` returns.
        fetch_wait_ms: how long the broker may hold a fetch that has nothing new.
        partition_fetch_bytes / fetch_bytes: fetch sizes per partition and per request.
        session_timeout_ms / heartbeat_interval_ms: the group's liveness settings.
    """

    group: str | None = None
    strict: bool = False
    max_records: int = 500
    fetch_wait_ms: int = 500
    partition_fetch_bytes: int = 1024 * 1024
    fetch_bytes: int = 50 * 1024 * 1024
    receive_buffer_bytes: int | None = None
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000


class LogConsumer(Protocol):
    """A consumer of the log, by explicit assignment or in a group."""

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """The topic's partitions from the cluster's metadata; ``None``: no such topic."""
        ...

    def assign(self, partitions: Sequence[Partition]) -> None: ...

    def subscribe(
        self, topics: Sequence[str], *, on_assigned: OnPartitions, on_revoked: OnPartitions
    ) -> None:
        """Join the group for ``topics``; the callbacks run inside :meth:`poll`."""
        ...

    def assignment(self) -> set[Partition]: ...

    def poll(self, timeout: float, max_records: int) -> Polled:
        """Records fetched, waiting up to ``timeout`` seconds for the first.

        Raises :class:`OffsetOutOfRange` (strict consumers) and :class:`TransportError`.
        """
        ...

    def pause(self, partitions: Iterable[Partition]) -> None: ...

    def resume(self, partitions: Iterable[Partition]) -> None: ...

    def seek(self, partition: Partition, offset: int) -> None: ...

    def position(self, partition: Partition) -> int:
        """The offset of the next record to be read (the committed one, or the start)."""
        ...

    def highwater(self, partition: Partition) -> int | None:
        """The high watermark of the last fetch response (``None`` before one): the true end
        on every broker (list-offsets under-reports on Tansu, DESIGN decision 7)."""
        ...

    def beginning_offsets(self, partitions: Sequence[Partition]) -> dict[Partition, int]: ...

    def end_offsets(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """List-offsets' end: at or before the true end (see :meth:`highwater`)."""
        ...

    def topic_id(self, topic: str) -> str | None:
        """The topic's id (KIP-516) as the broker reports it now, ``None`` where it has none."""
        ...

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit the group's next offsets, asynchronously."""
        ...

    def close(self) -> None: ...


class ProducerClient(Protocol):
    """A producer that sends encoded records and says how many are not settled yet.

    ``send`` raises :class:`MessageTooLarge`, :class:`TransportTimeout` (no room or no
    metadata within the connect timeout) or :class:`TransportError`.
    """

    #: the largest record (key + value + overhead) the client sends.
    max_event_bytes: int

    def partitions_for(self, topic: str) -> set[int]: ...

    def send(self, topic: str, key: bytes, value: bytes) -> None: ...

    def send_many(self, topic: str, keys: Sequence[bytes], values: Sequence[bytes]) -> int:
        """Send each pair in order; returns how many were handed over (all unless it raises)."""
        ...

    def pending(self) -> int:
        """Records sent and not yet acknowledged or failed."""
        ...

    def wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` for acknowledgements (never raises on a timeout)."""
        ...

    def take_failures(self) -> list[BaseException]:
        """The failed deliveries since the last call."""
        ...

    def close(self, *, graceful: bool) -> None:
        """Flush first when ``graceful``; otherwise fail what is undelivered and stop."""
        ...
