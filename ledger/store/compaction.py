"""Compaction: a shard file rewritten with its event tables in id order.

The materialiser writes events in log order, so every DuckDB row group of ``embeddings``
holds every range of entity ids, its zone map (min/max) prunes nothing, and one entity's
lineage scans the whole table (140 ms at 10M events). Rewritten ordered by entity id
(subject id for decisions), each row group covers a narrow range of ids and the same
lookup reads one row group per table. Rows written after a compaction land at the end,
unsorted, and are scanned whole until the next compaction (see BENCHMARKS.md, "Lineage at
10M: compaction in id order").

The rewrite goes to a new file next to the shard, which then replaces it with one rename:
readers keep attaching the old file (read-only) while the copy runs, and a reader that
attached it before the rename reads it to the end. The shard's writer claim is held
throughout, so no materialiser writes it meanwhile; the rows and their offsets are copied
in one transaction, so the new file holds exactly what the old one did.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ledger.errors import ShardBusy, StoreError
from ledger.store._db import _open_db, _run, _sql_str, _store_error, memory_capped
from ledger.store.shards import Shard
from ledger.store.tables import DDL

#: The event tables compaction orders, and by what: the id column lineage filters on, then
#: the log order (so the rewrite is deterministic). Other tables are copied as they are.
SORT_KEYS = {
    "embeddings": 'entity_id, "partition", "offset"',
    "deletions": 'entity_id, "partition", "offset"',
    "decisions": 'subject_id, "partition", "offset"',
}

#: DuckDB's memory while it sorts (the rest spills to a temporary folder next to the file).
COMPACT_MEMORY_LIMIT = "2GB"

#: Suffix of the new file while it is written (the views read ``*.duckdb`` files only).
_NEW_SUFFIX = ".compacting"


@dataclass(frozen=True, slots=True)
class Compacted:
    """What one shard's compaction did: rows per table (the same before and after), the
    file's size before and after, and how long it took."""

    shard: str
    rows: dict[str, int]
    bytes_before: int
    bytes_after: int
    seconds: float


def compact(
    home: Path,
    shard: str = "main",
    *,
    memory_limit: str = COMPACT_MEMORY_LIMIT,
    lock_timeout: float = 60.0,
    writer: Shard | None = None,
) -> Compacted:
    """Rewrite shard ``shard`` of ``home`` with its event tables in id order, so that one
    entity's lineage reads a row group per table instead of every row.

    Steps:
    1. claim the shard's writer lock, so no materialiser writes it during the copy;
    2. fold a write-ahead log left by a writer that stopped into the file (a checkpoint),
       so the file alone holds every committed row;
    3. copy every table into a new file in one transaction, the event tables ordered by
       id, with the shard's keys; the row counts must match;
    4. replace the shard file with the new one (one rename), then give up the claim.

    A crash before step 4 leaves the shard as it was (the half-written file is removed
    by the next compaction). Needs free disk for a second copy of the shard.

    ``writer`` is the shard's own writer when that process compacts (e.g. a materialiser
    while it is idle): its claim is used instead of step 1, and its connection closed.

    Raises:
        ShardBusy: a materialiser writes this shard: stop it, or compact when it is not
            running.
        StoreError: DuckDB failed, or the shard holds a table this version does not know.

    Example:
        >>> compact(Path(".ledger"), "main").rows["embeddings"]  # doctest: +SKIP
        5000000
    """
    claimed = writer is not None
    if writer is None:
        writer = Shard(home, shard, lock_timeout=lock_timeout)
    if not writer.path.is_file():
        raise StoreError(f"no shard {writer.name} in {home}: nothing to compact")
    started = time.monotonic()
    try:
        if claimed:
            writer.idle()  # the file is copied, not written, while it is compacted
        else:
            writer.claim()
    except ShardBusy as exc:
        raise ShardBusy(
            f"shard {shard} is being written by a materialiser: it cannot be compacted now",
            shard=shard,
            hint="stop the materialiser of that shard, compact, then start it again",
            cli_hint="stop `ledger consume` of that shard, run `ledger compact`, start it again",
        ) from exc
    try:
        before = writer.path.stat().st_size
        _checkpoint(writer)
        new = writer.path.with_name(writer.path.name + _NEW_SUFFIX)
        _remove(new)
        try:
            rows = _copy_sorted(writer.path, new, memory_limit=memory_limit)
            _replace(new, writer.path)
        finally:
            _remove(new)  # after a failure only: the rename took it otherwise
        after = writer.path.stat().st_size
    finally:
        if not claimed:
            writer.release()
    return Compacted(writer.name, rows, before, after, time.monotonic() - started)


