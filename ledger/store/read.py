"""The read side: the views over every shard (read-only), and the user's own files (the
demo's record). The SQL a person types runs in :mod:`ledger.store.user_sql`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from ledger.errors import StoreError
from ledger.store._db import _open_db, _run, _sql_str, _store_error
from ledger.store.shards import shard_paths
from ledger.store.tables import ARROW_SCHEMAS, DDL

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
    return views_over(shard_paths(home), timeout=timeout, at=at, where=str(home))


def views_over(
    paths: Sequence[Path],
    *,
    timeout: float = 30.0,
    at: Mapping[str, int] | None = None,
    where: str = "the shards",
) -> duckdb.DuckDBPyConnection:
    """:func:`open_views` over the shard files ``paths`` (e.g. copies of a home's shards)."""
    from ledger.store.views import view_statements  # the SQL text lives in its own module

    con = _open_db(":memory:")
    try:
        sources: list[str] = []
        for i, path in enumerate(paths):
            _attach_read_only(con, path, f"shard_{i}", timeout=timeout)
            _check_shard_tables(con, path, f"shard_{i}")
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
        raise _store_error(exc, f"opening the views of {where}") from exc
    except BaseException:
        con.close()
        raise
    return con


#: The tables every shard has (the views read each of them).
_SHARD_TABLES = frozenset({*ARROW_SCHEMAS, "offsets"})


def _check_shard_tables(con: duckdb.DuckDBPyConnection, path: Path, alias: str) -> None:
    # A DuckDB file that is not a shard (planted, or from another tool) would fail every
    # view with "table does not exist": name the file instead.
    found = {
        str(name)
        for (name,) in _run(
            con, "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [alias]
        )
    }
    missing = sorted(_SHARD_TABLES - found)
    if missing:
        raise StoreError(
            f"shard {path.name} is not a ledger shard (no table {', '.join(missing)}): "
            + _recovery(path, shard=True)
        )


def _recovery(path: Path, *, shard: bool) -> str:
    # One line an operator can act on: the views read every *.duckdb file of the folder.
    if not shard:
        return f"move {path} aside"
    return (
        f"move {path} out of {path.parent}; `ledger consume --no-group --shard {path.stem} "
        "--until-caught-up` rebuilds a shard from the log"
    )


def _attach_read_only(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    alias: str,
    *,
    timeout: float,
    shard: bool = True,
) -> None:
    # A writer holds the file for one transaction at a time: retry until it lets go.
    deadline = time.monotonic() + timeout
    delay = 0.005
    what = "shard" if shard else "file"
    while True:
        try:
            _run(con, f"ATTACH '{_sql_str(str(path))}' AS {alias} (READ_ONLY)")
            return
        except duckdb.Error as exc:
            err = _store_error(exc, f"attaching {what} {path.name}")
            if err.transient and time.monotonic() > deadline:
                raise err from exc
            if not err.transient:
                # Not a database, or cut short: every reader would fail the same way.
                reason = str(exc).splitlines()[0]
                raise StoreError(
                    f"{what} {path.name} is not a readable DuckDB database ({reason}): "
                    + _recovery(path, shard=shard)
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.02)


# -- files of the user's own (the demo's record) -------------------------------------


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
    _attach_read_only(con, path, alias, timeout=5.0, shard=False)
