"""Compaction: a shard rewritten in id order keeps every row, its keys and offsets, lets a
lineage lookup skip row groups, and neither blocks nor is fooled by readers and writers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.errors import ShardBusy, StoreError
from ledger.ops.audit import LINEAGE_SQL, lineage
from ledger.store import ARROW_SCHEMAS, Batch, Shard, compact, open_views

START = datetime(2026, 1, 1, tzinfo=UTC)
TABLES = ("embeddings", "decisions", "deletions", "offsets", "dead_letters", "model_versions")


def _table(name: str, n: int, rng: np.random.Generator, first_offset: int) -> pa.Table:
    """``n`` rows of event table ``name`` for random entities, in log order."""
    ids = [f"doc-{i:06d}" for i in rng.integers(0, max(n // 4, 1), n)]
    cols: dict[str, object] = {
        "event_id": [str(uuid.uuid4()) for _ in range(n)],
        "event_time": [START + timedelta(seconds=first_offset + i) for i in range(n)],
        "producer": ["svc"] * n,
        "model": ["emb" if name != "decisions" else "clf"] * n,
        "model_version": ["v1"] * n,
        "topic": [f"t.{name}"] * n,
        "partition": [0] * n,
        "offset": list(range(first_offset, first_offset + n)),
    }
    if name == "embeddings":
        cols.update(
            entity_id=ids,
            content_sha256=["0" * 64] * n,
            dimension=[2] * n,
            vector=pa.array(rng.standard_normal((n, 2)).tolist(), pa.list_(pa.float32())),
            shadow=[False] * n,
        )
    elif name == "decisions":
        cols.update(
            subject_id=ids,
            label=["yes"] * n,
            score=rng.random(n).tolist(),
            input_sha256=["0" * 64] * n,
            shadow=[False] * n,
        )
    else:
        cols.update(entity_id=ids)
    schema = ARROW_SCHEMAS[name]
    return pa.Table.from_pydict({f.name: cols[f.name] for f in schema}, schema=schema)


def _fill(home: Path, n: int, seed: int = 0, *, first_offset: int = 0, close: bool = True) -> Shard:
    rng = np.random.default_rng(seed)
    shard = Shard(home, "main", hold=60.0)
    names = ("embeddings", "decisions", "deletions")
    step = 20_000
    try:
        for lo in range(0, n, step):
            k = min(step, n - lo)
            offset = first_offset + lo
            tables = {t: _table(t, k if t != "deletions" else k // 10, rng, offset) for t in names}
            offsets = {(f"t.{t}", 0): offset + tables[t].num_rows for t in names}
            shard.write(Batch(tables, offsets))
    finally:
        if close:
            shard.release()
    return shard  # with close=False, its connection stays open while it is referenced


def _contents(path: Path) -> dict[str, list[tuple[object, ...]]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {t: sorted(map(repr, con.execute(f"FROM {t}").fetchall())) for t in TABLES}  # noqa: S608
    finally:
        con.close()


def _storage_order(path: Path, table: str, column: str) -> list[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET threads = 1")  # one thread scans in storage order
        return [r[0] for r in con.execute(f"SELECT {column} FROM {table}").fetchall()]  # noqa: S608
    finally:
        con.close()


def test_compaction_keeps_every_row_and_stores_the_events_in_id_order(tmp_path):
    _fill(tmp_path, 3_000)
    path = tmp_path / "shards" / "main.duckdb"
    before = _contents(path)
    with open_views(tmp_path) as con:
        entity = con.execute("SELECT entity_id FROM embeddings LIMIT 1").fetchall()[0][0]
        lineage_before = lineage(con, entity)
    assert _storage_order(path, "embeddings", "entity_id") != sorted(before["embeddings"])

    done = compact(tmp_path, "main")

    assert _contents(path) == before
    assert done.rows["embeddings"] == 3_000 and done.rows["decisions"] == 3_000
    for table, column in (("embeddings", "entity_id"), ("decisions", "subject_id")):
        stored = _storage_order(path, table, column)
        assert stored == sorted(stored)
    with open_views(tmp_path) as con:
        assert lineage(con, entity).equals(lineage_before)
        assert lineage_before.num_rows > 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["main.duckdb", "main.writer"]


def test_a_compacted_shard_keeps_its_event_id_key_and_resumes_at_its_offsets(tmp_path):
    _fill(tmp_path, 1_000)
    compact(tmp_path, "main")
    shard = Shard(tmp_path, "main")
    assert shard.stored_offsets()[("t.embeddings", 0)] == 1_000
    con = duckdb.connect(str(shard.path), read_only=True)
    stored = con.sql("FROM embeddings LIMIT 3").to_arrow_table()
    con.close()
    fresh = _table("embeddings", 2, np.random.default_rng(5), 1_000)
    both = pa.concat_tables([stored.cast(fresh.schema), fresh])
    inserted = shard.write(Batch({"embeddings": both}))
    assert inserted == {"embeddings": 2}  # the three stored event ids are skipped
    with open_views(tmp_path) as con:
        assert con.execute("SELECT count(*) FROM embeddings").fetchall() == [(1_002,)]


def _row_groups_read(home: Path, entity: str) -> tuple[int, int]:
    out = home / "profile.json"
    with open_views(home) as con:
        con.execute("PRAGMA enable_profiling = 'json'")
        con.execute("PRAGMA profiling_mode = 'detailed'")
        con.execute(f"PRAGMA profiling_output = '{out}'")
        con.execute(LINEAGE_SQL, {"id": entity, "model": None}).fetchall()
        con.execute("PRAGMA disable_profiling")
    query = json.loads(out.read_text())["query"]
    return query["total_row_groups_scanned"], query["total_row_groups_to_scan"]


def test_after_compaction_a_lineage_lookup_skips_the_other_row_groups(tmp_path):
    # Three row groups per table (DuckDB's hold 122,880 rows): in log order every one
    # holds every range of ids; in id order a lookup reads one row group of each.
    _fill(tmp_path, 260_000)
    entity = "doc-001234"
    scanned, total = _row_groups_read(tmp_path, entity)
    assert scanned == total >= 6
    compact(tmp_path, "main")
    scanned, total = _row_groups_read(tmp_path, entity)
    assert total >= 6 and scanned <= 3  # one of embeddings, decisions (and deletions)


def test_compaction_refuses_a_shard_a_materialiser_writes(tmp_path):
    _fill(tmp_path, 100)
    path = tmp_path / "shards" / "main.duckdb"
    before = path.read_bytes()
    writer = Shard(tmp_path, "main")
    writer.claim()
    try:
        with pytest.raises(ShardBusy, match="cannot be compacted now"):
            compact(tmp_path, "main")
        result = CliRunner().invoke(cli, ["--home", str(tmp_path), "compact"])
    finally:
        writer.release()
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "stop `ledger consume`" in result.output
    assert path.read_bytes() == before


def test_compaction_of_a_shard_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(StoreError, match="no shard main"):
        compact(tmp_path, "main")
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "compact"])
    assert result.exit_code == 2
    assert "no shards in" in result.output


_READER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ledger.store import open_views
    con = open_views(Path(sys.argv[1]))
    first = con.execute("SELECT count(*) FROM embeddings").fetchall()[0][0]
    print("ready", first, flush=True)
    sys.stdin.readline()  # compaction runs meanwhile, in the test's process
    print(con.execute("SELECT count(*) FROM embeddings").fetchall()[0][0], flush=True)
""")


