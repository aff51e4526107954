"""The SQL a person types (``ledger sql``): one plain query, on copies of the shards, on a
connection that can neither write nor reach files, within a time limit.

Three layers, each enough on its own for what it guards:

1. the statement: DuckDB's own parser must see exactly one ``SELECT`` (or ``EXPLAIN`` of
   one), so ``COPY``, ``ATTACH``, ``SET``, ``INSTALL``... are refused before anything runs;
2. the engine: the connection reads copies of the files, attached read-only; then
   external access, extension install / auto-load and Python replacement scans are
   switched off and the configuration is locked, so a ``COPY ... TO``, ``read_csv``,
   ``glob``, ``ATTACH`` or ``SET`` fails inside DuckDB even if it got past layer 1;
3. the clock: a timer interrupts a query that runs past its limit.

The copies also keep a long query from holding the shard files: DuckDB lets a writer
in only when no reader has the file, so a reader attached for a whole query made a
materialiser wait as long as the query ran (5 s for a 5 s query, measured). The copies
are taken with every shard held read-only at once, a consistent cut across shards as
:func:`ledger.store.open_views` gives, and the writers wait only for the copying:
0.4 to 1.8 s per GB (a 1.6 GB shard, ext4, a busy 2-core machine; measured).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ledger.errors import StoreError
from ledger.store._db import _run, _sql_str, _store_error
from ledger.store.read import _attach_read_only, _recovery, views_over
from ledger.store.shards import shard_paths

#: Statement types a person's query may have; EXPLAIN only of a SELECT.
READ_ONLY_STATEMENTS = frozenset({"SELECT", "EXPLAIN"})

# Applied after the views are built, in this order: the lock comes last and makes the
# others final (a later SET, RESET or PRAGMA is refused by DuckDB itself).
_LOCKDOWN = (
    # Spills (a sort larger than memory) go to the copies' folder, deleted afterwards:
    # with file access off, DuckDB still allows writes to its temp folder, which by
    # default is .tmp in the working directory.
    "SET temp_directory = '{spill}'",
    # No file or network access, except the files already attached (the copies).
    "SET enable_external_access = false",
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    # `FROM name` must not read a Python object that happens to be in scope.
    "SET python_enable_replacements = false",
    "SET lock_configuration = true",
)

_EXPLAIN_PREFIX = frozenset({"ANALYZE", "ANALYSE", "VERBOSE"})


@dataclass(frozen=True, slots=True)
class QueryResult:
    """A fetched result: column names, DuckDB type names and rows."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]


# -- layer 1: the statement ------------------------------------------------------------


def check_read_only(sql: str) -> None:
    """Refuse ``sql`` unless DuckDB's parser reads it as exactly one plain query.

    Plain means a ``SELECT`` (``FROM t``, ``WITH ...``, ``VALUES``, ``DESCRIBE``,
    ``SUMMARIZE`` parse as one) or an ``EXPLAIN`` / ``EXPLAIN ANALYZE`` of one.

    Example:
        >>> check_read_only("FROM range(3)")
        >>> check_read_only("EXPLAIN ANALYZE COPY (SELECT 1) TO 'x.csv'")
        Traceback (most recent call last):
        ...
        ledger.errors.StoreError: read-only: EXPLAIN of a COPY statement is refused (...)
    """
    kinds = _statement_types(sql)
    if len(kinds) != 1:
        raise StoreError(f"give exactly one SQL statement (got {len(kinds)})")
    if kinds[0] == "SELECT":
        return
    if kinds[0] != "EXPLAIN":
        raise StoreError(f"read-only: {kinds[0]} statements are refused{_ONLY}")
    explained = _explained_types(sql)
    if explained != {"SELECT"}:
        what = "/".join(sorted(explained - {"SELECT"})) or "non-SELECT"
        raise StoreError(f"read-only: EXPLAIN of a {what} statement is refused{_ONLY}")


_ONLY = " (only SELECT, or EXPLAIN of a SELECT)"


def _statement_types(sql: str) -> list[str]:
    # Parsing needs no catalog: a fresh in-memory connection, closed at once.
    with duckdb.connect(":memory:") as parser:
        try:
            statements = parser.extract_statements(sql)
        except duckdb.Error as exc:
            raise _store_error(exc, "parsing the query") from exc
        try:
            return [s.type.name for s in statements]
        except ValueError:
            # A type the Python API has no name for (e.g. UPDATE EXTENSIONS): not a query.
            return ["UNKNOWN" for _ in statements]


def _explained_types(sql: str) -> set[str]:
    """The statement types an EXPLAIN could be explaining.

    The grammar is ``EXPLAIN [ANALYZE] [VERBOSE] [(options)] statement``, and ``(`` may
    also start the statement itself (``EXPLAIN (SELECT 1) UNION ...``), so the explained
    statement starts at one of a few token boundaries. Each suffix there that parses is
    a candidate: the caller accepts only when every candidate is a SELECT.
    """
    every = duckdb.tokenize(sql)
    ends = [start for start, _ in every[1:]] + [len(sql)]
    spans = [(start, end, kind) for (start, kind), end in zip(every, ends, strict=True)]
    tokens = [(start, kind) for start, _, kind in spans if kind != duckdb.token_type.comment]
    words = [
        sql[start:end].strip().upper()
        for start, end, kind in spans
        if kind != duckdb.token_type.comment
    ]
    starts: list[int] = []
    i = 1
    while i < len(tokens) and words[i] in _EXPLAIN_PREFIX:
        i += 1
    if i < len(tokens):
        starts.append(tokens[i][0])
    if i < len(tokens) and words[i].startswith("("):
        depth = 0
        for j in range(i, len(tokens)):
            if tokens[j][1] == duckdb.token_type.operator:
                depth += words[j].count("(") - words[j].count(")")
            if depth <= 0:
                if j + 1 < len(tokens):
                    starts.append(tokens[j + 1][0])
                break
    found: set[str] = set()
    for start in starts:
        try:
            kinds = _statement_types(sql[start:])
        except StoreError:
            continue  # not where the statement starts
        found.update(kinds if len(kinds) == 1 else ["MULTI"])
    return found


