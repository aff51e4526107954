"""The read side: views over shards, lineage macros, and readers beside a running writer."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from consumers.catchup import catch_up
from ledger.errors import StoreError
from ledger.log.producer import Producer, content_hash
from ledger.store import Batch, Shard, arrow, empty_table, open_views, registered, rows

pytestmark = pytest.mark.kafka


def _history(bootstrap, topics):
    """emb: e0..e4 by v1, deploy v1; e0..e2 by v2, deploy v2; e1 deleted. clf: two versions."""
    h = content_hash
    with Producer(bootstrap=bootstrap, name="svc", topics=topics) as p:
        for v in ("v1", "v2"):
            p.register_model_version("emb", v, kind="embedding", dimension=4, metric="angular")
        for v in ("c1", "c2"):
            p.register_model_version("clf", v, kind="classifier", labels=["yes", "no"])
        p.write_embeddings(
            "emb",
            "v1",
            [f"e{i}" for i in range(5)],
            np.eye(5, 4) + 0.1,
            content_sha256s=[h(str(i)) for i in range(5)],
        )
        p.record_decision("clf", "c1", "s1", "yes", score=0.8, input_sha256=h("s1"))
        p.record_decision("clf", "c1", "s2", "no", score=0.7, input_sha256=h("s2"))
        p.record_deployment("emb", to_version="v1", from_version=None, reason="launch", actor="ops")
        p.write_embeddings(
            "emb",
            "v2",
            ["e0", "e1", "e2"],
            np.ones((3, 4)),
            content_sha256s=[h("0"), h("1"), h("2")],
        )
        p.record_decision("clf", "c2", "s1", "no", score=0.6, input_sha256=h("s1"))
        p.record_deployment(
            "emb",
            to_version="v2",
            from_version="v1",
            reason="upgrade",
            actor="ops",
            summary={"why": "better"},
        )
        p.delete_entity("emb", "v2", "e1")


def test_lineage_views_and_macros_answer_the_auditors_questions(bootstrap, topics, tmp_path):
    _history(bootstrap, topics)
    catch_up(bootstrap, topics, tmp_path)
    con = open_views(tmp_path)
    try:

        def q(sql):
            return con.execute(sql).fetchall()

        history = q(
            "SELECT model_version, from_version, served_from, served_until "
            "FROM serving_history ORDER BY served_from"
        )
        assert [(v, f) for v, f, _, _ in history] == [("v1", None), ("v2", "v1")]
        assert history[0][3] == history[1][2] and history[1][3] is None
        t1, t2 = history[0][2], history[1][2]
        assert q(
            f"SELECT serving_version('emb', '{t1}'::TIMESTAMPTZ), "
            f"serving_version('emb', '{t2}'::TIMESTAMPTZ), "
            f"serving_version('emb', '{t1}'::TIMESTAMPTZ - INTERVAL 1 DAY)"
        ) == [("v1", "v2", None)]
        assert q("SELECT * FROM serving_now") == [("emb", "v2", t2)]
        assert sorted(r[0] for r in q("SELECT entity_id FROM live_entities('emb')")) == [
            "e0",
            "e2",
            "e3",
            "e4",
        ]
        assert sorted(r[0] for r in q("SELECT entity_id FROM version_embeddings('emb', 'v1')")) == [
            "e0",
            "e2",
            "e3",
            "e4",
        ]
        assert sorted(r[0] for r in q("SELECT entity_id FROM version_embeddings('emb', 'v2')")) == [
            "e0",
            "e2",
        ]
        assert sorted(q("SELECT subject_id, label FROM version_decisions('clf', 'c1')")) == [
            ("s1", "yes"),
            ("s2", "no"),
        ]
        assert sorted(q("SELECT subject_id, model_version FROM latest_decisions('clf')")) == [
            ("s1", "c2"),
            ("s2", "c1"),
        ]
        counts = q(
            "SELECT model, model_version, current_vectors, current_decisions, serving "
            "FROM version_counts"
        )
        assert counts == [
            ("clf", "c1", 0, 1, False),
            ("clf", "c2", 0, 1, False),
            ("emb", "v1", 2, 0, False),
            ("emb", "v2", 2, 0, True),
        ]
        nearest = q(
            "SELECT entity_id FROM version_embeddings('emb', 'v1') ORDER BY "
            "list_cosine_similarity(vector, [1.1, 0.1, 0.1, 0.1]::FLOAT[]) DESC LIMIT 1"
        )
        assert nearest == [("e0",)]
    finally:
        con.close()


def test_views_exist_before_any_shard(tmp_path):
    con = open_views(tmp_path)
    try:
        for name in (
            "embeddings",
            "deletions",
            "decisions",
            "deployments",
            "model_versions",
            "dead_letters",
            "offsets",
            "serving_history",
            "version_counts",
        ):
            assert con.execute(f"SELECT count(*) FROM {name}").fetchone() == (0,)
    finally:
        con.close()


def test_a_bad_query_through_the_store_helpers_raises_store_error(tmp_path):
    with open_views(tmp_path) as con:
        for run in (arrow, rows):
            with pytest.raises(StoreError) as info:
                run(con, "SELECT no_such_column FROM embeddings WHERE model = $m", m="x")
            assert not isinstance(info.value, duckdb.Error) and not info.value.transient
        with pytest.raises(StoreError), registered(con, "_t", pa.table({"a": [1]})):
            rows(con, "SELECT b FROM _t")
        # the registered table is gone again, also after the failed query
        assert rows(con, "SELECT count(*) FROM duckdb_views() WHERE view_name = '_t'") == [(0,)]


def test_writer_waits_for_a_reader_then_writes(tmp_path):
    shard = Shard(tmp_path, "main", lock_timeout=5.0)
    shard.write(Batch({"deletions": empty_table("deletions")}, {("t", 0): 1}))
    con = open_views(tmp_path)  # holds the file read-only
    import threading

    done = threading.Event()

    def write() -> None:
        shard.write(Batch({}, {("t", 0): 2}))
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not done.wait(0.5)  # blocked while the reader holds the file
    con.close()
    writer.join(5)
    assert done.is_set() and shard.stored_offsets() == {("t", 0): 2}
