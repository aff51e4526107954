"""``ledger verify`` on the seed's incident: it passes on a correct rollback and catches each
fault it names (one test per fault), on the real broker and real DuckDB files."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from scenario import CLASSIFIER, EMBEDDER, play_incident

from consumers.catchup import catch_up
from ledger import Producer, content_hash
from ledger.artifacts.decision_table import build_decision_table, read_decision_table
from ledger.artifacts.index_build import build_index
from ledger.artifacts.index_reader import open_artifact
from ledger.artifacts.manifest import load_manifest
from ledger.checks.index_facts import measure_recall, read_facts
from ledger.checks.recall import RecallSpec, SearchK
from ledger.cli import cli
from ledger.contract.events import Topics
from ledger.log.topics import init_topics
from ledger.ops.rollback import rollback
from ledger.ops.verify import verify
from ledger.serving.open import open_index
from ledger.serving.pointers import current, switch
from ledger.store import arrow, open_views
from ledger.store.queries import ITEMS_SQL, log_offsets

pytestmark = pytest.mark.kafka

MODELS = [EMBEDDER, CLASSIFIER]


# The recall check as serving queries (the pointer's search_k), with a smaller sample.
AS_SERVING = RecallSpec(0.9, 100, search_k=SearchK.serving())


def _served(bootstrap: str, topics: Topics, home: Path):
    with Producer(bootstrap=bootstrap, name="search-api", topics=topics) as producer:
        expected = play_incident(producer)
    result = rollback(bootstrap, topics, home, MODELS, to="v1", dry_run=False)
    assert result.switched
    return expected


@pytest.fixture(scope="module")
def shared(bootstrap, tmp_path_factory):
    """One incident rolled back to v1, never changed: tests copy its home and break the copy."""
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:12]}")
    init_topics(bootstrap, topics, partitions=4)
    base = tmp_path_factory.mktemp("served")
    return topics, base, _served(bootstrap, topics, base)


@pytest.fixture
def served(shared, tmp_path):
    topics, base, expected = shared
    home = tmp_path / "home"
    shutil.copytree(base, home)  # pointers name artifacts relative to home: the copy serves
    return topics, home, expected


def _by_name(report, model):
    return {c.name: c for c in report.checks if c.model in (model, "*")}


def _failed(report):
    return sorted((c.model, c.name) for c in report.checks if not c.passed)


def _artifact(home, model):
    return current(home, model).artifact_path(home)


def test_verify_passes_on_a_correct_rollback_with_figures(bootstrap, served):
    topics, home, expected = served

    report = verify(bootstrap, topics, home, MODELS)

    assert report.passed, _failed(report)
    emb = _by_name(report, EMBEDDER)
    assert set(emb) == {
        "checksum",
        "position",
        "count",
        "purity",
        "recall",
        "deployed",
        "switch",
        "lag",
    }
    assert emb["count"].figures["view_items"] == len(expected.items("v1"))
    assert emb["purity"].figures["vector_differs"] == 0
    assert emb["recall"].figures["recall"] >= 0.9
    clf = _by_name(report, CLASSIFIER)
    assert set(clf) == {"checksum", "position", "purity", "coverage", "deployed", "switch", "lag"}
    # The mixed state, from the independent model of the incident.
    mixed = {m.model: m for m in report.mixed}
    live = expected.live()
    latest = {e: expected.latest_write(e)[1] for e in live}
    assert mixed[EMBEDDER].total == len(live)
    assert mixed[EMBEDDER].mixed == sum(v != "v1" for v in latest.values()) > 0
    assert dict(mixed[EMBEDDER].by_version) == {
        v: sum(x == v for x in latest.values()) for v in set(latest.values())
    }
    # the latest decision acted on (shadow decisions never were)
    last_decision = {
        s: [d for d in ds if d[2] != "shadow"][-1][0] for s, ds in expected.decisions.items()
    }
    assert mixed[CLASSIFIER].mixed == sum(v != "v1" for v in last_decision.values()) > 0


def test_mixed_v1_v2_index_fails_purity_naming_v2(bootstrap, served):
    topics, home, expected = served
    v1, v2 = expected.items("v1"), expected.items("v2")
    swapped = sorted(set(v1) & set(v2))[::2]
    ids = sorted(v1)
    vectors = np.stack([v2[e] if e in swapped else v1[e] for e in ids])
    offsets = load_manifest(_artifact(home, EMBEDDER)).log_offsets
    manifest = build_index(
        home / "handmade",
        model=EMBEDDER,
        version="v1",
        entity_ids=ids,
        vectors=vectors,
        metric="angular",
        log_offsets=offsets,
    )
    switch(home, EMBEDDER, home / "handmade" / manifest.relative_path)

    report = verify(bootstrap, topics, home, EMBEDDER)

    # switched by hand: the log's deployment names the rollback's artifact, not this one
    assert _failed(report) == [(EMBEDDER, "deployed"), (EMBEDDER, "purity")]
    purity = _by_name(report, EMBEDDER)["purity"]
    assert purity.figures["vector_differs"] == len(swapped) > 0
    assert purity.figures["differing_vectors_by_version"] == {"v2": len(swapped)}
    assert "whose events: v2" in purity.detail


def test_truncated_index_file_fails_checksum(bootstrap, served):
    topics, home, _ = served
    shard = _artifact(home, EMBEDDER) / "shard-0000.ann"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])

    report = verify(bootstrap, topics, home, MODELS)

    assert _failed(report) == [(EMBEDDER, "checksum")]
    assert "shard-0000.ann" in _by_name(report, EMBEDDER)["checksum"].detail


def test_modified_index_byte_fails_checksum(bootstrap, served):
    topics, home, _ = served
    shard = _artifact(home, EMBEDDER) / "shard-0001.ann"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))

    assert _failed(verify(bootstrap, topics, home, EMBEDDER)) == [(EMBEDDER, "checksum")]


def test_manifest_count_off_by_one_fails_only_count(bootstrap, served):
    topics, home, expected = served
    path = _artifact(home, EMBEDDER) / "manifest.json"
    data = json.loads(path.read_text())
    data["items"] += 1  # not part of the file checksums: the pinned checksum still holds
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    switch(home, EMBEDDER, path.parent, verify=False)  # re-pin the edited manifest

    report = verify(bootstrap, topics, home, EMBEDDER)

    assert _failed(report) == [(EMBEDDER, "count")]
    count = _by_name(report, EMBEDDER)["count"]
    assert count.figures["manifest_items"] == len(expected.items("v1")) + 1
    assert count.figures["view_items"] == count.figures["index_items"] == len(expected.items("v1"))


def test_v2_decision_slipped_into_the_table_fails_decision_purity(bootstrap, served):
    topics, home, expected = served
    folder = _artifact(home, CLASSIFIER)
    table = read_decision_table(folder)
    only_v2 = sorted(expected.redecide("v1"))[0]  # a subject only v2 decided
    with open_views(home) as con:
        row = arrow(
            con,
            "SELECT subject_id, label, score, event_id, event_time, producer FROM decisions "
            "WHERE subject_id = $s AND model_version = 'v2'",
            s=only_v2,
        )
    slipped = pa.concat_tables([table, row.cast(table.schema)]).sort_by("subject_id")
    manifest = build_decision_table(
        home / "handmade",
        model=CLASSIFIER,
        version="v1",
        table=slipped,
        log_offsets=load_manifest(folder).log_offsets,
    )
    switch(home, CLASSIFIER, home / "handmade" / manifest.relative_path)

    report = verify(bootstrap, topics, home, CLASSIFIER)

    # switched by hand: the log's deployment names the rollback's artifact, not this one
    assert _failed(report) == [(CLASSIFIER, "deployed"), (CLASSIFIER, "purity")]
    purity = _by_name(report, CLASSIFIER)["purity"]
    assert purity.figures["foreign"] == purity.figures["other_version"] == 1


def test_events_after_the_catch_up_fail_lag(bootstrap, make_topics, tmp_path):
    topics = make_topics()
    home = tmp_path / "home"
    _served(bootstrap, topics, home)
    with Producer(bootstrap=bootstrap, name="search-api", topics=topics) as producer:
        ids = [f"late-{i}" for i in range(7)]
        vectors = np.ones((7, 16), "<f4")
        producer.write_embeddings(
            EMBEDDER, "v1", ids, vectors, content_sha256s=[content_hash(e) for e in ids]
        )

    report = verify(bootstrap, topics, home, EMBEDDER)

    assert _failed(report) == [("*", "lag")]
    assert _by_name(report, EMBEDDER)["lag"].figures["events_behind"] == 7

    # Once materialised, the index is still right *at its log position*: the new v1
    # entities are after it, so count and purity still pass, and lag is back to zero.
    catch_up(bootstrap, topics, home)
    report = verify(bootstrap, topics, home, EMBEDDER)
    assert report.passed, _failed(report)
    with open_views(home) as con:
        now = arrow(con, ITEMS_SQL, model=EMBEDDER, version="v1").num_rows
    assert now == _by_name(report, EMBEDDER)["count"].figures["view_items"] + 7


def _serve_one_tree_index(bootstrap, make_topics, tmp_path):
    """A 1-tree index on clustered data switched in by hand: Annoy's default search_k
    (trees x k) finds few true neighbours."""
    topics = make_topics()
    home = tmp_path / "home"
    model, n, dim = "clustered-embedder", 3000, 32
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((20, dim)).astype("<f4") * 4
    vectors = centres[rng.integers(0, 20, n)] + rng.standard_normal((n, dim)).astype("<f4")
    ids = [f"doc-{i:05d}" for i in range(n)]
    with Producer(bootstrap=bootstrap, name="search-api", topics=topics) as producer:
        producer.register_model_version(
            model, "v1", kind="embedding", dimension=dim, metric="angular"
        )
        producer.write_embeddings(
            model, "v1", ids, vectors, content_sha256s=[content_hash(e) for e in ids]
        )
    catch_up(bootstrap, topics, home)
    with open_views(home) as con:
        items = arrow(con, ITEMS_SQL, model=model, version="v1")
        offsets = log_offsets(con)
    stored = np.stack(items.column("vector").to_numpy(zero_copy_only=False)).astype("<f4")
    manifest = build_index(
        home / "artifacts",
        model=model,
        version="v1",
        entity_ids=items.column("entity_id").to_pylist(),
        vectors=stored,
        metric="angular",
        log_offsets=offsets,
        trees=1,
    )
    pointer = switch(home, model, home / "artifacts" / manifest.relative_path)
    with Producer(bootstrap=bootstrap, name="test", topics=topics) as producer:
        producer.record_deployment(  # as a real deployment records it
            model,
            to_version="v1",
            from_version=None,
            reason="hand",
            actor="test",
            summary={"artifact": pointer.artifact},
        )
    catch_up(bootstrap, topics, home)
    return topics, home, model


def test_one_tree_index_on_clustered_data_fails_recall(bootstrap, make_topics, tmp_path):
    topics, home, model = _serve_one_tree_index(bootstrap, make_topics, tmp_path)

    report = verify(
        bootstrap, topics, home, model, recall=RecallSpec(0.9, 100, search_k=SearchK.serving())
    )

    assert _failed(report) == [(model, "recall")]
    recall = _by_name(report, model)["recall"]
    assert recall.figures["recall"] < 0.9 and recall.figures["queries"] == 100


def test_shadow_writes_are_materialised_but_never_serve_nor_mix(bootstrap, make_topics, tmp_path):
    topics, home = make_topics(), tmp_path / "home"  # its own log: it writes to it
    expected = _served(bootstrap, topics, home)
    before = {m.model: m for m in verify(None, topics, home, MODELS).mixed}
    existing = sorted(expected.live())[:5]
    fresh = [f"shadow-{i}" for i in range(3)]
    with Producer(bootstrap=bootstrap, name="canary", topics=topics, shadow=True) as producer:
        producer.write_embeddings(
            EMBEDDER,
            "v2",
            existing + fresh,
            np.ones((8, 16), "<f4"),
            content_sha256s=[content_hash(e) for e in existing + fresh],
        )
        producer.record_decision(
            CLASSIFIER, "v2", existing[0], "spam", score=0.5, input_sha256=content_hash("x")
        )
    catch_up(bootstrap, topics, home)

    report = verify(bootstrap, topics, home, MODELS)

    assert report.passed, _failed(report)
    mixed = {m.model: m for m in report.mixed}
    assert mixed[EMBEDDER].mixed == before[EMBEDDER].mixed  # shadow vectors never served
    assert mixed[EMBEDDER].shadow_only == len(fresh)
    assert mixed[CLASSIFIER].mixed == before[CLASSIFIER].mixed
    with open_views(home) as con:
        rows = con.execute(
            "SELECT count(*) FILTER (WHERE shadow), count(*) FROM embeddings "
            "WHERE entity_id IN (SELECT unnest($ids))",
            {"ids": existing + fresh},
        ).fetchall()
    assert rows[0][0] == 8  # materialised like any event, marked
    # A shadow v2 embedding is a v2 embedding: rolling forward to v2 indexes it.
    plan = rollback(bootstrap, topics, home, [EMBEDDER], to="v2").plan.models[0]
    assert plan.items == len(expected.items("v2")) + len(fresh)


# -- the command ----------------------------------------------------------------------------


def _cli(bootstrap, topics, home, *args):
    return CliRunner().invoke(
        cli,
        [
            "--bootstrap",
            bootstrap,
            "--home",
            str(home),
            "--topic-prefix",
            topics.prefix,
            "verify",
            *args,
        ],
    )


def test_cli_passes_with_one_line_per_check_and_exit_0(bootstrap, served):
    topics, home, _ = served
    result = _cli(bootstrap, topics, home, "--model", EMBEDDER, "--model", CLASSIFIER)
    assert result.exit_code == 0, result.output
    assert f"ok   {EMBEDDER} recall: recall@10 " in result.output
    assert f"ok   {CLASSIFIER} coverage: " in result.output
    assert "ok   * lag: 0 events behind" in result.output
    assert f"mixed state {EMBEDDER}: " in result.output
    assert result.output.rstrip().endswith("verify: all checks passed")

    data = json.loads(_cli(bootstrap, topics, home, "--model", EMBEDDER, "--json").output)
    assert data["passed"] is True
    assert data["serving"][EMBEDDER]["version"] == "v1"
    assert data["mixed"][0]["mixed"] > 0


def test_cli_failed_check_exit_1_and_fail_on_mixed(bootstrap, served):
    topics, home, _ = served
    result = _cli(bootstrap, topics, home, "--model", EMBEDDER, "--fail-on-mixed")
    assert result.exit_code == 1, result.output
    assert f"FAIL {EMBEDDER} mixed: " in result.output
    assert "verify: 1 check(s) FAILED" in result.output


def test_cli_nothing_serving_is_one_line_exit_2(bootstrap, served):
    topics, home, _ = served
    result = _cli(bootstrap, topics, home, "--model", "no-such-model")
    assert result.exit_code == 2
    assert "has no serving pointer" in result.output
    assert "Traceback" not in result.output


def test_unexpected_annoy_layout_falls_back_to_annoy_reads(bootstrap, served, monkeypatch):
    import ledger.checks.index_facts

    topics, home, _ = served
    wrong = {k: v + 1 for k, v in ledger.checks.index_facts._HEADER_WORDS.items()}
    monkeypatch.setattr(ledger.checks.index_facts, "_HEADER_WORDS", wrong)

    report = verify(bootstrap, topics, home, EMBEDDER)

    assert report.passed, _failed(report)
    assert _by_name(report, EMBEDDER)["purity"].figures["vector_differs"] == 0


def test_store_behind_the_artifact_fails_position_and_skips_count_and_purity(served):
    topics, home, _ = served
    for shard in (home / "shards").glob("*.duckdb"):
        shard.unlink()  # e.g. a fresh home given an artifact: the store knows nothing yet

    report = verify(None, topics, home, EMBEDDER)

    assert _failed(report) == [(EMBEDDER, "position")]
    assert [c.name for c in report.checks] == ["checksum", "position", "switch"]
    behind = report.checks[1].figures["behind"]
    first, at = next(iter(behind.items()))
    assert report.checks[1].detail == (
        f"the store is behind the artifact on {len(behind)} partitions (e.g. {first}: "
        f"artifact {at['artifact']}, store 0); materialise the log up to it first"
    )


def test_recall_check_calibrates_the_serving_search_k_and_serving_uses_it(
    bootstrap, make_topics, tmp_path
):
    """The same 1-tree index passes once search_k is calibrated; the pointer records it and
    both serving (open_index) and a later verify query with it."""
    topics, home, model = _serve_one_tree_index(bootstrap, make_topics, tmp_path)
    pointer = current(home, model)
    folder = pointer.artifact_path(home)

    with open_artifact(folder) as reader:
        facts = read_facts(folder, reader)
        default = measure_recall(facts, reader, sample=100)
        tuned = measure_recall(facts, reader, sample=100, calibrate_to=0.95)
    assert default.recall < 0.9 <= 0.95 <= tuned.recall
    assert tuned.search_k > 11  # more than Annoy's default (1 tree x (k + 1))

    switch(home, model, folder, info={"search_k": tuned.search_k})
    with open_index(home, model) as index:
        assert index.search_k == tuned.search_k
    report = verify(
        bootstrap, topics, home, model, recall=RecallSpec(0.9, 100, search_k=SearchK.serving())
    )
    recall = _by_name(report, model)["recall"]
    assert recall.passed and recall.figures["search_k"] == tuned.search_k
