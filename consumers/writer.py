"""One transaction in flight: the materialiser's writer thread and its counters.

DuckDB writes batch N (releasing the GIL) while the consumer thread polls and decodes
batch N+1. At most one transaction is in flight, so a crash loses at most that one,
which was not committed and is read again.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from consumers.batch import BatchBuilder
from ledger.store import Batch, Shard
from ledger.store.positions import Position


@dataclass(frozen=True, slots=True)
class Stats:
    """What one run materialised."""

    messages: int
    events: int
    duplicates: int
    dead_letters: int
    transactions: int
    seconds: float
    offsets: dict[str, int]

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0


class ShardWriter:
    """Writes batches into ``shard`` on a thread of its own and counts what they did.

    Example:
        >>> writer = ShardWriter(shard)          # doctest: +SKIP
        >>> writer.submit(builder, batch)        # doctest: +SKIP
        >>> committed = writer.drain()           # doctest: +SKIP
    """

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._pending: tuple[Future[tuple[dict[str, int], int]], int, Batch] | None = None
        #: This process is the shard's only writer (claim): its positions are known here.
        self.stored: dict[tuple[str, int], Position] = shard.stored_positions()
        self.messages = self.events = self.duplicates = self.dead = self.transactions = 0

    def submit(self, builder: BatchBuilder, batch: Batch) -> Batch | None:
        """Start writing ``batch``, after the transaction in flight (returned, as
        :meth:`drain` returns it)."""
        done = self.drain()
        self._pending = (self._thread.submit(self._store, builder, batch), builder.messages, batch)
        return done

    def _store(self, builder: BatchBuilder, batch: Batch) -> tuple[dict[str, int], int]:
        # Rows that reuse a stored event's id with other content become dead letters, and
        # the batch is written again without them (nothing was written the first time).
        inserted, conflicts = self.shard.write_checked(batch)
        while conflicts:
            builder.reject_conflicts(conflicts)
            batch = builder.build(batch.offsets, marks=batch.marks)
            inserted, conflicts = self.shard.write_checked(batch)
        return inserted, len(builder.rejected)

    def drain(self) -> Batch | None:
        """Wait for the transaction in flight, count it; the batch it committed, if any.

        Raises:
            StoreError: the writer thread's, surfacing here.
        """
        if self._pending is None:
            return None
        future, messages, batch = self._pending
        self._pending = None
        inserted, rejected = future.result()
        for key, offset in batch.offsets.items():
            old = self.stored.get(key)
            mark = batch.marks.get(key) or (old.mark if old is not None else None)
            self.stored[key] = Position(offset, mark, self.shard.name)
        self.transactions += 1
        self.messages += messages
        self.dead += rejected
        stored = sum(n for name, n in inserted.items() if name != "dead_letters")
        self.events += stored
        self.duplicates += messages - rejected - stored
        return batch

    def close(self) -> None:
        self._thread.shutdown(wait=True)
