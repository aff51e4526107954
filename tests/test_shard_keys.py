"""Event ids in a shard: a stored id is skipped, the same id with other content is found,
in shards of today's DDL (a UUID column, no key index) and in shards created before it
(a text column with a primary key)."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pytest

from ledger.contract.events import new_event_ids
from ledger.store import ARROW_SCHEMAS, DDL, Batch, Shard, open_views, rows, shard_dir

#: The envelope's first column as shards created before the UUID column had it.
OLD_KEY = "event_id VARCHAR PRIMARY KEY,"


def _deletions(ids: list[str], entities: list[str], first_offset: int) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "event_id": ids,
            "event_time": [datetime(2026, 1, 1, tzinfo=UTC)] * n,
            "producer": ["svc"] * n,
            "model": ["emb"] * n,
            "model_version": ["v1"] * n,
            "entity_id": entities,
            "topic": ["t.embeddings"] * n,
            "partition": [0] * n,
            "offset": list(range(first_offset, first_offset + n)),
        },
        schema=ARROW_SCHEMAS["deletions"],
    )


def _old_shard(home, name: str) -> None:
    """A shard file made by the DDL of before: ``event_id VARCHAR PRIMARY KEY``."""
    assert "event_id UUID," in DDL  # the text this test replaces
    shard_dir(home).mkdir(parents=True)
    con = duckdb.connect(str(shard_dir(home) / f"{name}.duckdb"))
    con.execute(DDL.replace("event_id UUID,", OLD_KEY))
    con.close()


@pytest.mark.parametrize("created", ["today", "before"])
def test_stored_ids_are_skipped_and_reused_ids_found(tmp_path, created):
    if created == "before":
        _old_shard(tmp_path, "main")
    shard = Shard(tmp_path, "main")
    a, b, c = new_event_ids(3)
    first = _deletions([a, b], ["ea", "eb"], 0)
    assert shard.write_checked(Batch({"deletions": first})) == ({"deletions": 2}, [])
    # a replay of both and one new event: only the new one is stored
    again = _deletions([a, b, c], ["ea", "eb", "ec"], 2)
    assert shard.write_checked(Batch({"deletions": again})) == ({"deletions": 1}, [])
    # id a again with another entity: found, and nothing of the batch is written
    other = _deletions([a], ["other"], 5)
    inserted, conflicts = shard.write_checked(Batch({"deletions": other}, {("t", 0): 6}))
    assert inserted == {}
    assert [(x.event_id, x.source, x.stored) for x in conflicts] == [
        (a, ("t.embeddings", 0, 5), ("t.embeddings", 0, 0))
    ]
    assert shard.stored_offsets() == {}
    with open_views(tmp_path) as con:
        found = rows(con, "SELECT event_id, typeof(event_id), entity_id FROM deletions")
    assert sorted(found) == sorted(
        [(a, "VARCHAR", "ea"), (b, "VARCHAR", "eb"), (c, "VARCHAR", "ec")]
    )


def test_views_dedupe_an_old_and_a_new_shard_by_event_id(tmp_path):
    _old_shard(tmp_path, "a")
    a, b, c = new_event_ids(3)
    Shard(tmp_path, "a").write(Batch({"deletions": _deletions([a, b], ["ea", "eb"], 0)}))
    Shard(tmp_path, "b").write(Batch({"deletions": _deletions([b, c], ["eb", "ec"], 1)}))
    with open_views(tmp_path) as con:
        found = rows(con, "SELECT event_id FROM deletions WHERE event_id = $e", e=b)
        assert found == [(b,)]
        assert sorted(rows(con, "SELECT event_id FROM deletions")) == sorted([(a,), (b,), (c,)])
