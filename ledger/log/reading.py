"""Reading the log to its true end.

Tansu under-reports the end of a partition via list-offsets (``end_offsets()``); the
high watermark of a fetch response is right on every broker (on Apache Kafka 4.4 the two
agree: tests/test_apache_kafka.py). So "caught up" is always decided from
``consumer.highwater(tp)`` after a poll."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from ledger.errors import BrokerError
from ledger.log.broker import connect_client
from ledger.log.topics import partitions_of


def reader(bootstrap: str, **config: Any) -> KafkaConsumer:
    """A group-less consumer for explicit assignment (replays, reads to the end).

    Raises :class:`BrokerError` when no broker answers within the connect timeout in force.
    """
    return connect_client(
        KafkaConsumer, bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", **config
    )


def read_to_end(bootstrap: str, topics: Sequence[str], *, timeout: float = 60.0) -> Iterator[Any]:
    """Yield every record of ``topics`` from offset 0 to the true end at the time of reading."""
    # The broker would hold an empty fetch for fetch_max_wait_ms (default 500 ms) waiting
    # for new data; here we only want the high watermark, so answer at once.
    consumer = reader(bootstrap, fetch_max_wait_ms=20)
    try:
        tps = partitions_of(consumer, topics)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        pending = set(tps)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"reading {', '.join(topics)} to the end timed out after {timeout}s",
                    hint="check that the broker is up and not overloaded",
                )
            batch = consumer.poll(timeout_ms=50)
            for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
                yield from batch[tp]
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if hw is not None and consumer.position(tp) >= hw:
                    pending.discard(tp)
    except KafkaError as exc:
        raise BrokerError(
            f"reading {', '.join(topics)} from {bootstrap} failed: {exc}",
            hint="check that the broker is up",
        ) from exc
    finally:
        consumer.close()
