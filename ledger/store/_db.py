"""The one place that runs DuckDB and translates its errors: ``duckdb.Error`` becomes
:class:`StoreError` (``transient=True`` for a lock held by another process); the shard
writer's connection and its settings; and the query
API the rest of the ledger uses on a views connection (:func:`arrow`, :func:`rows`,
:func:`registered`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ledger.errors import StoreError


def _run(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None
) -> list[tuple[Any, ...]]:
    # Fetch every result: DuckDB refuses new work on a connection with a pending one.
    result = con.execute(sql, params) if params is not None else con.execute(sql)
    return result.fetchall()


def _open_db(database: str) -> duckdb.DuckDBPyConnection:
    # Every connection the ledger opens. DuckDB draws a progress bar on stderr for queries
    # over ~2 s: from a library it lands in the caller's terminal, logs and pipes. It is a
    # setting of the connection (DuckDB refuses it as a connect-time global option).
    con = duckdb.connect(database)
    try:
        _run(con, "SET enable_progress_bar = false")
    except BaseException:
        con.close()
        raise
    return con


#: WAL size at which the writer checkpoints (DuckDB's 16 MiB rewrote the partly filled last
#: row group every 2-3 batches); closing still checkpoints. 22k -> 30k rows/s, measured.
CHECKPOINT_THRESHOLD = "128MB"

#: Rows per row group the writer's connection makes (DuckDB's default: 122,880). Every
#: checkpoint (each close of the connection) rewrites the partly filled last row group: at
#: 384-d that was up to 180 MB per close and grew with the shard; a small group bounds it
#: (2x the rows/s, measured; BENCHMARKS.md). The size is a setting of the attach, not kept
#: in the file, so every writer connection attaches this way; readers need nothing.
ROW_GROUP_SIZE = 16_384

#: Float compression the writer does not try: at a checkpoint DuckDB analyses every float
#: segment for these, and embedding vectors barely compress (2% smaller file, measured)
#: while the analysis was half the checkpoint's time.
_NO_FLOAT_COMPRESSION = "alp,alprd,chimp,patas"


#: DuckDB's memory on a writer's connection. Uncapped (80% of RAM), its buffer pool kept
#: the blocks every transaction wrote: a catch-up of 1.1M 384-d events peaked near 3 GiB.
#: Written blocks are in the file, so a cap only evicts them; it must hold a transaction in
#: flight (50,000 rows, ~80 MB at 384-d) with room to spare.
WRITER_MEMORY_LIMIT = "512MB"


def _attach_writer(path: Path) -> duckdb.DuckDBPyConnection:
    # The shard file attached read-write to an in-memory database of its own (closing the
    # connection detaches it, with a checkpoint), with the writer's settings.
    con = _open_db(":memory:")
    try:
        _run(con, f"ATTACH '{_sql_str(str(path))}' AS shard (ROW_GROUP_SIZE {ROW_GROUP_SIZE})")
        _run(con, "USE shard")
        _run(con, f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        _run(con, f"SET disabled_compression_methods = '{_NO_FLOAT_COMPRESSION}'")
        _run(con, f"SET memory_limit = '{WRITER_MEMORY_LIMIT}'")
    except BaseException:
        con.close()
        raise
    return con


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


#: DuckDB's memory while :func:`record_batches` streams: its buffer pool keeps the blocks a
#: scan read (1.1x the vectors of a full scan, measured) until memory_limit, 80% of RAM by
#: default; capped, it evicts them as it goes (they are read-only blocks of the shard files).
STREAM_MEMORY_LIMIT = "256MB"


def record_batches(
    con: Connection, sql: str, *, batch_rows: int = 16_384, **params: Any
) -> Iterator[pa.RecordBatch]:
    """Run ``sql`` with named ``$params`` on ``con``; its result in record batches of at
    most ``batch_rows`` rows, as DuckDB produces them, for a result too big to hold.

    Meant for queries without a blocking operator (ORDER BY, a window, a big join), which
    DuckDB streams: while the batches are read, its memory is capped at
    ``STREAM_MEMORY_LIMIT`` so that the scan does not keep what it read; at the end the
    cache is released (:func:`release_cache`). Read
    the batches to the end before the next query on ``con``. DuckDB errors become
    :class:`StoreError`.

    Example:
        >>> [b.num_rows for b in record_batches(duckdb.connect(), "FROM range(5)", batch_rows=2)]
        [2, 2, 1]
    """
    with memory_capped(con, STREAM_MEMORY_LIMIT):
        try:
            yield from con.sql(sql, params=params).to_arrow_reader(batch_rows)
        except duckdb.Error as exc:
            raise _store_error(exc, "query") from exc


@contextmanager
def memory_capped(con: Connection, limit: str) -> Iterator[None]:
    """While the block runs, DuckDB on ``con`` uses at most ``limit`` (e.g. ``"1GB"``): it
    evicts the shard blocks it cached instead of keeping every block a scan read, and
    spills what it must keep to its temp_directory. At the end the cache is released
    (:func:`release_cache`) and memory_limit is DuckDB's default again.

    Example:
        >>> with memory_capped(duckdb.connect(), "256MB"):
        ...     pass
    """
    try:
        _run(con, f"SET memory_limit = '{_sql_str(limit)}'")
    except duckdb.Error as exc:
        raise _store_error(exc, "capping memory") from exc
    try:
        yield
    finally:
        release_cache(con)


def release_cache(con: Connection) -> None:
    """Let go of the shard blocks DuckDB cached on ``con`` (they are read again if needed):
    after a query that scanned the wide vector column, so that its ~1x of the vectors is
    not held through what follows. Resets memory_limit to DuckDB's default.

    Example:
        >>> release_cache(duckdb.connect())
    """
    # Lowering the limit evicts every unpinned block at once (and DuckDB's allocator
    # returns the memory); the default then comes back.
    try:
        # Refused when pinned memory cannot be evicted (a temporary table): then only the
        # cache stays, which is no error.
        with suppress(duckdb.Error):
            _run(con, "SET memory_limit = '1MB'")
        _run(con, "RESET memory_limit")
    except duckdb.Error as exc:
        raise _store_error(exc, "releasing the cache") from exc


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


def vector_matrix(
    table: pa.Table | pa.RecordBatch, dimension: int | None = None
) -> npt.NDArray[np.float32]:
    """The ``vector`` column (DuckDB ``FLOAT[]``) of ``table`` (or of one record batch) as
    an ``(n, d)`` float32 matrix, in one pass over the Arrow buffers. ``dimension`` is
    needed for an empty table.

    Example:
        >>> vector_matrix(pa.table({"vector": [[1.0, 2.0], [3.0, 4.0]]})).tolist()
        [[1.0, 2.0], [3.0, 4.0]]
    """
    found = table.column("vector")
    column = found.combine_chunks() if isinstance(found, pa.ChunkedArray) else found
    values: npt.NDArray[np.float32] = column.flatten().to_numpy(zero_copy_only=False)
    return values.astype("<f4", copy=False).reshape(
        table.num_rows, -1 if dimension is None else dimension
    )
