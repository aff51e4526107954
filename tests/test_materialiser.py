"""The materialiser against a real broker and real DuckDB shards: exactly once, in effect."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from consumers.catchup import catch_up
from consumers.lag import lag
from ledger.errors import LogGapError, StoreError
from ledger.log.producer import Producer, content_hash
from ledger.store import Batch, Shard, open_views
from tests.helpers import encoded, envelope, produce_embeddings, send_raw

pytestmark = pytest.mark.kafka

COUNT_IDS = "SELECT count(*), count(DISTINCT event_id) FROM embeddings"


def test_catch_up_stores_every_event_once_with_its_content(bootstrap, topics, tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.random((300, 8), dtype=np.float32)
    with Producer(bootstrap=bootstrap, name="svc", topics=topics) as p:
        p.register_model_version("emb", "v1", kind="embedding", dimension=8, metric="angular")
        p.register_model_version("clf", "c1", kind="classifier", labels=["spam", "ham"])
        ids = p.write_embeddings(
            "emb",
            "v1",
            [f"e{i}" for i in range(300)],
            vectors,
            content_sha256s=[content_hash(str(i)) for i in range(300)],
        )
        deleted = p.delete_entity("emb", "v1", "e7")
        decision = p.record_decision(
            "clf", "c1", "s1", "spam", score=0.9, input_sha256=content_hash("x")
        )
        p.record_deployment(
            "emb",
            to_version="v1",
            from_version=None,
            reason="launch",
            actor="ops",
            summary={"items": "300"},
        )

    stats = catch_up(bootstrap, topics, tmp_path)

    assert (stats.events, stats.dead_letters, stats.duplicates) == (305, 0, 0)
    con = open_views(tmp_path)
    try:
        rows = con.execute("SELECT event_id, entity_id, vector FROM embeddings").fetchall()
        assert len(rows) == 300
        by_id = {eid: (ent, vec) for eid, ent, vec in rows}
        for i, eid in enumerate(ids):
            ent, vec = by_id[eid]
            assert ent == f"e{i}"
            assert np.array_equal(np.asarray(vec, dtype=np.float32), vectors[i])
        assert con.execute("SELECT event_id FROM deletions").fetchall() == [(deleted,)]
        assert con.execute("SELECT event_id, label, score FROM decisions").fetchall() == [
            (decision, "spam", 0.9)
        ]
        assert con.execute("SELECT model, model_version, summary FROM deployments").fetchall() == [
            ("emb", "v1", {"items": "300"})
        ]
        assert con.execute("SELECT labels FROM model_versions WHERE model = 'clf'").fetchall() == [
            (["spam", "ham"],)
        ]
    finally:
        con.close()
    assert all(p.lag == 0 for p in lag(bootstrap, topics, tmp_path))


def test_second_catch_up_after_restart_adds_no_rows(bootstrap, topics, tmp_path):
    produce_embeddings(bootstrap, topics, 500)
    first = catch_up(bootstrap, topics, tmp_path)
    again = catch_up(bootstrap, topics, tmp_path)
    assert (first.events, again.messages, again.events) == (501, 0, 0)
    produce_embeddings(bootstrap, topics, 100, start=500)
    more = catch_up(bootstrap, topics, tmp_path)
    assert more.events == 100 + 1  # the (idempotent) re-registration is an event too
    con = open_views(tmp_path)
    try:
        assert con.execute(COUNT_IDS).fetchone() == (600, 600)
    finally:
        con.close()


def test_a_resent_event_id_is_stored_once(bootstrap, topics, tmp_path):
    produce_embeddings(bootstrap, topics, 1)
    record = envelope(
        "emb",
        "v1",
        entity_id="dup",
        content_sha256=content_hash("d"),
        dimension=8,
        vector=np.ones(8, "<f4").tobytes(),
    )
    raw = encoded("EmbeddingWritten", record)
    send_raw(bootstrap, [(topics.embeddings, b"dup", raw)] * 3)  # a producer retrying
    stats = catch_up(bootstrap, topics, tmp_path)
    send_raw(bootstrap, [(topics.embeddings, b"dup", raw)])  # and a late replay
    later = catch_up(bootstrap, topics, tmp_path)
    assert (stats.duplicates, later.duplicates, later.events) == (2, 1, 0)
    con = open_views(tmp_path)
    try:
        sql = "SELECT count(*) FROM embeddings WHERE entity_id = 'dup'"
        assert con.execute(sql).fetchone() == (1,)
    finally:
        con.close()


def test_views_show_each_event_once_across_shards(bootstrap, topics, tmp_path):
    produce_embeddings(bootstrap, topics, 400)
    catch_up(bootstrap, topics, tmp_path, shard="a")
    catch_up(bootstrap, topics, tmp_path, shard="b")  # the same events, as after a handover
    con = open_views(tmp_path)
    try:
        assert con.execute(COUNT_IDS).fetchone() == (400, 400)
        assert con.execute("SELECT count(*) FROM model_versions").fetchone() == (1,)
        ends = dict(((t, p), o) for t, p, o in con.execute("SELECT * FROM offsets").fetchall())
        assert sum(o for (t, _), o in ends.items() if t == topics.embeddings) == 400
    finally:
        con.close()


def test_stored_offset_past_the_log_end_stops_with_a_log_gap(bootstrap, topics, tmp_path):
    produce_embeddings(bootstrap, topics, 10)
    shard = Shard(tmp_path, "main")
    shard.write(Batch({}, {(topics.embeddings, 2): 5000}))  # as if the broker lost its log
    with pytest.raises(LogGapError, match=rf"{topics.embeddings}\[2\].*5000"):
        catch_up(bootstrap, topics, tmp_path)


class _LogStartsAt10:
    """A consumer whose log start moved past the stored offset (retention deleted events)."""

    def __init__(self) -> None:
        self.seeks: list[tuple[object, int]] = []

    def beginning_offsets(self, tps):
        return {tp: 10 for tp in tps}

    def seek(self, tp, offset):
        self.seeks.append((tp, offset))

    def resume(self, tps):
        pass

    def topic_id(self, topic):
        return None


def test_log_start_past_the_stored_offset_stops_with_a_log_gap(bootstrap, topics, tmp_path):
    from consumers.materialiser import Materialiser
    from ledger.log.clients import Partition

    Shard(tmp_path, "main").write(Batch({}, {(topics.decisions, 1): 4}))
    with Materialiser(bootstrap, topics, tmp_path) as mat:
        fake = _LogStartsAt10()
        with pytest.raises(LogGapError, match=rf"{topics.decisions}\[1\].*offsets 4\.\.9"):
            mat._prepare(fake, [Partition(topics.decisions, 1)])
        assert fake.seeks == []  # never positioned past the missing range


def test_one_writer_process_per_shard(tmp_path):
    first = Shard(tmp_path, "main")
    first.claim()
    try:
        with pytest.raises(StoreError, match="another materialiser"):
            Shard(tmp_path, "main").claim()
    finally:
        first.release()


def test_replaying_a_partition_from_zero_adds_no_rows_and_no_dead_letters(
    bootstrap, make_topics, tmp_path
):
    topics = make_topics(1)
    produce_embeddings(bootstrap, topics, 300)
    send_raw(bootstrap, [(topics.embeddings, b"k", b"junk")])
    first = catch_up(bootstrap, topics, tmp_path)
    Shard(tmp_path, "main").write(Batch({}, {(topics.embeddings, 0): 0}))  # rewind
    replay = catch_up(bootstrap, topics, tmp_path)
    assert (first.events, first.dead_letters) == (301, 1)
    assert (replay.messages, replay.events, replay.duplicates) == (301, 0, 300)
    con = open_views(tmp_path)
    try:
        assert con.execute(COUNT_IDS).fetchone() == (300, 300)
        assert con.execute("SELECT count(*) FROM shard_0.dead_letters").fetchone() == (1,)
    finally:
        con.close()


def test_catch_up_to_given_ends_returns_while_producers_keep_writing(bootstrap, topics, tmp_path):
    import threading

    from consumers.lag import true_ends

    produce_embeddings(bootstrap, topics, 2000)
    ends = true_ends(bootstrap, topics.all)
    stop = threading.Event()

    def keep_writing() -> None:
        start = 2000
        while not stop.is_set():
            produce_embeddings(bootstrap, topics, 500, start=start)
            start += 500

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    try:
        catch_up(bootstrap, topics, tmp_path, until=ends, timeout=60)
    finally:
        stop.set()
        writer.join(30)
    stored = Shard(tmp_path, "main").stored_offsets()
    assert all(stored.get(tp, 0) >= end for tp, end in ends.items())


def test_a_partition_handed_back_resumes_from_the_newest_offset_of_any_shard(
    bootstrap, make_topics, tmp_path
):
    # b holds the partition, then a (after a rebalance), then b again: b must not read
    # again what a stored meanwhile.
    topics = make_topics(1)
    group = f"{topics.prefix}.g"
    produce_embeddings(bootstrap, topics, 100)
    first = catch_up(bootstrap, topics, tmp_path, shard="b", group=group)
    produce_embeddings(bootstrap, topics, 300, start=100)
    second = catch_up(bootstrap, topics, tmp_path, shard="a", group=group)
    produce_embeddings(bootstrap, topics, 50, start=400)
    third = catch_up(bootstrap, topics, tmp_path, shard="b", group=group)

    assert (first.events, second.events) == (101, 301)
    assert (third.messages, third.duplicates) == (51, 0)  # not the 300 a stored
    con = open_views(tmp_path)
    try:
        assert con.execute(COUNT_IDS).fetchone() == (450, 450)
    finally:
        con.close()


def test_a_busy_other_shard_costs_a_re_read_not_an_event(bootstrap, make_topics, tmp_path):
    topics = make_topics(1)
    produce_embeddings(bootstrap, topics, 100)
    catch_up(bootstrap, topics, tmp_path, shard="b")
    produce_embeddings(bootstrap, topics, 100, start=100)
    catch_up(bootstrap, topics, tmp_path, shard="a")
    held = subprocess.Popen(  # another process keeps shard a open for writing
        [sys.executable, "-c", _HOLD, str(tmp_path / "shards" / "a.duckdb")],
        stdout=subprocess.PIPE,
    )
    try:
        assert held.stdout is not None and held.stdout.readline() == b"held\n"
        again = catch_up(bootstrap, topics, tmp_path, shard="b")
    finally:
        held.kill()
        held.communicate()
    assert again.messages == 101  # what a stored is read again: b stores its own copy ...
    con = open_views(tmp_path)
    try:
        assert con.execute(COUNT_IDS).fetchone() == (200, 200)  # ... the views show it once
    finally:
        con.close()


_HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def test_positions_of_a_shard_this_process_writes_can_be_peeked(tmp_path):
    from ledger.store.positions import LogMark, peek_positions

    shard = Shard(tmp_path, "a", hold=60.0)  # keeps its read-write connection open
    mark = LogMark(41, "f" * 64, "id-1")
    shard.write(Batch({}, {("t.embeddings", 0): 42}, marks={("t.embeddings", 0): mark}))
    try:
        found = peek_positions(shard.path, timeout=1.0)
    finally:
        shard.release()
    assert found is not None
    assert (found[("t.embeddings", 0)].next_offset, found[("t.embeddings", 0)].mark) == (42, mark)
