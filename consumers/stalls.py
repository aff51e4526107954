"""Partitions that stop advancing although the log has more: empty record batches.

Another producer can write a record batch with no records (``record_count: 0``; the
bundled broker's own ``cat produce`` does with empty input). kafka-python never moves
past its offset, so the partition would stall for good; librdkafka steps over it, but
its position (the last record read + 1) then stays short of a log that ends there. The
materialiser notices a partition whose position stays put while the high watermark is
ahead (:class:`StallWatch`), then a probe of that one partition
(:func:`ledger.log.probe.find_next_record`) finds where the next record is; the range
between is dead-lettered and skipped. Where librdkafka stepped over such a range before
a record, the materialiser sees the offsets jump and dead-letters the range the same way.
"""

from __future__ import annotations

import time

from consumers.batch import BatchBuilder
from ledger.errors import CorruptMessage
from ledger.log.clients import Partition
from ledger.log.probe import STALL_SECONDS, find_next_record
from ledger.store import Batch

#: The main loop suspects a stall after this many drained polls without progress ...
STALL_POLLS = 5
#: ... over at least STALL_SECONDS.


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


__all__ = ["STALL_POLLS", "STALL_SECONDS", "StallWatch", "empty_range", "find_next_record"]
