"""The materialiser: ledger topics -> one DuckDB shard, exactly once in effect.

Each poll is decoded, validated and written with the offsets it covers in ONE DuckDB
transaction (DESIGN decision 3). On start and on every assignment the consumer seeks
to the offset stored in its shard, or, for a partition the shard never held, to the
group's committed offset (committed only after the DuckDB transaction), or to 0.
Events already stored are skipped by event id; the views dedupe across shards.

Example:
    >>> stats = catch_up("localhost:9092", Topics(), Path(".ledger"))  # doctest: +SKIP
    >>> stats.events, stats.dead_letters                               # doctest: +SKIP
    (4012, 0)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError
from kafka.structs import OffsetAndMetadata

from consumers.batch import BatchBuilder
from ledger.contract.events import Topics
from ledger.contract.rules import Registry
from ledger.contract.schemas import SchemaStore, default_store
from ledger.errors import BrokerError, LogGapError
from ledger.log.topics import check_single_partition, partitions_of
from ledger.store import Shard

log = logging.getLogger(__name__)

#: progress(done, total): messages materialised so far, and done + the lag still known.
Progress = Callable[[int, int], None]

#: Consumer settings measured on Tansu: a group join in ~3 s (DESIGN decision 7), and
#: fetches big enough that one poll fills a transaction of a few thousand 384-d vectors.
GROUP_CONFIG = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
FETCH_CONFIG = {
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "fetch_max_wait_ms": 100,
    "receive_buffer_bytes": 4 * 1024 * 1024,
}


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


def _key(tp: TopicPartition) -> tuple[str, int]:
    return (tp.topic, tp.partition)


class _ModelsTail:
    """Reads the models topic forward to its true end, to learn registrations early."""

    def __init__(self, bootstrap: str, topic: str, schemas: SchemaStore) -> None:
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        check_single_partition(
            topic, (tp.partition for tp in partitions_of(self._consumer, [topic]))
        )
        self._tp = TopicPartition(topic, 0)
        self._consumer.assign([self._tp])
        self._consumer.seek(self._tp, 0)
        self._schemas = schemas

    def read_into(self, registry: Registry, *, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for records in self._consumer.poll(timeout_ms=100).values():
                registry.add_registrations((m.value for m in records), self._schemas)
            hw = self._consumer.highwater(self._tp)
            if hw is not None and self._consumer.position(self._tp) >= hw:
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"reading {self._tp.topic} to its end timed out")

    def close(self) -> None:
        self._consumer.close()


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
        self.shard = Shard(home, shard, lock_timeout=lock_timeout, hold=hold)
        self.shard.claim()
        self._schemas = default_store()
        self._tail: _ModelsTail | None = None
        self._consumer: KafkaConsumer | None = None
        self._joined = False
        self._messages = self._events = self._duplicates = self._dead = self._txns = 0
        self._next: dict[tuple[str, int], int] = {}
        self._until: dict[tuple[str, int], int] = {}  # run(until=...): where catching up ends
        # One writer thread: DuckDB writes batch N (releasing the GIL) while this thread
        # polls and decodes batch N+1. At most one transaction is in flight.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._pending: tuple[Future[dict[str, int]], int, int, dict[tuple[str, int], int]] | None
        self._pending = None
        self._stored: dict[tuple[str, int], int] = {}
        try:
            self.registry = Registry(self.shard.model_versions())
            # This process is the shard's only writer (claim), so after this one read the
            # stored offsets are known here; the rebalance callback must not block on I/O.
            self._stored = self.shard.stored_offsets()
            self._consumer = self._connect()
        except BaseException:
            self.close()
            raise

    # -- setup ----------------------------------------------------------------------

    def _connect(self) -> KafkaConsumer:
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "enable_auto_commit": False,
            # Never jump silently: an out-of-range position is a gap (DESIGN decision 9).
            "auto_offset_reset": "none",
            "max_poll_records": self.max_batch,
            **FETCH_CONFIG,
        }
        try:
            if self.group is None:
                consumer = KafkaConsumer(**config)
                tps = partitions_of(consumer, self.topics.all)
                consumer.assign(tps)
                self._seek(consumer, tps)
                self._joined = True
            else:
                consumer = KafkaConsumer(group_id=self.group, **GROUP_CONFIG, **config)
                partitions_of(consumer, self.topics.all)  # fail fast on missing topics
                consumer.subscribe(list(self.topics.all), listener=_Listener(self, consumer))
        except KafkaError as exc:
            raise BrokerError(f"cannot consume from {self.bootstrap}: {exc}") from exc
        return consumer

    def _seek_stored(self, consumer: KafkaConsumer, tps: Iterable[TopicPartition]) -> None:
        """Seek to the offsets stored in the shard; others keep the group's committed offset.

        Runs inside the rebalance callback, where kafka-python allows no blocking call:
        a partition without a stored offset is positioned by the consumer itself from the
        group's committed offset, or, with none, ends up in :meth:`_sync_positions`.
        """
        for tp in tps:
            offset = self._stored.get(_key(tp))
            if offset is not None:
                consumer.seek(tp, offset)
                self._next[_key(tp)] = offset

    def _sync_positions(self, consumer: KafkaConsumer) -> None:
        """Learn where newly assigned partitions read from; a partition nobody has read
        starts at 0 (never at the log's current start: that would skip silently)."""
        for tp in consumer.assignment():
            if _key(tp) in self._next:
                continue
            try:
                self._next[_key(tp)] = consumer.position(tp)
            except NoOffsetForPartitionError:
                consumer.seek(tp, 0)
                self._next[_key(tp)] = 0

    def _seek(self, consumer: KafkaConsumer, tps: Iterable[TopicPartition]) -> None:
        """Position each partition at its stored offset, else 0; check the log still has it."""
        tps = list(tps)
        if not tps:
            return
        starts = consumer.beginning_offsets(tps)
        for tp in tps:
            offset = self._stored.get(_key(tp), 0)
            if starts.get(tp, 0) > offset:
                raise LogGapError(
                    f"{tp.topic}[{tp.partition}]: the log starts at offset {starts[tp]} but "
                    f"offsets {offset}..{starts[tp] - 1} were never materialised (retention "
                    "deleted them); rebuild from a source that still holds them"
                )
            consumer.seek(tp, offset)
            self._next[_key(tp)] = offset

    def _refresh_registry(self) -> None:
        if self._tail is None:
            self._tail = _ModelsTail(self.bootstrap, self.topics.models, self._schemas)
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
    ) -> Stats:
        """Materialise until ``stop`` is set, or until caught up with ``until_caught_up``.

        ``until`` (topic, partition) -> offset bounds "caught up" for those partitions: the
        run ends once it holds everything before them, even if producers keep writing.

        Raises:
            LogGapError: a stored offset is outside the partition's log.
            StoreError: DuckDB failed (or a reader held the shard past ``lock_timeout``).
        """
        consumer = self._consumer
        assert consumer is not None  # set in __init__  # noqa: S101
        self._until = dict(until or {})
        started = time.monotonic()
        try:
            while stop is None or not stop.is_set():
                if timeout is not None and time.monotonic() - started > timeout:
                    raise BrokerError(f"not caught up after {timeout}s")
                polled = self._poll(consumer)
                if polled:
                    self._write(consumer, polled)
                else:
                    self._drain(consumer)
                    self.shard.idle()  # nothing to write: let readers have the file
                self._check_gaps(consumer)
                if progress is not None:
                    progress(self._messages, self._messages + self._known_lag(consumer))
                if until_caught_up and self._caught_up(consumer):
                    break
        finally:
            self._drain(consumer)
            self.shard.idle()
        return self.stats(time.monotonic() - started)

    def _poll(self, consumer: KafkaConsumer) -> list[Any]:
        out: list[Any] = []
        try:
            batch = consumer.poll(timeout_ms=200, max_records=self.max_batch)
            while batch:
                for records in batch.values():
                    out.extend(records)
                if len(out) >= self.max_batch:
                    break
                # Top up the transaction with fetches already buffered.
                batch = consumer.poll(timeout_ms=0, max_records=self.max_batch - len(out))
        except OffsetOutOfRangeError as exc:
            raise self._gap(consumer, exc) from exc
        except NoOffsetForPartitionError as exc:
            for tp in exc.args[0] if exc.args else ():
                consumer.seek(tp, 0)  # never read by anyone in the group: the whole log
                self._next[_key(tp)] = 0
        self._sync_positions(consumer)
        return out

    def _write(self, consumer: KafkaConsumer, messages: list[Any]) -> None:
        builder = BatchBuilder(
            self._schemas, self.registry, self.topics, refresh=self._refresh_registry
        )
        offsets: dict[tuple[str, int], int] = {}
        # Registrations first: an event may use a version registered in the same poll.
        messages.sort(key=lambda m: m.topic != self.topics.models)
        for msg in messages:
            builder.add(msg.topic, msg.partition, msg.offset, msg.value)
            key = (msg.topic, msg.partition)
            offsets[key] = max(offsets.get(key, 0), msg.offset + 1)
        batch = builder.build(offsets)
        self._drain(consumer)
        self._pending = (
            self._writer.submit(self.shard.write, batch),
            builder.messages,
            len(builder.rejected),
            offsets,
        )
        self._next.update(offsets)

    def _drain(self, consumer: KafkaConsumer) -> None:
        """Wait for the transaction in flight; then count it and commit its offsets."""
        if self._pending is None:
            return
        future, messages, rejected, offsets = self._pending
        self._pending = None
        inserted = future.result()  # a StoreError of the writer thread surfaces here
        self._stored.update(offsets)
        self._txns += 1
        self._messages += messages
        self._dead += rejected
        stored = sum(n for name, n in inserted.items() if name != "dead_letters")
        self._events += stored
        self._duplicates += messages - rejected - stored
        if self.group is not None:
            # Only after the DuckDB commit; it guides a shard that never held a partition.
            consumer.commit_async(
                {
                    TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                    for (t, p), o in offsets.items()
                }
            )

    def _check_gaps(self, consumer: KafkaConsumer) -> None:
        # Tansu answers a fetch past the end with no records and no error: compare the
        # position with the high watermark (the broker lost its log, e.g. a restart).
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            pos = self._next.get(_key(tp))
            if hw is not None and pos is not None and pos > hw:
                raise LogGapError(
                    f"{tp.topic}[{tp.partition}]: stored offset {pos} is past the log's end "
                    f"{hw}: offsets {hw}..{pos - 1} are gone from the broker (did it lose its "
                    "log, e.g. a memory-only broker restarted?); materialise into a fresh home"
                )

    def _gap(self, consumer: KafkaConsumer, exc: OffsetOutOfRangeError) -> LogGapError:
        parts = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        details = []
        for tp, offset in parts.items():
            start = consumer.beginning_offsets([tp]).get(tp, 0)
            if offset < start:
                details.append(
                    f"{tp.topic}[{tp.partition}] offsets {offset}..{start - 1} "
                    "were deleted before being materialised"
                )
            else:
                details.append(
                    f"{tp.topic}[{tp.partition}] stored offset {offset} is past the "
                    "log's end (the broker lost events)"
                )
        return LogGapError("; ".join(details) or f"offset out of range: {exc}")

    def _known_lag(self, consumer: KafkaConsumer) -> int:
        lag = 0
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is not None:
                lag += max(hw - self._next.get(_key(tp), 0), 0)
        return lag

    def _caught_up(self, consumer: KafkaConsumer) -> bool:
        if not self._joined:
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
        return Stats(
            messages=self._messages,
            events=self._events,
            duplicates=self._duplicates,
            dead_letters=self._dead,
            transactions=self._txns,
            seconds=seconds,
            offsets={f"{t}:{p}": o for (t, p), o in sorted(self._next.items())},
        )

    def close(self) -> None:
        """Leave the group, close the connections and release the shard."""
        try:
            self._writer.shutdown(wait=True)
            if self._consumer is not None:
                self._consumer.close(autocommit=False)
            if self._tail is not None:
                self._tail.close()
        finally:
            self._consumer = self._tail = None
            self.shard.release()

    def __enter__(self) -> Materialiser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seek newly assigned partitions to their stored offsets."""

    def __init__(self, owner: Materialiser, consumer: KafkaConsumer) -> None:
        self._owner = owner
        self._consumer = consumer

    def on_partitions_revoked(self, revoked: Any) -> None:
        # A transaction in flight for these partitions may still commit: harmless, its
        # rows carry event ids that the views dedupe, and its offsets are this shard's own.
        for tp in revoked:
            self._owner._next.pop(_key(tp), None)  # noqa: SLF001 - the owner's own state

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._owner._seek_stored(self._consumer, assigned)  # noqa: SLF001
        self._owner._joined = True  # noqa: SLF001
        log.info(
            "shard %s assigned %s",
            self._owner.shard.name,
            " ".join(sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)) or "nothing",
        )


def catch_up(
    bootstrap: str,
    topics: Topics,
    home: Path,
    *,
    shard: str = "main",
    group: str | None = None,
    progress: Progress | None = None,
    timeout: float | None = None,
    until: Mapping[tuple[str, int], int] | None = None,
) -> Stats:
    """Materialise every partition (or the group's share) to its true end, then return.

    ``group=None`` assigns all partitions without joining a group: fast, for rollback and
    full replays into a fresh home.

    Example:
        >>> catch_up(bs, Topics("acme"), Path(".ledger")).events  # doctest: +SKIP
        100000
    """
    with Materialiser(bootstrap, topics, home, shard=shard, group=group) as mat:
        return mat.run(until_caught_up=True, progress=progress, timeout=timeout, until=until)
