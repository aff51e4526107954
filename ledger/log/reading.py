"""Reading the log to its true end.

Tansu under-reports the end of a partition via list-offsets (``end_offsets()``); the
high watermark of a fetch response is right on every broker (on Apache Kafka 4.4 the two
agree: tests/test_apache_kafka.py). So "caught up" is always decided from
``consumer.highwater(tp)`` after a poll."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from ledger.errors import BrokerError
from ledger.log.clients import (
    ConsumerSettings,
    LogConsumer,
    LogRecord,
    Partition,
    TransportError,
    open_consumer,
)
from ledger.log.probe import STALL_SECONDS, find_next_record
from ledger.log.topics import partitions_of

#: A full read: large fetches; the broker answers an empty fetch at once, since here only
#: the high watermark is wanted (it would hold it for fetch_wait_ms waiting for data).
READ_SETTINGS = ConsumerSettings(
    max_records=5000, fetch_wait_ms=20, partition_fetch_bytes=8 * 1024 * 1024
)


def read_to_end(
    bootstrap: str, topics: Sequence[str], *, timeout: float = 60.0
) -> Iterator[LogRecord]:
    """Yield every record of ``topics`` from offset 0 to the true end at the time of reading
    (with the client in use: :mod:`ledger.log.clients`)."""
    consumer = open_consumer(bootstrap, READ_SETTINGS)
    try:
        tps = partitions_of(consumer, topics)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        pending = set(tps)
        still: dict[Partition, tuple[int, float]] = {}  # position, and since when
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"reading {', '.join(topics)} to the end timed out after {timeout}s",
                    hint="check that the broker is up and not overloaded",
                )
            batch = consumer.poll(0.05, READ_SETTINGS.max_records)
            for tp in sorted(batch):
                yield from batch[tp]
            for tp in list(pending):
                if _at_end(bootstrap, consumer, tp, still):
                    pending.discard(tp)
    except TransportError as exc:
        raise BrokerError(
            f"reading {', '.join(topics)} from {bootstrap} failed: {exc}",
            hint="check that the broker is up",
        ) from exc
    finally:
        consumer.close()


def _at_end(
    bootstrap: str, consumer: LogConsumer, tp: Partition, still: dict[Partition, tuple[int, float]]
) -> bool:
    """Whether ``tp`` is read to its end. A position that stays short of the end may stand
    before offsets that hold no record (an empty batch): probe, and step over them."""
    hw, at, now = consumer.highwater(tp), consumer.position(tp), time.monotonic()
    if hw is not None and at >= hw:
        return True
    seen = still.get(tp)
    if seen is None or seen[0] != at:
        still[tp] = (at, now)
    elif hw is not None and now - seen[1] > STALL_SECONDS:
        found = find_next_record(bootstrap, tp, at)
        if not found.found:
            return True
        consumer.seek(tp, found.offset)
        still[tp] = (found.offset, now)
    return False
