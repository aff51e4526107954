"""Which log a shard's offsets belong to: log marks, topic ids, and where to resume.

A stored offset alone cannot tell the log it came from: when a broker loses a partition's
log (a topic deleted and created again, a memory-only broker restarted) and the new log
grows past the stored offsets, resuming there mixes two logs in silence. So every
transaction also stores the *log mark* of each partition (the offset and sha256 of the
last record it read, and the topic id where the broker reports one), and a materialiser
reads that record again on every start and assignment before it stores anything.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ledger.errors import LogGapError
from ledger.log.clients import LogConsumer, OffsetOutOfRange, Partition
from ledger.store import shard_paths
from ledger.store.positions import LogMark, Position, newest, peek_positions

log = logging.getLogger(__name__)

#: A (topic, partition) key, as stored.
Key = tuple[str, int]


#: Seconds to wait for another shard's writer to let go of its file, per shard.
PEEK_TIMEOUT = 1.0


def record_sha256(value: bytes | None) -> str:
    """The sha256 (hex) of a record's value, as a log mark keeps it."""
    return hashlib.sha256(value or b"").hexdigest()


def replaced_log(where: str, detail: str) -> LogGapError:
    """The error for stored offsets that belong to another log than the broker's."""
    return LogGapError(
        f"{where}: {detail}: the broker's log was replaced (the topic deleted and created "
        "again, or a memory-only broker restarted), so the stored offsets belong to the old "
        "log and resuming would mix the two; materialise into a fresh home"
    )


def deleted_before_stored(where: str, next_offset: int, start: int) -> LogGapError:
    """The error for a log that starts past the stored position (retention deleted it)."""
    return LogGapError(
        f"{where}: the log starts at offset {start} but offsets {next_offset}..{start - 1} "
        "were never materialised (retention deleted them); rebuild from a source that "
        "still holds them"
    )


def past_the_end(where: str, position: int, end: int) -> LogGapError:
    """The error for a stored position past the log's end (the broker lost events)."""
    return LogGapError(
        f"{where}: stored offset {position} is past the log's end {end}: offsets "
        f"{end}..{position - 1} are gone from the broker (did it lose its log, e.g. a "
        "memory-only broker restarted?); materialise into a fresh home"
    )


def out_of_range(consumer: LogConsumer, exc: OffsetOutOfRange) -> LogGapError:
    """The error for a position outside its partition's log (``exc.partitions``): Apache
    Kafka answers a fetch outside the log so (Tansu answers one past the end with no
    records, see :func:`past_the_end`). Names the partition and the offsets lost."""
    details = []
    for tp, offset in exc.partitions.items():
        where = f"{tp.topic}[{tp.partition}]"
        start = consumer.beginning_offsets([tp]).get(tp, 0)
        if offset < start:
            details.append(str(deleted_before_stored(where, offset, start)))
        else:
            end = consumer.end_offsets([tp]).get(tp, 0)
            details.append(str(past_the_end(where, offset, end)))
    return LogGapError("; ".join(details) or f"offset out of range: {exc}")


def check_topic_id(where: str, mark: LogMark | None, current: str | None) -> None:
    """Raise :class:`LogGapError` when the topic's id differs from the one stored."""
    if mark is not None and mark.topic_id and current and mark.topic_id != current:
        raise replaced_log(where, f"the topic's id is {current}, the stored one {mark.topic_id}")


def check_record(where: str, mark: LogMark, offset: int | None, value: bytes | None) -> None:
    """Raise :class:`LogGapError` unless the first record read from ``mark.offset`` is at
    that offset with the stored hash (``offset=None``: the log holds no record there)."""
    if offset is None:
        raise replaced_log(where, f"the log holds no record at the stored offset {mark.offset}")
    if offset != mark.offset:
        raise replaced_log(
            where, f"the record stored from offset {mark.offset} is gone (the next is {offset})"
        )
    if record_sha256(value) != mark.record_sha256:
        raise replaced_log(where, f"the record at offset {offset} is not the one stored")


def resume_positions(
    home: Path, shard: str, own: dict[Key, Position], keys: Iterable[Key]
) -> dict[Key, Position]:
    """Per partition of ``keys``, the newest position any shard of ``home`` stored.

    After a rebalance a partition's new shard may hold an older offset than the shard
    that had it: resuming from the newest saves re-reading what is stored already. The
    other shards are read read-only; one whose writer keeps its file past
    :data:`PEEK_TIMEOUT` is passed over (logged): then this shard resumes from its own
    offset, and what it reads again is skipped by event id, at the cost of the re-read.
    """
    wanted = set(keys)
    found = [{k: v for k, v in own.items() if k in wanted}]
    for path in shard_paths(home):
        if path.stem == shard:
            continue
        peeked = peek_positions(path, timeout=PEEK_TIMEOUT)
        if peeked is None:
            log.warning(
                "shard %s is busy; resuming without its offsets (events it stored are "
                "read again and skipped by event id)",
                path.stem,
            )
            continue
        found.append({k: v for k, v in peeked.items() if k in wanted})
    return newest(found)


@dataclass(frozen=True, slots=True)
class Seeks:
    """Where :func:`position` put the partitions: their next offsets, and the log marks
    their first record read must match."""

    next_offsets: dict[Key, int] = field(default_factory=dict)
    verify: dict[Key, LogMark] = field(default_factory=dict)


def position(
    consumer: LogConsumer,
    tps: list[Partition],
    found: dict[Key, Position],
    *,
    topic_ids: dict[str, str],
) -> Seeks:
    """Seek ``tps`` for the positions ``found`` (see :func:`resume_positions`).

    1. Refuse a position before the log's start (retention deleted what was never stored)
       or in a topic whose id is not the stored one (created again).
    2. Seek to the log mark's offset, so that the first record read proves the log is the
       one the position came from; without a mark, to the position itself. A partition
       without a position is left to the consumer (the group's committed offset, or 0).

    ``topic_ids`` is updated with the ids the broker reports now.
    """
    out = Seeks()
    starts = consumer.beginning_offsets(tps)
    for tp in tps:
        key, where = (tp.topic, tp.partition), f"{tp.topic}[{tp.partition}]"
        current = consumer.topic_id(tp.topic)
        if current is not None:
            topic_ids[tp.topic] = current
        pos = found.get(key)
        if pos is None:
            continue
        start = starts.get(tp, 0)
        if start > pos.next_offset:
            raise deleted_before_stored(where, pos.next_offset, start)
        check_topic_id(where, pos.mark, current)
        if pos.mark is not None and pos.mark.offset >= start:
            consumer.seek(tp, pos.mark.offset)
            out.verify[key] = pos.mark
        else:
            consumer.seek(tp, pos.next_offset)
        out.next_offsets[key] = pos.next_offset
        log.info("%s resumes at %d, stored by shard %s", where, pos.next_offset, pos.shard)
    return out


def check_same_topic(consumer: LogConsumer, tp: Partition, topic_ids: dict[str, str]) -> None:
    """Raise :class:`LogGapError` when ``tp``'s topic has another id than when positioned.

    A topic created again while the consumer ran (or a broker that lost its log): the
    metadata, refreshed on reconnecting, has the new id before the new log is fetched.
    """
    seen = topic_ids.get(tp.topic)
    current = consumer.topic_id(tp.topic)
    if seen is not None and current is not None and current != seen:
        raise replaced_log(
            f"{tp.topic}[{tp.partition}]",
            f"the topic's id changed from {seen} to {current} while reading",
        )
