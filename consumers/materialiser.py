"""The materialiser: ledger topics -> one DuckDB shard, exactly once in effect.

Each poll is decoded, validated and written with the offsets it covers in ONE DuckDB
transaction (DESIGN decision 3). On start and on every assignment the consumer seeks
to the newest offset any shard of the home stored for the partition, or, for a
partition no shard holds, to the group's committed offset (committed only after the
DuckDB transaction), or to 0. Before it stores anything from a partition it reads the
partition's log mark again (:mod:`consumers.identity`): stored offsets of another log
stop it with :class:`LogGapError`. Events already stored are skipped by event id; the
views dedupe across shards. Empty record batches are dead-lettered and stepped over
(:mod:`consumers.stalls`).

Example:
    >>> stats = catch_up("localhost:9092", Topics(), Path(".ledger"))  # doctest: +SKIP
    >>> stats.events, stats.dead_letters                               # doctest: +SKIP
    (4012, 0)
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from consumers.batch import BatchBuilder, poll_batch
from consumers.identity import (
    check_record,
    check_same_topic,
    out_of_range,
    past_the_end,
    position,
    resume_positions,
)
from consumers.registrations import ModelsTail
from consumers.stalls import StallWatch, empty_range, find_next_record
from consumers.writer import ShardWriter, Stats
from ledger.contract.events import Topics
from ledger.contract.rules import Registry
from ledger.contract.schemas import default_store
from ledger.errors import BrokerError
from ledger.log.clients import (
    ConsumerSettings,
    LogConsumer,
    LogRecord,
    OffsetOutOfRange,
    Partition,
    TransportError,
    open_consumer,
)
from ledger.log.topics import partitions_of
from ledger.store import Batch, Shard
from ledger.store.positions import LogMark

log = logging.getLogger(__name__)

#: progress(done, total): messages materialised so far, and done + the lag still known.
Progress = Callable[[int, int], None]

#: Consumer settings measured on Tansu: a group join in ~3 s (DESIGN decision 7), and
#: fetches big enough that one poll fills a transaction of a few thousand 384-d vectors.
#: Strict: a position outside the log is a gap, never reset (DESIGN decision 9).
SETTINGS = ConsumerSettings(
    strict=True,
    session_timeout_ms=6000,
    heartbeat_interval_ms=1000,
    partition_fetch_bytes=8 * 1024 * 1024,
    fetch_bytes=64 * 1024 * 1024,
    fetch_wait_ms=100,
    receive_buffer_bytes=4 * 1024 * 1024,
)

#: A catch-up that made no progress for this many seconds stops and says what it waits for.
PATIENCE_S = 120.0


def _key(tp: Partition) -> tuple[str, int]:
    return (tp.topic, tp.partition)


def _where(tp: Partition) -> str:
    return f"{tp.topic}[{tp.partition}]"


class Materialiser:
    """Consume the ledger topics into one shard.

    Args:
        bootstrap: Kafka bootstrap servers.
        topics: the ledger's topics.
        home: the state folder (shards live in ``home/shards``).
        shard: this process's shard name; one process per shard.
        group: a consumer group to join (scale-out); ``None`` assigns every partition.
        max_batch: most messages per transaction.
        lock_timeout: seconds to wait for a reader holding the shard (``None``: forever).
        hold: seconds the shard connection may stay open across transactions while there
            is a backlog (it closes when idle); 0 closes it after every transaction.

    Example:
        >>> with Materialiser(bs, Topics(), Path(".ledger"), group="mat") as m:  # doctest: +SKIP
        ...     m.run(until_caught_up=True)
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        home: Path,
        *,
        shard: str = "main",
        group: str | None = None,
        max_batch: int = 5000,
        lock_timeout: float | None = 60.0,
        hold: float = 1.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.group = group
        self.max_batch = max_batch
        self.home = Path(home)
        self.shard = Shard(home, shard, lock_timeout=lock_timeout, hold=hold)
        self.shard.claim()
        self._schemas = default_store()
        self._tail: ModelsTail | None = None
        self._consumer: LogConsumer | None = None
        self._joined = False
        self._next: dict[tuple[str, int], int] = {}
        self._until: dict[tuple[str, int], int] = {}  # run(until=...): where catching up ends
        # Assigned, paused until _prepare() positions them (it blocks: not in the callback).
        self._unprepared: set[Partition] = set()
        # Partitions whose first record read must be their log mark's (consumers.identity).
        self._verify: dict[tuple[str, int], LogMark] = {}
        self._topic_ids: dict[str, str] = {}  # as the broker reported them when positioned
        self._stalls = StallWatch()
        # Within one poll: the next offset expected per partition; ranges found without
        # records (librdkafka steps over them), to be dead-lettered after the poll's write.
        self._ahead: dict[tuple[str, int], int] = {}
        self._gaps: list[tuple[Partition, int, int]] = []
        self._moved = 0.0  # when the last message was read (a catch-up's patience)
        self._writer: ShardWriter | None = None
        try:
            self.registry = Registry(self.shard.model_versions())
            self._writer = ShardWriter(self.shard)
            self._consumer = self._connect()
        except BaseException:
            self.close()
            raise

    # -- setup ----------------------------------------------------------------------

    def _connect(self) -> LogConsumer:
        settings = dataclasses.replace(SETTINGS, group=self.group, max_records=self.max_batch)
        consumer = open_consumer(self.bootstrap, settings)  # BrokerError: no broker answers
        try:
            tps = partitions_of(consumer, self.topics.all)  # fails on missing topics
            if self.group is None:
                consumer.assign(tps)
                self._prepare(consumer, tps)
                self._joined = True
            else:
                consumer.subscribe(
                    list(self.topics.all), on_assigned=self._assigned, on_revoked=self._revoked
                )
        except TransportError as exc:
            consumer.close()
            raise BrokerError(f"cannot consume from {self.bootstrap}: {exc}") from exc
        except BaseException:
            consumer.close()
            raise
        return consumer

    def _revoked(self, revoked: Sequence[Partition]) -> None:
        """The group took partitions away (inside poll). A transaction in flight for them may
        still commit: harmless, the views dedupe event ids, and the offsets are its own."""
        for tp in revoked:
            self._next.pop(_key(tp), None)
            self._verify.pop(_key(tp), None)
            self._unprepared.discard(tp)
            self._stalls.forget(_key(tp))

    def _assigned(self, assigned: Sequence[Partition]) -> None:
        """The group gave partitions (inside poll): pause them until the poll loop has
        positioned them (:meth:`_prepare` blocks; kafka-python allows no blocking call in
        its callback)."""
        assert self._consumer is not None  # noqa: S101 - set before the first poll
        if assigned:
            self._consumer.pause(assigned)
        self._unprepared.update(assigned)
        self._joined = True
        log.info(
            "shard %s assigned %s",
            self.shard.name,
            " ".join(sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)) or "nothing",
        )

    def _prepare(self, consumer: LogConsumer, tps: Iterable[Partition]) -> None:
        """Position newly assigned partitions at the newest position any shard stored
        (what the partition's previous shard stored is not read again), check it is in
        this log (:func:`consumers.identity.position`), then let them be fetched. The
        first record read is checked against the log mark in :meth:`_verified`."""
        tps = list(tps)
        if not tps:
            return
        assert self._writer is not None  # set before connecting  # noqa: S101
        found = resume_positions(self.home, self.shard.name, self._writer.stored, map(_key, tps))
        seeks = position(consumer, tps, found, topic_ids=self._topic_ids)
        self._next.update(seeks.next_offsets)
        self._verify.update(seeks.verify)
        consumer.resume(tps)

    def _sync_positions(self, consumer: LogConsumer) -> None:
        """Learn where newly assigned partitions read from; a partition nobody has read
        starts at 0 (never at the log's current start: that would skip silently; the
        strict consumer does so)."""
        for tp in consumer.assignment():
            if _key(tp) not in self._next:
                self._next[_key(tp)] = consumer.position(tp)

    def _refresh_registry(self) -> None:
        if self._tail is None:
            self._tail = ModelsTail(self.bootstrap, self.topics.models, self._schemas)
        self._tail.read_into(self.registry)

    # -- the loop -------------------------------------------------------------------

    def run(
        self,
        *,
        until_caught_up: bool = False,
        stop: threading.Event | None = None,
        progress: Progress | None = None,
        timeout: float | None = None,
        until: Mapping[tuple[str, int], int] | None = None,
        patience: float = PATIENCE_S,
    ) -> Stats:
        """Materialise until ``stop`` is set, or until caught up with ``until_caught_up``.

        ``until`` (topic, partition) -> offset bounds "caught up" for those partitions: the
        run ends once it holds everything before them, even if producers keep writing.
        A catch-up that reads nothing for ``patience`` seconds stops too, saying what it
        waits for.

        Raises:
            LogGapError: a stored offset is outside the partition's log, or belongs to
                another log (the broker's was replaced).
            BrokerError: not caught up within ``timeout``, or no progress for ``patience``.
            StoreError: DuckDB failed (or a reader held the shard past ``lock_timeout``).
        """
        consumer = self._consumer
        assert consumer is not None  # set in __init__  # noqa: S101
        self._until = dict(until or {})
        started = self._moved = time.monotonic()
        try:
            while stop is None or not stop.is_set():
                now = time.monotonic()
                if timeout is not None and now - started > timeout:
                    raise BrokerError(
                        f"not caught up after {timeout}s: {self._waiting_for(consumer)}"
                    )
                if until_caught_up and now - self._moved > patience:
                    raise BrokerError(
                        f"no progress for {patience:.0f}s: {self._waiting_for(consumer)}"
                    )
                polled, drained = self._poll(consumer)
                self._ahead.clear()
                if polled:
                    self._moved = time.monotonic()
                    self._write(consumer, polled)
                else:
                    self._drain(consumer)
                    self.shard.idle()  # nothing to write: let readers have the file
                if self._gaps:
                    self._step_over_gaps(consumer)
                if drained:
                    self._watch_stalls(consumer, {(m.topic, m.partition) for m in polled})
                self._check_gaps(consumer)
                if progress is not None:
                    done = self._writer.messages if self._writer is not None else 0
                    progress(done, done + self._known_lag(consumer))
                if until_caught_up and self._caught_up(consumer):
                    break
        finally:
            self._drain(consumer)
            self.shard.idle()
        return self.stats(time.monotonic() - started)

    def _poll(self, consumer: LogConsumer) -> tuple[list[LogRecord], bool]:
        """The messages of one transaction, and whether the fetch buffers are drained."""
        out: list[LogRecord] = []
        drained = True
        try:
            batch = consumer.poll(0.2, self.max_batch)
            while batch:
                for tp, records in batch.items():
                    check_same_topic(consumer, tp, self._topic_ids)  # before it is stored
                    if self._verify and _key(tp) in self._verify:
                        records = self._verified(tp, records)
                    out.extend(self._before_gap(consumer, tp, records))
                if len(out) >= self.max_batch or self._gaps:
                    drained = False
                    break
                # Top up the transaction with fetches already buffered.
                batch = consumer.poll(0, self.max_batch - len(out))
        except OffsetOutOfRange as exc:
            raise out_of_range(consumer, exc) from exc
        except TransportError as exc:
            raise BrokerError(f"consuming from {self.bootstrap} failed: {exc}") from exc
        if self._unprepared:  # assigned during this poll (the callback only paused them)
            tps, self._unprepared = list(self._unprepared), set()
            self._prepare(consumer, tps)
        self._sync_positions(consumer)
        return out, drained

    def _before_gap(
        self, consumer: LogConsumer, tp: Partition, records: Sequence[LogRecord]
    ) -> Sequence[LogRecord]:
        """``records`` up to the first offset past the one expected: librdkafka steps over
        offsets without records (an empty batch) in silence; the range is dead-lettered
        (:meth:`_step_over_gaps`), then the partition read again from the record after it."""
        key = _key(tp)
        expected = self._ahead.get(key, self._next.get(key))
        if not records or expected is None:
            return records
        if records[0].offset == expected and records[-1].offset - expected == len(records) - 1:
            self._ahead[key] = records[-1].offset + 1  # contiguous: the usual case
            return records
        cut = next((i for i, r in enumerate(records) if r.offset != expected + i), len(records))
        if cut < len(records):
            self._gaps.append((tp, expected + cut, records[cut].offset))
            consumer.seek(tp, records[cut].offset)
        self._ahead[key] = expected + cut
        return records[:cut]

    def _step_over_gaps(self, consumer: LogConsumer) -> None:
        """Dead-letter the offset ranges :meth:`_before_gap` found without records, each
        in a transaction after the records before it, moving the stored position past."""
        gaps, self._gaps = self._gaps, []
        for tp, at, end in gaps:
            builder = BatchBuilder(self._schemas, self.registry, self.topics)
            log.warning("%s: no record at offsets %d..%d", _where(tp), at, end - 1)
            self._submit(consumer, builder, empty_range(builder, tp, at, end))

    def _verified(self, tp: Partition, records: Sequence[LogRecord]) -> Sequence[LogRecord]:
        """Check the first record read after positioning against the log mark; return the
        records past the stored position."""
        mark = self._verify.pop(_key(tp))
        check_record(_where(tp), mark, records[0].offset, records[0].value)
        held = self._next.get(_key(tp), 0)
        return [r for r in records if r.offset >= held]

    def _write(self, consumer: LogConsumer, messages: list[Any]) -> None:
        builder = BatchBuilder(
            self._schemas, self.registry, self.topics, refresh=self._refresh_registry
        )
        self._submit(consumer, builder, poll_batch(builder, messages, self._topic_ids))

    def _submit(self, consumer: LogConsumer, builder: BatchBuilder, batch: Batch) -> None:
        """Hand ``batch`` to the writer thread (after the transaction in flight)."""
        assert self._writer is not None  # noqa: S101
        self._committed(consumer, self._writer.submit(builder, batch))
        self._next.update(batch.offsets)

    def _drain(self, consumer: LogConsumer) -> None:
        """Wait for the transaction in flight."""
        if self._writer is not None:
            self._committed(consumer, self._writer.drain())

    def _committed(self, consumer: LogConsumer, batch: Batch | None) -> None:
        if batch is not None and self.group is not None:
            # Only after the DuckDB commit; it guides a shard that never held a partition.
            consumer.commit({Partition(t, p): o for (t, p), o in batch.offsets.items()})

    def _watch_stalls(self, consumer: LogConsumer, moved: set[tuple[str, int]]) -> None:
        """After a drained poll: a partition that stays put while its log goes on holds an
        empty record batch (or its log mark's record is gone): see :mod:`consumers.stalls`."""
        for tp in consumer.assignment():
            key = _key(tp)
            mark = self._verify.get(key)
            at = mark.offset if mark is not None else self._next.get(key)
            if at is None or tp in self._unprepared:
                continue
            if self._stalls.stalled(key, at, consumer.highwater(tp), key in moved):
                self._unstall(consumer, tp, at)

    def _unstall(self, consumer: LogConsumer, tp: Partition, at: int) -> None:
        try:
            found = find_next_record(self.bootstrap, tp, at)
        except BrokerError as exc:
            # A position that stands still while the broker is away is no empty batch: the
            # probe's own connection fails too. The watch looks again once the broker is back.
            log.warning("%s: cannot probe the log yet: %s", _where(tp), exc)
            return
        key = _key(tp)
        mark = self._verify.pop(key, None)
        if mark is not None:
            # The record to verify is not where the mark says: the log is another one.
            check_record(_where(tp), mark, found.offset if found.found else None, found.value)
            consumer.seek(tp, self._next[key])
            return
        if found.offset <= at:
            return  # a record is there after all: this consumer was only slow to fetch it
        # 1. dead-letter the empty range, so nothing is skipped in silence; 2. move the
        # stored position past it in the same transaction; 3. read on from there.
        builder = BatchBuilder(self._schemas, self.registry, self.topics)
        log.warning("%s: empty record batch at offsets %d..%d", _where(tp), at, found.offset - 1)
        self._submit(consumer, builder, empty_range(builder, tp, at, found.offset))
        consumer.seek(tp, found.offset)
        self._moved = time.monotonic()

    def _check_gaps(self, consumer: LogConsumer) -> None:
        for tp in consumer.assignment():
            # Tansu answers a fetch past the end with no records and no error: compare the
            # position with the high watermark (the broker lost its log, e.g. a restart).
            hw = consumer.highwater(tp)
            pos = self._next.get(_key(tp))
            if hw is not None and pos is not None and pos > hw:
                raise past_the_end(_where(tp), pos, hw)
            check_same_topic(consumer, tp, self._topic_ids)

    def _waiting_for(self, consumer: LogConsumer) -> str:
        """What a catch-up still waits for, in words."""
        if not self._joined:
            return f"waiting for the group {self.group} to assign partitions"
        behind = []
        for tp in sorted(consumer.assignment(), key=_key):
            held = self._next.get(_key(tp))
            hw = consumer.highwater(tp)
            if tp in self._unprepared or held is None or hw is None:
                behind.append(f"{_where(tp)} (no position or end known yet)")
            elif held < self._until.get(_key(tp), hw):
                behind.append(f"{_where(tp)} at offset {held}, end {hw}")
        return "waiting for " + (", ".join(behind) or "the log marks to be read again")

    def _known_lag(self, consumer: LogConsumer) -> int:
        lag = 0
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is not None:
                lag += max(hw - self._next.get(_key(tp), 0), 0)
        return lag

    def _caught_up(self, consumer: LogConsumer) -> bool:
        if not self._joined or self._unprepared or self._verify:
            return False
        for tp in consumer.assignment():
            held = self._next.get(_key(tp), 0)
            target = self._until.get(_key(tp)) if self._until else None
            if target is not None:
                if held < target:
                    return False
                continue
            hw = consumer.highwater(tp)
            if hw is None or held < hw:
                return False
        return True

    # -- results and cleanup ----------------------------------------------------------

    def stats(self, seconds: float) -> Stats:
        """Counters of this materialiser so far."""
        w = self._writer
        assert w is not None  # noqa: S101
        return Stats(
            messages=w.messages,
            events=w.events,
            duplicates=w.duplicates,
            dead_letters=w.dead,
            transactions=w.transactions,
            seconds=seconds,
            offsets={f"{t}:{p}": o for (t, p), o in sorted(self._next.items())},
        )

    def close(self) -> None:
        """Leave the group, close the connections and release the shard."""
        try:
            if self._writer is not None:
                self._writer.close()
            if self._consumer is not None:
                self._consumer.close()
            if self._tail is not None:
                self._tail.close()
        finally:
            self._consumer = self._tail = None
            self.shard.release()

    def __enter__(self) -> Materialiser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
