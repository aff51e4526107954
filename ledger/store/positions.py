"""Where a shard stands in the log, and which log: stored offsets with their log marks.

A *log mark* is the offset and the sha256 of the last record a shard stored for a
partition, with the topic's id when the broker reports one. A materialiser reads that
record again on every start and assignment: a different record (or none) means the
broker's log was replaced (a topic deleted and created again, a memory-only broker
restarted) and the stored offsets point into another log.

Other shards' positions are read read-only (:func:`peek_positions`), so a partition
handed from one shard to another resumes at the newest offset any shard stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from ledger.store._db import _run, _store_error

Partition = tuple[str, int]

MARKS_DDL = """
CREATE TABLE IF NOT EXISTS log_marks (
    topic VARCHAR, "partition" INTEGER, last_offset BIGINT, record_sha256 VARCHAR,
    topic_id VARCHAR, PRIMARY KEY (topic, "partition"));
"""


@dataclass(frozen=True, slots=True)
class LogMark:
    """The last record stored of a partition: its offset, the sha256 of its value, and
    the topic's id (``None`` where the broker reports none)."""

    offset: int
    record_sha256: str
    topic_id: str | None = None


@dataclass(frozen=True, slots=True)
class Position:
    """A stored position: the next offset to read, and the mark (``None`` for positions
    stored before marks existed, or never past an empty range)."""

    next_offset: int
    mark: LogMark | None
    shard: str


@dataclass(frozen=True, slots=True)
class IdConflict:
    """A row whose event id is stored already, with other content: ``source`` and
    ``stored`` are ``(topic, partition, offset)`` of the new and the stored event."""

    table: str
    event_id: str
    source: tuple[str, int, int]
    stored: tuple[str, int, int]


def upsert_offsets(con: duckdb.DuckDBPyConnection, offsets: dict[Partition, int]) -> None:
    """Replace the next offsets of these partitions (inside the caller's transaction)."""
    con.register(
        "_offsets",
        pa.table(
            {
                "topic": pa.array([t for t, _ in offsets], pa.string()),
                "partition": pa.array([p for _, p in offsets], pa.int32()),
                "next_offset": pa.array(list(offsets.values()), pa.int64()),
            }
        ),
    )
    _run(con, "INSERT OR REPLACE INTO offsets SELECT * FROM _offsets")
    con.unregister("_offsets")


def upsert_marks(con: duckdb.DuckDBPyConnection, marks: dict[Partition, LogMark]) -> None:
    """Replace the marks of these partitions (inside the caller's transaction)."""
    keys = list(marks)
    con.register(
        "_marks",
        pa.table(
            {
                "topic": pa.array([t for t, _ in keys], pa.string()),
                "partition": pa.array([p for _, p in keys], pa.int32()),
                "last_offset": pa.array([marks[k].offset for k in keys], pa.int64()),
                "record_sha256": pa.array([marks[k].record_sha256 for k in keys], pa.string()),
                "topic_id": pa.array([marks[k].topic_id for k in keys], pa.string()),
            }
        ),
    )
    _run(con, "INSERT OR REPLACE INTO log_marks SELECT * FROM _marks")
    con.unregister("_marks")


def find_conflicts(
    con: duckdb.DuckDBPyConnection, table: str, content: list[str]
) -> list[IdConflict]:
    """Rows of the registered ``_batch`` whose event id ``table`` holds with other
    ``content`` columns (a different event reusing the id). Run it after an insert that
    skipped rows: a row just inserted matches itself."""
    # The ids are equal by the join (the table's may be a UUID, the batch's text).
    differs = " OR ".join(f't."{c}" IS DISTINCT FROM b."{c}"' for c in content if c != "event_id")
    found = _run(
        con,
        f'SELECT b.event_id, b.topic, b."partition", b."offset", t.topic, t."partition", '  # noqa: S608 - names from the schema
        f't."offset" FROM _batch b JOIN {table} t ON t.event_id = b.event_id WHERE {differs}',
    )
    return [
        IdConflict(table, str(e), (str(bt), int(bp), int(bo)), (str(tt), int(tp), int(to)))
        for e, bt, bp, bo, tt, tp, to in found
    ]


def read_positions(con: duckdb.DuckDBPyConnection, shard: str) -> dict[Partition, Position]:
    """Every stored offset of the shard open on ``con``, with its mark where it has one."""
    offsets = _run(con, 'SELECT topic, "partition", next_offset FROM offsets')
    try:
        marks = _run(
            con,
            'SELECT topic, "partition", last_offset, record_sha256, topic_id FROM log_marks',
        )
    except duckdb.CatalogException:
        marks = []  # a shard written before log marks, opened read-only: offsets only
    by_key = {(str(t), int(p)): LogMark(int(o), str(h), tid) for t, p, o, h, tid in marks}
    out = {}
    for t, p, o in offsets:
        mark = by_key.get((str(t), int(p)))
        # A mark at or past the next offset is from before a rewind: it proves nothing.
        out[(str(t), int(p))] = Position(
            int(o), mark if mark is not None and mark.offset < o else None, shard
        )
    return out


#: Shard files this process writes, by resolved path: the writer's connection (the file is
#: attached to an in-memory database of its own, which no other connection can open).
WRITING_HERE: dict[Path, duckdb.DuckDBPyConnection] = {}


def peek_positions(path: Path, *, timeout: float) -> dict[Partition, Position] | None:
    """The stored positions of the shard file ``path``, opened read-only; ``None`` when
    its writer kept the file for all of ``timeout`` seconds (the caller decides).

    Example:
        >>> peek_positions(home / "shards" / "a.duckdb", timeout=2.0)  # doctest: +SKIP
        {('ledger.embeddings', 0): Position(next_offset=1017, ...)}
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        writer = WRITING_HERE.get(path.resolve())
        try:
            if writer is not None:
                # This process writes the file (another materialiser in it): a cursor of
                # that writer's database reads what it committed.
                con = writer.cursor()
                _run(con, "USE shard")
            else:
                con = duckdb.connect(str(path), read_only=True)
            break
        except duckdb.Error as exc:
            err = _store_error(exc, f"reading the offsets of shard {path.stem}")
            if writer is None and not err.transient:  # a writer here: closed meanwhile
                raise err from exc
            if time.monotonic() > deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    try:
        return read_positions(con, path.stem)
    except duckdb.Error as exc:
        raise _store_error(exc, f"reading the offsets of shard {path.stem}") from exc
    finally:
        con.close()


def newest(positions: list[dict[Partition, Position]]) -> dict[Partition, Position]:
    """Per partition, the position with the greatest next offset (the first on a tie)."""
    out: dict[Partition, Position] = {}
    for found in positions:
        for key, pos in found.items():
            if key not in out or pos.next_offset > out[key].next_offset:
                out[key] = pos
    return out