def _checkpoint(writer: Shard) -> None:
    # A write-ahead log beside the file (its writer stopped without closing) holds
    # committed rows the file does not, and would be replayed into the new file after the
    # rename: open the shard read-write as the writer does (retried while a reader holds
    # it) and close it, which checkpoints. Without one the file holds every committed row,
    # and with the claim held no writer makes a new one.
    wal = writer.path.with_name(writer.path.name + ".wal")
    if not wal.exists():
        return
    deadline = time.monotonic() + (writer.lock_timeout or 0.0)
    while True:
        try:
            con = _open_db(str(writer.path))
            break
        except duckdb.Error as exc:
            err = _store_error(exc, f"opening shard {writer.name}")
            if not err.transient or time.monotonic() > deadline:
                raise err from exc
            time.sleep(0.02)
    try:
        _run(con, "CHECKPOINT")
    except duckdb.Error as exc:
        raise _store_error(exc, f"checkpointing shard {writer.name}") from exc
    finally:
        con.close()
    if wal.exists():
        raise StoreError(f"shard {writer.name} still has a write-ahead log after a checkpoint")


def _copy_sorted(old: Path, new: Path, *, memory_limit: str) -> dict[str, int]:
    try:
        con = _open_db(str(new))
    except duckdb.Error as exc:
        raise _store_error(exc, f"creating {new.name}") from exc
    try:
        _run(con, DDL)
        _run(con, f"ATTACH '{_sql_str(str(old))}' AS src (READ_ONLY)")
        tables = [
            str(t)
            for (t,) in _run(
                con,
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'src' "
                "ORDER BY table_name",
            )
        ]
        here = "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
        known = {str(t) for (t,) in _run(con, here)}
        unknown = sorted(set(tables) - known)
        if unknown:
            raise StoreError(
                f"shard {old.stem} holds tables this version does not know "
                f"({', '.join(unknown)}): it is left as it is"
            )
        rows: dict[str, int] = {}
        with memory_capped(con, memory_limit):
            _run(con, "BEGIN TRANSACTION")
            for table in tables:
                order = f" ORDER BY {SORT_KEYS[table]}" if table in SORT_KEYS else ""
                # table names come from the shard's catalogue and are checked against the DDL's
                _run(con, f"INSERT INTO {table} BY NAME SELECT * FROM src.{table}{order}")  # noqa: S608
                ((copied,),) = _run(con, f"SELECT count(*) FROM {table}")  # noqa: S608
                ((stored,),) = _run(con, f"SELECT count(*) FROM src.{table}")  # noqa: S608
                if copied != stored:
                    raise StoreError(f"compacting {table}: copied {copied} of {stored} rows")
                rows[table] = int(copied)
            _run(con, "COMMIT")
        _run(con, "DETACH src")
        _run(con, "CHECKPOINT")
    except duckdb.Error as exc:
        raise _store_error(exc, f"compacting shard {old.stem}") from exc
    finally:
        con.close()
    return rows


def _replace(new: Path, old: Path) -> None:
    # The new file is whole on disk before it takes the shard's name, and the rename is
    # on disk before the claim is given up.
    with open(new, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(new, old)
    folder = os.open(old.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)
