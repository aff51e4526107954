"""Partitions that stop advancing although the log has more: empty record batches.

Another producer can write a record batch with no records (``record_count: 0``; the
bundled broker's own ``cat produce`` does with empty input). kafka-python never moves
past its offset, so the partition would stall for good. The materialiser notices a
partition whose position stays put while the high watermark is ahead
(:class:`StallWatch`), then a probe of that one partition (:func:`find_next_record`)
finds where the next record is; the range between is dead-lettered and skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


from consumers.batch import BatchBuilder
from ledger.errors import BrokerError, CorruptMessage
from ledger.log.clients import ConsumerSettings, Partition, open_consumer
from ledger.store import Batch

#: The main loop suspects a stall after this many drained polls without progress ...
STALL_POLLS = 5
#: ... over at least this many seconds.
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


class StallWatch:
    """Per partition: where it stood and since when, over drained polls."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int], tuple[int, int, float]] = {}

    def forget(self, key: tuple[str, int]) -> None:
        self._seen.pop(key, None)

    def stalled(self, key: tuple[str, int], at: int, hw: int | None, moved: bool) -> bool:
        """Record one drained poll of ``key`` (reading at ``at``, high watermark ``hw``,
        ``moved``: it returned records); True when it looks stalled (then forgotten)."""
        if moved or hw is None or at >= hw:
            self._seen.pop(key, None)
            return False
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or seen[0] != at:
            self._seen[key] = (at, 1, now)
            return False
        polls = seen[1] + 1
        if polls >= STALL_POLLS and now - seen[2] >= STALL_SECONDS:
            self._seen.pop(key)
            return True
        self._seen[key] = (at, polls, seen[2])
        return False


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


def empty_range(builder: BatchBuilder, tp: Partition, at: int, end: int) -> Batch:
    """The transaction that steps over offsets ``at..end-1`` (no record there):
    1. a dead letter for the range, so nothing is skipped in silence;
    2. the partition's next offset ``end``, in the same transaction."""
    builder.messages += 1  # the empty range counts as one message, dead-lettered
    builder.reject(
        tp.topic,
        tp.partition,
        at,
        b"",
        CorruptMessage(
            f"empty record batch at offsets {at}..{end - 1}: the log holds no record there "
            "(another producer wrote a batch with record_count 0); stepped over"
        ),
    )
    return builder.build({(tp.topic, tp.partition): end})
