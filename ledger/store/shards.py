"""The write side: shard files, one writer process each, one transaction per batch."""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import duckdb
import pyarrow as pa

from ledger.contract.rules import ModelVersion
from ledger.errors import ShardBusy, StoreError
from ledger.store._db import _attach_writer, _open_db, _run, _store_error
from ledger.store.positions import (
    WRITING_HERE,
    IdConflict,
    LogMark,
    Position,
    find_conflicts,
    read_positions,
    upsert_marks,
    upsert_offsets,
)
from ledger.store.tables import DDL, EVENT_TABLES, SOURCE_COLUMNS

Partition = tuple[str, int]

# A stored event id is skipped (retries, replays): an anti-join of the batch's ids with the
# table's event-id column, a scan of 16 bytes a row, instead of a key index (BENCHMARKS.md).
_INSERT_EVENTS = (
    "INSERT INTO {0} SELECT * FROM _batch b WHERE NOT EXISTS "
    "(SELECT 1 FROM {0} s WHERE s.event_id = b.event_id)"
)
# A dead letter is keyed by its place in the log: re-reading that offset adds nothing.
_INSERT = {
    "dead_letters": "INSERT INTO dead_letters SELECT * FROM _batch b WHERE NOT EXISTS ("
    "SELECT 1 FROM dead_letters d WHERE d.topic = b.topic AND "
    'd."partition" = b."partition" AND d."offset" = b."offset")',
}

_SHARD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")

#: After holding its connection for ``hold`` seconds a writer pauses this long before
#: reconnecting, so a reader retrying every few milliseconds can take the file.
YIELD_S = 0.05


