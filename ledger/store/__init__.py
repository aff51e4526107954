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
shards read-only, retry while a writer holds one, and should close promptly; the SQL
a person types (:func:`query_views`) reads copies of the shards instead, on a
connection that cannot write or reach files.

This module alone catches ``duckdb.Error``; it becomes :class:`StoreError`
(``transient=True`` for a lock held by another process).
"""

from ledger.store._db import (
    Connection,
    arrow,
    memory_capped,
    record_batches,
    registered,
    release_cache,
    rows,
    vector_matrix,
)
from ledger.store.compaction import Compacted, compact
from ledger.store.read import POSITION_TABLE, append_rows, attach_read_only, open_views
from ledger.store.shards import (
    YIELD_S,
    Batch,
    DeadLetter,
    Shard,
    busy_shards,
    shard_dir,
    shard_paths,
)
from ledger.store.tables import ARROW_SCHEMAS, DDL, EVENT_TABLES, empty_table
from ledger.store.user_sql import QueryResult, check_read_only, query_views, read_only_query

__all__ = [
    "ARROW_SCHEMAS",
    "DDL",
    "EVENT_TABLES",
    "POSITION_TABLE",
    "YIELD_S",
    "Batch",
    "Compacted",
    "Connection",
    "DeadLetter",
    "QueryResult",
    "Shard",
    "append_rows",
    "arrow",
    "attach_read_only",
    "busy_shards",
    "check_read_only",
    "compact",
    "empty_table",
    "open_views",
    "query_views",
    "read_only_query",
    "registered",
    "rows",
    "shard_dir",
    "shard_paths",
    "vector_matrix",
    "record_batches",
    "memory_capped",
    "release_cache",
]
