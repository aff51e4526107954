"""The read side: the views over every shard (read-only), and the user's own files (the
demo's record) with the read-only SQL of ``ledger sql``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ledger.errors import StoreError
from ledger.store._db import _open_db, _run, _sql_str, _store_error
from ledger.store.shards import DDL, shard_paths

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
    from ledger.store.views import view_statements  # the SQL text lives in its own module

    con = _open_db(":memory:")
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
        con = _open_db(str(path))
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