@dataclass(frozen=True, slots=True)
class Batch:
    """What one transaction writes: rows per table and the next offset per partition.

    ``tables`` maps a table name (``embeddings``, ``dead_letters``, ...) to an Arrow
    table with that table's columns; ``offsets`` maps ``(topic, partition)`` to the next
    offset to read. ``redriven`` names dead letters ``(topic, partition, offset)`` to
    mark as re-driven in the same transaction. ``marks`` records, per partition, the
    last record the batch stored (see :mod:`ledger.store.positions`).
    """

    tables: Mapping[str, pa.Table]
    offsets: Mapping[Partition, int] = field(default_factory=dict)
    redriven: Sequence[tuple[str, int, int]] = ()
    marks: Mapping[Partition, LogMark] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered message; ``id`` is ``topic:partition:offset``."""

    topic: str
    partition: int
    offset: int
    raw: bytes
    reason: str
    error: str
    received_at: datetime
    redriven_at: datetime | None
    shard: str

    @property
    def id(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


def shard_dir(home: Path) -> Path:
    """Where the shard files of ``home`` live."""
    return Path(home) / "shards"


def busy_shards(home: Path) -> list[str]:
    """Shards of ``home`` whose writer claim a live process holds (a running materialiser)."""
    busy = []
    for path in shard_paths(home):
        try:
            with open(path.with_suffix(".writer"), "rb") as handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    busy.append(path.stem)
        except FileNotFoundError:
            continue  # never claimed since it was created: nobody writes it
    return busy


def shard_paths(home: Path) -> list[Path]:
    """Every shard file under ``home``, sorted by name."""
    folder = shard_dir(home)
    return sorted(folder.glob("*.duckdb")) if folder.is_dir() else []


class Shard:
    """One shard file, written by one process, one transaction at a time.

    Args:
        home: the state folder.
        name: the shard's name (file ``<home>/shards/<name>.duckdb``).
        lock_timeout: seconds to keep retrying while another process holds the file
            (a reader of the views); ``None`` waits as long as it takes.
        hold: seconds the writer may keep its connection across transactions while it
            has a backlog (0: connect and close for every transaction). After that it
            closes and pauses ``YIELD_S`` so a waiting reader gets the file; it also
            closes whenever it is idle (:meth:`idle`).

    Example:
        >>> shard = Shard(tmp_home, "main")  # doctest: +SKIP
        >>> shard.stored_offsets()           # doctest: +SKIP
        {('ledger.models', 0): 12}
    """

    def __init__(
        self,
        home: Path,
        name: str = "main",
        *,
        lock_timeout: float | None = 60.0,
        hold: float = 0.0,
    ) -> None:
        if not _SHARD_NAME.fullmatch(name):
            raise StoreError(f"bad shard name {name!r}: use letters, digits, '-' or '_'")
        self.home = Path(home)
        self.name = name
        self.path = shard_dir(self.home) / f"{name}.duckdb"
        self.lock_timeout = lock_timeout
        self.hold = hold
        self._owner: IO[bytes] | None = None
        self._ready = False
        self._held: duckdb.DuckDBPyConnection | None = None
        # A writer thread and the consumer thread share the held connection, one at a time.
        self._lock = threading.RLock()
        self._held_since = 0.0
        self._resume_at = 0.0

    # -- ownership ----------------------------------------------------------------

    def claim(self) -> None:
        """Become this shard's one writer process (an advisory lock held until :meth:`release`).

        Raises ShardBusy when another live process writes this shard: give it another
        shard name.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path.with_suffix(".writer"), "ab")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ShardBusy(
                f"shard {self.name} is being written by another materialiser process",
                shard=self.name,
                hint="give this materialiser a shard name of its own",
                cli_hint="give this one its own --shard name",
            ) from None
        self._owner = handle

    def release(self) -> None:
        """Close the connection and give up the writer claim (the OS drops it on exit too)."""
        self.idle()
        if self._owner is not None:
            self._owner.close()
            self._owner = None

    # -- connections --------------------------------------------------------------

    def _create(self) -> None:
        """Create the shard file with its tables under a temporary name, then link it into
        place: a reader (the views, another materialiser peeking at its offsets) never
        opens a half-written file, which DuckDB refuses as "not a valid DuckDB database"."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        draft = self.path.with_name(f"{self.path.name}.new-{os.getpid()}-{threading.get_ident()}")
        try:
            con = _open_db(str(draft))
            try:
                _run(con, DDL)
            finally:
                con.close()  # checkpoints: the draft is complete, without a WAL
            try:
                os.link(draft, self.path)  # unlike rename, never replaces an existing shard
            except FileExistsError:
                pass  # created meanwhile by another process: that one is the shard
        except duckdb.Error as exc:
            raise _store_error(exc, f"creating shard {self.name}") from exc
        finally:
            draft.unlink(missing_ok=True)
            draft.with_name(draft.name + ".wal").unlink(missing_ok=True)

    def _open(self) -> duckdb.DuckDBPyConnection:
        """A read-write connection; retried while another process holds the file."""
        if not self.path.exists():
            self._create()
        pause = self._resume_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # the window a waiting reader needs after a long hold
        deadline = None if self.lock_timeout is None else time.monotonic() + self.lock_timeout
        delay = 0.002
        while True:
            try:
                con = _attach_writer(self.path)
                WRITING_HERE[self.path.resolve()] = con
                break
            except duckdb.Error as exc:
                err = _store_error(exc, f"opening shard {self.name}")
                if not err.transient or (deadline is not None and time.monotonic() > deadline):
                    raise err from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        if not self._ready:
            try:
                _run(con, DDL)
            except duckdb.Error as exc:
                self._close(con)
                raise _store_error(exc, f"creating the tables of shard {self.name}") from exc
            self._ready = True
        return con

    @contextmanager
    def _connect(self, what: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """The held connection, or one for this unit of work only."""
        with self._lock:
            con = self._held if self._held is not None else self._open()
            try:
                yield con
            except duckdb.Error as exc:
                self.idle()
                if con is not self._held:
                    self._close(con)
                raise _store_error(exc, f"{what} in shard {self.name}") from exc
            if con is not self._held:
                if self.hold > 0:
                    self._held, self._held_since = con, time.monotonic()
                else:
                    self._close(con)
            elif time.monotonic() - self._held_since > self.hold:
                self.idle()
                self._resume_at = time.monotonic() + YIELD_S

    def idle(self) -> None:
        """Close a held connection, so readers can open the file."""
        with self._lock:
            if self._held is not None:
                held, self._held = self._held, None
                try:
                    self._close(held)
                except duckdb.Error:
                    pass  # closing after a failed transaction: the file holds what was committed

    def _close(self, con: duckdb.DuckDBPyConnection) -> None:
        WRITING_HERE.pop(self.path.resolve(), None)
        con.close()

    # -- writing ------------------------------------------------------------------

    def write(self, batch: Batch) -> dict[str, int]:
        """Write ``batch`` in one transaction; returns rows inserted per table.

        Steps (each in the same transaction, so a crash leaves all or nothing):
        1. insert each table's rows with one statement, skipping events whose id the
           table holds (retries, replays);
        2. mark the re-driven dead letters;
        3. upsert the partitions' next offsets and log marks, so a restart resumes right
           after, in the same log.

        Example:
            >>> shard.write(Batch({"deletions": rows}, {("t.embeddings", 0): 42}))  # doctest: +SKIP
            {'deletions': 1}
        """
        inserted, _ = self._write(batch, check_ids=False)
        return inserted

    def write_checked(self, batch: Batch) -> tuple[dict[str, int], list[IdConflict]]:
        """Like :meth:`write`, unless a row reuses the event id of a stored event with
        other content: then nothing is written and those rows are returned, for the
        caller to dead-letter before it writes again. A true duplicate (same content)
        is still skipped in silence.

        Only a table where the insert skipped rows is compared (a join with
        the stored rows), so a batch of new events costs nothing more.

        Example:
            >>> inserted, conflicts = shard.write_checked(batch)  # doctest: +SKIP
        """
        return self._write(batch, check_ids=True)

    def _write(self, batch: Batch, *, check_ids: bool) -> tuple[dict[str, int], list[IdConflict]]:
        with self._connect("writing a batch") as con:
            return self._transaction(con, batch, check_ids=check_ids)

    def _transaction(
        self, con: duckdb.DuckDBPyConnection, batch: Batch, *, check_ids: bool
    ) -> tuple[dict[str, int], list[IdConflict]]:
        inserted: dict[str, int] = {}
        conflicts: list[IdConflict] = []
        _run(con, "BEGIN TRANSACTION")
        try:
            for name, table in batch.tables.items():
                if table.num_rows == 0:
                    continue
                con.register("_batch", table)
                rows = _run(con, _INSERT.get(name, _INSERT_EVENTS.format(name)))
                inserted[name] = int(rows[0][0]) if rows else 0
                if check_ids and name in EVENT_TABLES and inserted[name] < table.num_rows:
                    content = [c for c in table.column_names if c not in SOURCE_COLUMNS]
                    conflicts += find_conflicts(con, name, content)
                con.unregister("_batch")
            if conflicts:
                _run(con, "ROLLBACK")
                return {}, conflicts
            if batch.redriven:
                now = datetime.now(UTC)
                for t, p, o in batch.redriven:  # a handful of rows, off the hot path
                    _run(
                        con,
                        "UPDATE dead_letters SET redriven_at = ? WHERE topic = ? "
                        'AND "partition" = ? AND "offset" = ? AND redriven_at IS NULL',
                        [now, t, p, o],
                    )
            if batch.offsets:
                upsert_offsets(con, dict(batch.offsets))
            if batch.marks:
                upsert_marks(con, dict(batch.marks))
            _run(con, "COMMIT")
        except BaseException:
            _run(con, "ROLLBACK")
            raise
        return inserted, conflicts

    # -- reading (the writer's own state) -------------------------------------------

    def stored_offsets(self) -> dict[Partition, int]:
        """The next offset to read of every partition this shard has ever held."""
        with self._connect("reading offsets") as con:
            rows = con.execute('SELECT topic, "partition", next_offset FROM offsets').fetchall()
        return {(str(t), int(p)): int(o) for t, p, o in rows}

    def stored_positions(self) -> dict[Partition, Position]:
        """:meth:`stored_offsets` with the log mark of each partition, where it has one."""
        with self._connect("reading offsets") as con:
            return read_positions(con, self.name)

    def model_versions(self) -> list[ModelVersion]:
        """The registrations this shard holds (seeds the materialiser's registry)."""
        with self._connect("reading model versions") as con:
            rows = con.execute(
                "SELECT model, model_version, kind, dimension, metric, labels FROM model_versions "
                'ORDER BY "partition", "offset"'  # log order: the first registration wins
            ).fetchall()
        return [
            ModelVersion(m, v, k, d, metric, tuple(labels or ()))
            for m, v, k, d, metric, labels in rows
        ]

    def dead_letters(self, *, pending_only: bool = True) -> list[DeadLetter]:
        """This shard's dead letters in log order (only those not yet re-driven by default)."""
        with self._connect("reading dead letters") as con:
            rows = con.execute(
                'SELECT topic, "partition", "offset", raw, reason, error, received_at, redriven_at '
                "FROM dead_letters WHERE redriven_at IS NULL OR NOT ? "
                'ORDER BY topic, "partition", "offset", received_at',
                [pending_only],
            ).fetchall()
        return [
            DeadLetter(
                str(t),
                int(p),
                int(o),
                bytes(raw),
                str(reason),
                str(error),
                received,
                redriven,
                self.name,
            )
            for t, p, o, raw, reason, error, received, redriven in rows
        ]
