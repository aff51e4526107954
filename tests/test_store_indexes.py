"""One entity's lineage is an index lookup, not a scan of every stored event."""

from __future__ import annotations

import pyarrow as pa

from ledger.ops.audit import LINEAGE_SQL
from ledger.store import ARROW_SCHEMAS, Batch, Shard, open_views, rows


def _embeddings(n: int) -> pa.Table:
    schema = ARROW_SCHEMAS["embeddings"]
    data = {
        "event_id": [f"{i:032x}" for i in range(n)],
        "event_time": pa.array([0] * n, pa.timestamp("us", tz="UTC")),
        "producer": ["p"] * n,
        "model": ["m"] * n,
        "model_version": ["v1"] * n,
        "entity_id": [f"e{i % 500:04d}" for i in range(n)],
        "content_sha256": ["0" * 64] * n,
        "dimension": [2] * n,
        "vector": [[1.0, 0.0]] * n,
        "topic": ["t.embeddings"] * n,
        "partition": [0] * n,
        "offset": list(range(n)),
        "shadow": [False] * n,
    }
    return pa.Table.from_pydict(data, schema=schema)


def _decisions(n: int) -> pa.Table:
    schema = ARROW_SCHEMAS["decisions"]
    data = {
        "event_id": [f"d{i:031x}" for i in range(n)],
        "event_time": pa.array([0] * n, pa.timestamp("us", tz="UTC")),
        "producer": ["p"] * n,
        "model": ["c"] * n,
        "model_version": ["v1"] * n,
        "subject_id": [f"e{i % 500:04d}" for i in range(n)],
        "label": ["ham"] * n,
        "score": [0.5] * n,
        "input_sha256": ["0" * 64] * n,
        "topic": ["t.decisions"] * n,
        "partition": [0] * n,
        "offset": list(range(n)),
        "shadow": [False] * n,
    }
    return pa.Table.from_pydict(data, schema=schema)


def test_shards_index_the_id_columns_and_lineage_looks_them_up(tmp_path):
    shard = Shard(tmp_path, "main")
    tables = {"embeddings": _embeddings(5_000), "decisions": _decisions(5_000)}
    shard.write(Batch(tables, {("t.embeddings", 0): 5_000, ("t.decisions", 0): 5_000}))
    with open_views(tmp_path) as con:
        indexes = rows(con, "SELECT table_name, expressions FROM duckdb_indexes() ORDER BY 1")
        explain = rows(con, "EXPLAIN ANALYZE " + LINEAGE_SQL, id="e0007", model=None)
        found = rows(con, LINEAGE_SQL, id="e0007", model=None)
    plan = "\n".join(r[1] for r in explain)
    assert [(t, e) for t, e in indexes] == [
        ("decisions", "[subject_id]"),
        ("embeddings", "[entity_id]"),
    ]
    assert plan.count("Type: Index Scan") == 2, plan  # embeddings and decisions: no full scan
    assert len(found) == 20  # 10 embeddings and 10 decisions of e0007
