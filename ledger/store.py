"""All DuckDB access: shard files (one writer process each) and the views that union them.

A *shard* is ``<home>/shards/<name>.duckdb``, written by exactly one materialiser
process. Rows and the offsets they came from are written in ONE transaction
(DESIGN decision 3), so a crash at any point loses nothing and duplicates nothing.

DuckDB lets one process open a file read-write, and then nobody else may open it,
not even read-only. So a writer holds its connection only while it has a backlog, at
most ``hold`` seconds at a time, then closes it and pauses briefly; it closes it as soon
as it is idle. (Connecting for every transaction costs ~10 ms plus a checkpoint on
close, 50-130 ms for 2,000 384-d rows: 13k rows/s against 21k rows/s held, measured.)
It retries while a reader holds the file; readers (:func:`open_views`) attach the
shards read-only, retry while a writer holds one, and should close promptly.

This module alone catches ``duckdb.Error``; it becomes :class:`StoreError`
(``transient=True`` for a lock held by another process).
"""

from __future__ import annotations

import fcntl
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import duckdb
import pyarrow as pa

from ledger.contract import ModelVersion
from ledger.errors import ShardBusy, StoreError

#: Event tables, in the order a batch writes them (registrations first).
EVENT_TABLES = ("model_versions", "deployments", "embeddings", "deletions", "decisions")

_ENVELOPE = """
    event_id VARCHAR PRIMARY KEY,
    event_time TIMESTAMPTZ,
    producer VARCHAR,
    model VARCHAR,
    model_version VARCHAR,"""
_SOURCE = """
    topic VARCHAR,
    "partition" INTEGER,
    "offset" BIGINT"""

DDL = f"""
CREATE TABLE IF NOT EXISTS offsets (
    topic VARCHAR, "partition" INTEGER, next_offset BIGINT, PRIMARY KEY (topic, "partition"));
CREATE TABLE IF NOT EXISTS model_versions ({_ENVELOPE}
    kind VARCHAR, dimension INTEGER, metric VARCHAR, artifact_uri VARCHAR,
    artifact_sha256 VARCHAR, labels VARCHAR[],{_SOURCE});
CREATE TABLE IF NOT EXISTS embeddings ({_ENVELOPE}
    entity_id VARCHAR, content_sha256 VARCHAR, dimension INTEGER, vector FLOAT[],{_SOURCE});
CREATE TABLE IF NOT EXISTS deletions ({_ENVELOPE}
    entity_id VARCHAR,{_SOURCE});
CREATE TABLE IF NOT EXISTS decisions ({_ENVELOPE}
    subject_id VARCHAR, label VARCHAR, score DOUBLE, input_sha256 VARCHAR,{_SOURCE});
CREATE TABLE IF NOT EXISTS deployments ({_ENVELOPE}
    from_version VARCHAR, reason VARCHAR, actor VARCHAR, summary MAP(VARCHAR, VARCHAR),{_SOURCE});
-- Shadow mode (schema 2 of EmbeddingWritten / DecisionRecorded): last, so shards created
-- before it gain the column in the same place.
ALTER TABLE embeddings ADD COLUMN IF NOT EXISTS shadow BOOLEAN DEFAULT false;
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS shadow BOOLEAN DEFAULT false;
CREATE TABLE IF NOT EXISTS dead_letters (
    topic VARCHAR, "partition" INTEGER, "offset" BIGINT, raw BLOB, reason VARCHAR,
    error VARCHAR, received_at TIMESTAMPTZ, redriven_at TIMESTAMPTZ);
"""