# -- layer 2: the engine ---------------------------------------------------------------


@contextmanager
def query_views(
    home: Path, *, files: Mapping[str, Path] | None = None, timeout: float = 30.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The views of ``home`` for a person's SQL: on copies, read-only, file access off.

    ``files`` are more DuckDB files to show, each attached as its alias (e.g.
    ``{"demo": home / "demo.duckdb"}``); a missing one is skipped. The copies live in a
    temporary folder (``TMPDIR``) deleted when the block ends; errors name the original
    files. ``timeout`` bounds the wait for a writer to let go of a shard.

    Steps:
    1. hold every source file read-only at once (writers wait from here), so the copies
       are of committed states and one cut across shards; a file that is not a database
       is named here, with what to do;
    2. copy each file (and its WAL), then let go: writers go on;
    3. build the views over the copies, attach the extra files' copies read-only;
    4. lock the connection down (:data:`_LOCKDOWN`): from here DuckDB refuses writes,
       file and network access, extensions and configuration changes.

    Example:
        >>> with query_views(Path(".ledger")) as con:  # doctest: +SKIP
        ...     read_only_query(con, "SELECT count(*) FROM embeddings", time_limit=60).rows
        [(4000,)]
    """
    extra = {alias: path for alias, path in (files or {}).items() if path.is_file()}
    for alias in extra:
        if not alias.isidentifier():
            raise StoreError(f"bad alias {alias!r}")
    with tempfile.TemporaryDirectory(prefix="ledger-sql-") as tmp:
        folder = Path(tmp)
        shards = {folder / "shards" / p.name: p for p in shard_paths(home)}
        others = {folder / "files" / f"{alias}.duckdb": p for alias, p in extra.items()}
        originals = {**shards, **others}
        try:
            _copy_held(originals, timeout=timeout, shards=set(shards))
            con = views_over(list(shards), timeout=timeout, where=str(home))
            try:
                for copy, alias in zip(others, extra, strict=True):
                    _attach_read_only(con, copy, alias, timeout=timeout, shard=False)
                _lock_down(con, folder / "spill")
                yield con
            finally:
                con.close()
        except StoreError as exc:
            raise _renamed(exc, originals, set(shards)) from exc


def _copy_held(originals: Mapping[Path, Path], *, timeout: float, shards: set[Path]) -> None:
    with duckdb.connect(":memory:") as holder:
        for i, (copy, path) in enumerate(originals.items()):
            _attach_read_only(holder, path, f"src_{i}", timeout=timeout, shard=copy in shards)
        for copy, path in originals.items():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
            wal = path.with_name(path.name + ".wal")
            if wal.is_file():  # a writer that crashed left it: part of the committed state
                shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))


def _lock_down(con: duckdb.DuckDBPyConnection, spill: Path) -> None:
    spill.mkdir()
    try:
        for statement in _LOCKDOWN:
            _run(con, statement.format(spill=_sql_str(str(spill))))
    except duckdb.Error as exc:
        raise _store_error(exc, "locking the query connection down") from exc


def _renamed(exc: StoreError, originals: Mapping[Path, Path], shards: set[Path]) -> StoreError:
    # The copies' paths mean nothing to the reader: name the files they came from. A
    # shard cut short can open and fail only when a query reaches the missing part.
    text = str(exc)
    for copy, path in originals.items():
        if str(copy) in text:
            text = text.replace(str(copy), str(path))
            if copy in shards and "IOException" in text:
                text = f"{text.splitlines()[0]}: {_recovery(path, shard=True)}"
    if text == str(exc):
        return exc
    return StoreError(text, transient=exc.transient)


# -- layer 3: the clock, and the query -------------------------------------------------


def read_only_query(
    con: duckdb.DuckDBPyConnection, sql: str, *, time_limit: float | None = None
) -> QueryResult:
    """Run one plain query (see :func:`check_read_only`) and fetch its result.

    Anything else is refused with :class:`StoreError` before it runs. With ``time_limit``
    (seconds) the query is interrupted when it runs longer. Use a connection from
    :func:`query_views` for SQL a person typed: this check alone is not the guard.

    Example:
        >>> con = duckdb.connect()
        >>> read_only_query(con, "SELECT 42 AS answer").rows
        [(42,)]
        >>> read_only_query(con, "CREATE TABLE t (a INT)")
        Traceback (most recent call last):
        ...
        ledger.errors.StoreError: read-only: CREATE statements are refused (only SELECT, ...)
    """
    check_read_only(sql)
    timer = None
    if time_limit is not None:
        # interrupt() is the one call DuckDB takes from another thread mid-query.
        timer = threading.Timer(time_limit, con.interrupt)
        timer.daemon = True
        timer.start()
    try:
        result = con.sql(sql)
        if result is None:
            return QueryResult((), (), [])
        return QueryResult(
            tuple(result.columns), tuple(str(t) for t in result.types), result.fetchall()
        )
    except duckdb.InterruptException as exc:
        if time_limit is None:
            raise StoreError("the query was interrupted") from exc
        raise StoreError(
            f"the query ran past its time limit of {time_limit:g} s and was stopped: "
            "narrow it, or give it more time"
        ) from exc
    except duckdb.Error as exc:
        raise _store_error(exc, "query") from exc
    finally:
        if timer is not None:
            timer.cancel()