def test_a_reader_holding_the_views_neither_blocks_compaction_nor_sees_it_change(tmp_path):
    _fill(tmp_path, 2_000)
    with subprocess.Popen(
        [sys.executable, "-c", _READER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as reader:
        assert reader.stdout is not None and reader.stdin is not None
        try:
            assert reader.stdout.readline().split() == ["ready", "2000"]
            compact(tmp_path, "main", lock_timeout=2.0)  # the reader holds the file meanwhile
            reader.stdin.write("\n")
            reader.stdin.flush()
            assert reader.stdout.readline().strip() == "2000"
        finally:
            reader.kill()
    stored = _storage_order(tmp_path / "shards" / "main.duckdb", "embeddings", "entity_id")
    assert stored == sorted(stored)


_CRASHED_WRITER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_compaction import _fill
    held = _fill(Path(sys.argv[1]), 500, seed=3, first_offset=2_000, close=False)  # in the WAL
    os._exit(0)  # killed before it closes (and checkpoints)
""")


def test_compaction_folds_in_the_log_of_a_writer_that_was_killed(tmp_path):
    _fill(tmp_path, 2_000)
    subprocess.run(
        [sys.executable, "-c", _CRASHED_WRITER, str(tmp_path), str(Path(__file__).parent)],
        check=True,
    )
    wal = tmp_path / "shards" / "main.duckdb.wal"
    assert wal.exists()
    compact(tmp_path, "main")
    assert not wal.exists()
    shard = Shard(tmp_path, "main")
    assert shard.stored_offsets()[("t.embeddings", 0)] == 2_500
    shard.write(Batch({"embeddings": _table("embeddings", 1, np.random.default_rng(9), 2_500)}))
    with open_views(tmp_path) as con:
        assert con.execute("SELECT count(*) FROM embeddings").fetchall() == [(2_501,)]


def test_ledger_compact_reports_each_shard(tmp_path):
    _fill(tmp_path, 300)
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "compact", "--json"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.output)
    assert report["shard"] == "main"
    assert report["rows"]["embeddings"] == 300 and report["rows"]["deletions"] == 30
    human = CliRunner().invoke(cli, ["--home", str(tmp_path), "compact", "--shard", "main"])
    assert human.exit_code == 0
    assert human.output.startswith("compacted shard main: ")


def test_the_shards_own_writer_can_compact_it_and_write_on(tmp_path):
    writer = _fill(tmp_path, 1_000, close=False)  # its connection still held
    writer.claim()
    try:
        done = compact(tmp_path, "main", writer=writer)
        assert done.rows["embeddings"] == 1_000
        extra = _table("embeddings", 5, np.random.default_rng(7), 1_000)
        assert writer.write(Batch({"embeddings": extra})) == {"embeddings": 5}
    finally:
        writer.release()
    stored = _storage_order(tmp_path / "shards" / "main.duckdb", "embeddings", "entity_id")
    assert stored[:1_000] == sorted(stored[:1_000]) and len(stored) == 1_005