#: Arrow types of the event tables' columns, in table order (a batch is built to match).
_ENV_TYPES: list[tuple[str, pa.DataType]] = [
    ("event_id", pa.string()),
    ("event_time", pa.timestamp("us", tz="UTC")),
    ("producer", pa.string()),
    ("model", pa.string()),
    ("model_version", pa.string()),
]
_SRC_TYPES: list[tuple[str, pa.DataType]] = [
    ("topic", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
]
ARROW_SCHEMAS: dict[str, pa.Schema] = {
    "model_versions": pa.schema(
        _ENV_TYPES
        + [
            ("kind", pa.string()),
            ("dimension", pa.int32()),
            ("metric", pa.string()),
            ("artifact_uri", pa.string()),
            ("artifact_sha256", pa.string()),
            ("labels", pa.list_(pa.string())),
        ]
        + _SRC_TYPES
    ),
    "embeddings": pa.schema(
        _ENV_TYPES
        + [
            ("entity_id", pa.string()),
            ("content_sha256", pa.string()),
            ("dimension", pa.int32()),
            ("vector", pa.list_(pa.float32())),
        ]
        + _SRC_TYPES
        + [("shadow", pa.bool_())]
    ),
    "deletions": pa.schema(_ENV_TYPES + [("entity_id", pa.string())] + _SRC_TYPES),
    "decisions": pa.schema(
        _ENV_TYPES
        + [
            ("subject_id", pa.string()),
            ("label", pa.string()),
            ("score", pa.float64()),
            ("input_sha256", pa.string()),
        ]
        + _SRC_TYPES
        + [("shadow", pa.bool_())]
    ),
    "deployments": pa.schema(
        _ENV_TYPES
        + [
            ("from_version", pa.string()),
            ("reason", pa.string()),
            ("actor", pa.string()),
            ("summary", pa.map_(pa.string(), pa.string())),
        ]
        + _SRC_TYPES
    ),
    "dead_letters": pa.schema(
        [
            ("topic", pa.string()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("raw", pa.binary()),
            ("reason", pa.string()),
            ("error", pa.string()),
            ("received_at", pa.timestamp("us", tz="UTC")),
            ("redriven_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
}

Partition = tuple[str, int]

# Events are keyed by event id: a stored event is skipped (producer retries, replays).
_INSERT_EVENTS = "INSERT OR IGNORE INTO {} SELECT * FROM _batch"
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
    mark as re-driven in the same transaction.
    """

    tables: Mapping[str, pa.Table]
    offsets: Mapping[Partition, int] = field(default_factory=dict)
    redriven: Sequence[tuple[str, int, int]] = ()


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


def _run(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None
) -> list[tuple[Any, ...]]:
    # Fetch every result: DuckDB refuses new work on a connection with a pending one.
    result = con.execute(sql, params) if params is not None else con.execute(sql)
    return result.fetchall()


def _is_lock_error(exc: duckdb.Error) -> bool:
    # Another process holds the file (IOException "Could not set lock"), or this process
    # has it attached elsewhere (ResourceInUseException "already attached"): both pass.
    text = str(exc).lower()
    if isinstance(exc, duckdb.IOException):
        return "lock" in text or "conflicting" in text
    return "already attached" in text or "file handle conflict" in text


def _store_error(exc: duckdb.Error, what: str) -> StoreError:
    if _is_lock_error(exc):
        return StoreError(f"{what}: the file is in use by another process ({exc})", transient=True)
    if isinstance(exc, duckdb.TransactionException):
        return StoreError(f"{what}: transaction conflict ({exc})", transient=True)
    return StoreError(f"{what}: {type(exc).__name__}: {exc}")


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

        Raises StoreError when another live process writes this shard: give it another
        ``--shard`` name.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path.with_suffix(".writer"), "ab")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ShardBusy(
                f"shard {self.name} is being written by another materialiser process; "
                "give this one its own --shard name",
                shard=self.name,
            ) from None
        self._owner = handle

    def release(self) -> None:
        """Close the connection and give up the writer claim (the OS drops it on exit too)."""
        self.idle()
        if self._owner is not None:
            self._owner.close()
            self._owner = None

    # -- connections --------------------------------------------------------------

    def _open(self) -> duckdb.DuckDBPyConnection:
        """A read-write connection; retried while another process holds the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pause = self._resume_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # the window a waiting reader needs after a long hold
        deadline = None if self.lock_timeout is None else time.monotonic() + self.lock_timeout
        delay = 0.002
        while True:
            try:
                con = duckdb.connect(str(self.path))
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
                con.close()
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
                    con.close()
                raise _store_error(exc, f"{what} in shard {self.name}") from exc
            if con is not self._held:
                if self.hold > 0:
                    self._held, self._held_since = con, time.monotonic()
                else:
                    con.close()
            elif time.monotonic() - self._held_since > self.hold:
                self.idle()
                self._resume_at = time.monotonic() + YIELD_S

    def idle(self) -> None:
        """Close a held connection, so readers can open the file."""
        with self._lock:
            if self._held is not None:
                held, self._held = self._held, None
                try:
                    held.close()
                except duckdb.Error:
                    pass  # closing after a failed transaction: the file holds what was committed

    # -- writing ------------------------------------------------------------------

    def write(self, batch: Batch) -> dict[str, int]:
        """Write ``batch`` in one transaction; returns rows inserted per table.

        Steps (each in the same transaction, so a crash leaves all or nothing):
        1. insert each table's rows with one statement; ``INSERT OR IGNORE`` on the
           event-id key skips events already stored (producer retries, replays);
        2. mark the re-driven dead letters;
        3. upsert the partitions' next offsets, so a restart resumes right after.

        Example:
            >>> shard.write(Batch({"deletions": rows}, {("t.embeddings", 0): 42}))  # doctest: +SKIP
            {'deletions': 1}
        """
        inserted: dict[str, int] = {}
        with self._connect("writing a batch") as con:
            _run(con, "BEGIN TRANSACTION")
            try:
                for name, table in batch.tables.items():
                    if table.num_rows == 0:
                        continue
                    con.register("_batch", table)
                    rows = _run(con, _INSERT.get(name, _INSERT_EVENTS.format(name)))
                    con.unregister("_batch")
                    inserted[name] = int(rows[0][0]) if rows else 0
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
                    con.register(
                        "_offsets",
                        pa.table(
                            {
                                "topic": [t for t, _ in batch.offsets],
                                "partition": pa.array([p for _, p in batch.offsets], pa.int32()),
                                "next_offset": pa.array(list(batch.offsets.values()), pa.int64()),
                            }
                        ),
                    )
                    _run(con, "INSERT OR REPLACE INTO offsets SELECT * FROM _offsets")
                    con.unregister("_offsets")
                _run(con, "COMMIT")
            except BaseException:
                _run(con, "ROLLBACK")
                raise
        return inserted

    # -- reading (the writer's own state) -------------------------------------------

    def stored_offsets(self) -> dict[Partition, int]:
        """The next offset to read of every partition this shard has ever held."""
        with self._connect("reading offsets") as con:
            rows = con.execute('SELECT topic, "partition", next_offset FROM offsets').fetchall()
        return {(str(t), int(p)): int(o) for t, p, o in rows}

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


def empty_table(name: str) -> pa.Table:
    """An empty Arrow table with the columns of table ``name``."""
    return ARROW_SCHEMAS[name].empty_table()


# -- the read side -------------------------------------------------------------------

#: The table :func:`open_views` creates for ``at=``: the position the views stop at.
POSITION_TABLE = "log_position"


def open_views(
    home: Path, *, timeout: float = 30.0, at: Mapping[str, int] | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every shard of ``home`` attached read-only.

    The views carry the shard tables' names (``embeddings``, ``deletions``, ``decisions``,
    ``deployments``, ``model_versions``, ``dead_letters``, ``offsets``) and show every
    event once across shards (deduped by event id); the macros and views of
    ``docs/sql.md`` come with them. While this connection is open the materialisers
    cannot write these shards (they wait): close it when done.

    With ``at`` (``{"topic:partition": next offset}``, e.g. an artifact manifest's
    ``log_offsets``) every view and macro shows the log as of that position: events at
    or past it, and partitions it does not name, are left out (table ``log_position``).

    Example:
        >>> con = open_views(Path(".ledger"))                      # doctest: +SKIP
        >>> con.execute("SELECT count(*) FROM embeddings").fetchall()  # doctest: +SKIP
        [(4000,)]
        >>> manifest = load_manifest(artifact)                     # doctest: +SKIP
        >>> as_built = open_views(Path(".ledger"), at=manifest.log_offsets)  # doctest: +SKIP
    """
    from ledger.views import view_statements  # the SQL text lives in its own module

    con = duckdb.connect(":memory:")
    try:
        sources: list[str] = []
        for i, path in enumerate(shard_paths(home)):
            _attach_read_only(con, path, f"shard_{i}", timeout=timeout)
            sources.append(f"shard_{i}")
        if not sources:
            # No shard yet: the views still exist, over empty tables of the same shape.
            _run(con, "CREATE SCHEMA empty; SET schema = 'empty'")
            _run(con, DDL)
            _run(con, "SET schema = 'main'")
            sources.append("empty")
        position = None
        if at is not None:
            position = POSITION_TABLE
            _run(
                con,
                f'CREATE TABLE {position} (topic VARCHAR, "partition" INTEGER, next_offset BIGINT)',
            )
            keys = [str(k).rsplit(":", 1) for k in at]
            con.register(
                "_position",
                pa.table(
                    {
                        "topic": pa.array([k[0] for k in keys], pa.string()),
                        "partition": pa.array([int(k[1]) for k in keys], pa.int32()),
                        "next_offset": pa.array([int(v) for v in at.values()], pa.int64()),
                    }
                ),
            )
            _run(con, f"INSERT INTO {position} SELECT * FROM _position")  # noqa: S608 - fixed
            con.unregister("_position")
        for statement in view_statements(sources, position=position):
            _run(con, statement)
    except duckdb.Error as exc:
        con.close()
        raise _store_error(exc, f"opening the views of {home}") from exc
    except BaseException:
        con.close()
        raise
    return con


def _attach_read_only(
    con: duckdb.DuckDBPyConnection, path: Path, alias: str, *, timeout: float
) -> None:
    # A writer holds the file for one transaction at a time: retry until it lets go.
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            _run(con, f"ATTACH '{_sql_str(str(path))}' AS {alias} (READ_ONLY)")
            return
        except duckdb.Error as exc:
            err = _store_error(exc, f"attaching shard {path.name}")
            if not err.transient or time.monotonic() > deadline:
                raise err from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.02)


def _sql_str(text: str) -> str:
    return text.replace("'", "''")


#: The type of a DuckDB connection (e.g. one from :func:`open_views`), for type hints
#: outside this module.
Connection = duckdb.DuckDBPyConnection


def arrow(con: Connection, sql: str, **params: Any) -> pa.Table:
    """Run ``sql`` with named ``$params`` on ``con``; the whole result as an Arrow table.

    DuckDB errors become :class:`StoreError`.

    Example:
        >>> arrow(duckdb.connect(), "SELECT $n * 2 AS twice", n=21).to_pylist()
        [{'twice': 42}]
    """
    try:
        # A relation straight to Arrow: no DB-API result left behind, no extra copy.
        return con.sql(sql, params=params).to_arrow_table()
    except duckdb.Error as exc:
        raise _store_error(exc, "query") from exc


def rows(con: Connection, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run ``sql`` with named ``$params`` on ``con``; every row, fetched.

    DuckDB errors become :class:`StoreError`.

    Example:
        >>> rows(duckdb.connect(), "SELECT $n * 2, 'x'", n=21)
        [(42, 'x')]
    """
    try:
        return con.execute(sql, params).fetchall()
    except duckdb.Error as exc:
        raise _store_error(exc, "query") from exc


@contextmanager
def registered(con: Connection, name: str, table: pa.Table) -> Iterator[None]:
    """Show ``table`` to the queries on ``con`` as view ``name`` while the block runs.

    Example:
        >>> con = duckdb.connect()
        >>> with registered(con, "_t", pa.table({"a": [1, 2]})):
        ...     rows(con, "SELECT sum(a) FROM _t")
        [(3,)]
    """
    try:
        con.register(name, table)
    except duckdb.Error as exc:
        raise _store_error(exc, f"registering {name}") from exc
    try:
        yield
    finally:
        try:
            con.unregister(name)
        except duckdb.Error as exc:
            raise _store_error(exc, f"unregistering {name}") from exc


# -- files of the user's own (the demo's record) and the read-only SQL of ``ledger sql`` ----

#: Statement types ``ledger sql`` runs; anything else (INSERT, CREATE, COPY, ATTACH, SET,
#: ...) is refused before it runs. The shards are attached read-only besides.
READ_ONLY_STATEMENTS = frozenset({"SELECT", "EXPLAIN"})


@dataclass(frozen=True, slots=True)
class QueryResult:
    """A fetched result: column names, DuckDB type names and rows."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def append_rows(path: Path, table_name: str, rows: pa.Table) -> None:
    """Append ``rows`` to ``table_name`` in the DuckDB file ``path`` (created with the
    table's columns on first use), in one transaction.

    For small records of the tool's own (e.g. the demo's ``demo_runs``), never for shards.

    Example:
        >>> append_rows(Path(".ledger/demo.duckdb"), "demo_runs", rows)  # doctest: +SKIP
    """
    if not table_name.isidentifier():
        raise StoreError(f"bad table name {table_name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path))
    except duckdb.Error as exc:
        raise _store_error(exc, f"opening {path.name}") from exc
    try:
        con.register("_rows", rows)
        _run(con, "BEGIN TRANSACTION")
        # table_name is checked to be an identifier above
        _run(con, f"CREATE TABLE IF NOT EXISTS {table_name} AS SELECT * FROM _rows LIMIT 0")  # noqa: S608
        _run(con, f"INSERT INTO {table_name} BY NAME SELECT * FROM _rows")  # noqa: S608
        _run(con, "COMMIT")
    except duckdb.Error as exc:
        raise _store_error(exc, f"writing {table_name} in {path.name}") from exc
    finally:
        con.close()


def attach_read_only(con: duckdb.DuckDBPyConnection, path: Path, alias: str) -> None:
    """Attach another DuckDB file to a views connection, read-only, as ``alias``.

    Example:
        >>> attach_read_only(con, home / "demo.duckdb", "demo")  # doctest: +SKIP
    """
    if not alias.isidentifier():
        raise StoreError(f"bad alias {alias!r}")
    _attach_read_only(con, path, alias, timeout=5.0)


def read_only_query(con: duckdb.DuckDBPyConnection, sql: str) -> QueryResult:
    """Run one read-only statement (``SELECT`` / ``EXPLAIN``) and fetch its result.

    Anything else is refused with :class:`StoreError` before it runs, judged by DuckDB's
    own parser (statement type), not by matching the text.

    Example:
        >>> con = duckdb.connect()
        >>> read_only_query(con, "SELECT 42 AS answer").rows
        [(42,)]
        >>> read_only_query(con, "CREATE TABLE t (a INT)")
        Traceback (most recent call last):
        ...
        ledger.errors.StoreError: read-only: CREATE statements are refused (only SELECT, EXPLAIN)
    """
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise _store_error(exc, "parsing the query") from exc
    if len(statements) != 1:
        raise StoreError(f"give exactly one SQL statement (got {len(statements)})")
    kind = statements[0].type.name
    if kind not in READ_ONLY_STATEMENTS:
        raise StoreError(
            f"read-only: {kind} statements are refused (only "
            f"{', '.join(sorted(READ_ONLY_STATEMENTS, reverse=True))})"
        )
    try:
        result = con.sql(sql)
        if result is None:
            return QueryResult((), (), [])
        return QueryResult(
            tuple(result.columns), tuple(str(t) for t in result.types), result.fetchall()
        )
    except duckdb.Error as exc:
        raise _store_error(exc, "query") from exc
