"""Probing one partition for its next record, stepping over offsets that hold none.

A record batch can hold no records (another producer wrote ``record_count: 0``); a
consumer may then stall before it (kafka-python) or end short of the log's end
(librdkafka: its position is the last record read + 1). This probe tells which offsets
hold no record, and where the next record is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ledger.errors import BrokerError
from ledger.log.clients import ConsumerSettings, Partition, open_consumer

#: A reader suspects offsets without records when its position stays put this long while
#: the log's end is ahead.
STALL_SECONDS = 2.0
#: The probe takes an offset for empty after its fetches returned nothing for this long
#: while the log goes on past it (a broker answers a fetch of one partition in ms).
EMPTY_SECONDS = 1.0
#: The probe reads one record at a time, and the broker answers an empty fetch at once.
PROBE_SETTINGS = ConsumerSettings(strict=True, max_records=1, fetch_wait_ms=10)


@dataclass(frozen=True, slots=True)
class NextRecord:
    """The first record at or after an offset: its offset and value; ``found`` is False
    when the log holds none before its end (``offset`` is then the end)."""

    offset: int
    value: bytes | None
    found: bool


def find_next_record(
    bootstrap: str, tp: Partition, offset: int, *, timeout: float = 60.0
) -> NextRecord:
    """The first record of ``tp`` at or after ``offset``, stepping over offsets that hold
    no record (empty batches).

    Each offset is fetched by a consumer of its own, so a known high watermark proves
    that a fetch from that very offset was answered; answered with no record, and none
    for :data:`EMPTY_SECONDS` more, the offset holds none.

    Raises:
        BrokerError: no answer within ``timeout`` seconds.

    Example:
        >>> find_next_record(bs, Partition("ledger.embeddings", 0), 5)  # doctest: +SKIP
        NextRecord(offset=6, value=b'\\xc3\\x01...', found=True)
    """
    deadline = time.monotonic() + timeout
    at = offset
    while True:
        found = _fetch_at(bootstrap, tp, at, deadline)
        if found is not None:
            return found
        at += 1


def _fetch_at(bootstrap: str, tp: Partition, at: int, deadline: float) -> NextRecord | None:
    """What a fetch from ``at`` finds: a record, or the log's end; None: no record there."""
    consumer = open_consumer(bootstrap, PROBE_SETTINGS)
    try:
        consumer.assign([tp])
        consumer.seek(tp, at)
        answered = None
        while True:
            records = consumer.poll(0.2, 1).get(tp)
            if records:
                return NextRecord(records[0].offset, records[0].value, True)
            hw = consumer.highwater(tp)
            now = time.monotonic()
            if hw is not None and at >= hw:
                return NextRecord(hw, None, False)
            if hw is not None:
                answered = answered or now
                if now - answered >= EMPTY_SECONDS:
                    return None
            if now > deadline:
                raise BrokerError(
                    f"{tp.topic}[{tp.partition}]: no answer to a fetch from offset {at} "
                    f"(log end {hw}); is the broker answering?"
                )
    finally:
        consumer.close()
