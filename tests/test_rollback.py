"""The seed's incident end to end on the real broker and real DuckDB: rollback to v1
gives exactly the state v1 would have produced; rolling forward to v2 works the same way."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from scenario import CLASSIFIER, EMBEDDER, play_incident

from ledger import Producer, content_hash
from ledger.artifacts.decision_table import read_decision_table
from ledger.contract.schemas import default_store
from ledger.contract.wire import decode
from ledger.errors import RollbackInProgress
from ledger.log.reading import read_to_end
from ledger.ops.kinds import Hooks
from ledger.ops.rollback import RollbackOptions, rollback
from ledger.serving.locks import rollback_lock
from ledger.serving.open import open_index
from ledger.serving.pointers import current

pytestmark = pytest.mark.kafka

MODELS = [EMBEDDER, CLASSIFIER]


@pytest.fixture
def incident(bootstrap, topics):
    with Producer(bootstrap=bootstrap, name="search-api", topics=topics) as producer:
        expected = play_incident(producer)
    return expected


def _deployments(bootstrap, topics):
    out = []
    for message in read_to_end(bootstrap, [topics.models]):
        name, record = decode(default_store(), message.value)
        if name == "DeploymentChanged":
            out.append(record)
    return out


def test_dry_run_plans_exact_sets_and_changes_nothing(bootstrap, topics, tmp_path, incident):
    result = rollback(bootstrap, topics, tmp_path, MODELS, to="v1", dry_run=True)

    emb, clf = result.plan.models
    assert emb.live == len(incident.live())
    assert emb.items == len(incident.items("v1"))
    assert set(emb.gap) == incident.gap("v1") and emb.gap
    assert set(emb.stale) == incident.stale("v1") and emb.stale
    assert clf.keep == len(incident.decision_table("v1"))
    assert set(clf.redecide) == incident.redecide("v1") and clf.redecide
    blast = set(clf.blast_radius.column("subject_id").to_pylist())
    assert blast == incident.blast_radius("v1", "v2") and blast
    assert clf.outgoing_version == "v2"
    assert not result.switched and not result.artifacts
    assert current(tmp_path, EMBEDDER) is None
    assert not (tmp_path / "artifacts").exists()
    assert len(_deployments(bootstrap, topics)) == 6  # only the incident's own


def test_rollback_rebuilds_exactly_v1_and_switches(bootstrap, topics, tmp_path, incident):
    result = rollback(
        bootstrap,
        topics,
        tmp_path,
        MODELS,
        to="v1",
        dry_run=False,
        options=RollbackOptions(reason="quality drop", actor="oncall"),
    )

    assert result.switched and all(c.passed for c in result.checks)
    want = incident.items("v1")
    with open_index(tmp_path, EMBEDDER) as index:
        assert sorted(index.item_ids) == sorted(want)
        for entity, vector in want.items():  # item by item against the log's v1 vectors
            np.testing.assert_array_equal(np.asarray(index.get_vector(entity), "<f4"), vector)
        query = next(iter(want.values()))
        ids = np.array(sorted(want))
        matrix = np.stack([want[e] for e in ids])
        cos = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
        assert index.query(query, 1)[0][0] == ids[int(np.argmax(cos))]

    table = read_decision_table(tmp_path / result.artifacts[CLASSIFIER])
    assert dict(
        zip(table.column("subject_id").to_pylist(), table.column("label").to_pylist(), strict=True)
    ) == incident.decision_table("v1")
    assert current(tmp_path, CLASSIFIER).version == "v1"
    recall = next(c for c in result.checks if c.model == EMBEDDER and c.name == "recall")
    assert current(tmp_path, EMBEDDER).info["search_k"] == recall.figures["search_k"]

    folder = tmp_path / result.report_dir
    blast = pq.read_table(folder / f"{CLASSIFIER}.blast_radius.parquet")
    assert set(blast.column("subject_id").to_pylist()) == incident.blast_radius("v1", "v2")
    assert (folder / f"{EMBEDDER}.gap.csv").read_text().count("\n") == len(incident.gap("v1")) + 1

    events = [d for d in _deployments(bootstrap, topics) if d["reason"] == "quality drop"]
    assert {(e["model"], e["model_version"], e["actor"]) for e in events} == {
        (EMBEDDER, "v1", "oncall"),
        (CLASSIFIER, "v1", "oncall"),
    }
    summary = next(e["summary"] for e in events if e["model"] == EMBEDDER)
    assert int(summary["gap"]) == len(incident.gap("v1"))
    assert summary["artifact"] == result.artifacts[EMBEDDER]


def test_roll_forward_to_v2_gives_v2_state(bootstrap, topics, tmp_path, incident):
    rollback(bootstrap, topics, tmp_path, MODELS, to="v1", dry_run=False)
    result = rollback(bootstrap, topics, tmp_path, MODELS, to="v2", dry_run=False)

    emb, clf = result.plan.models
    assert set(emb.gap) == incident.gap("v2")
    assert set(emb.stale) == incident.stale("v2")
    with open_index(tmp_path, EMBEDDER) as index:
        assert sorted(index.item_ids) == sorted(incident.items("v2"))
    table = read_decision_table(tmp_path / result.artifacts[CLASSIFIER])
    assert table.num_rows == len(incident.decision_table("v2"))
    assert current(tmp_path, EMBEDDER).version == "v2"


def test_full_replay_builds_byte_identical_artifacts(bootstrap, topics, tmp_path, incident):
    views = rollback(bootstrap, topics, tmp_path / "a", MODELS, to="v1", dry_run=False)
    replay = rollback(
        bootstrap,
        topics,
        tmp_path / "b",
        MODELS,
        to="v1",
        dry_run=False,
        options=RollbackOptions(full_replay=True),
    )

    for model in MODELS:
        a = tmp_path / "a" / views.artifacts[model]
        b = tmp_path / "b" / replay.artifacts[model]
        files_a = {p.name: p.read_bytes() for p in a.iterdir() if p.name != "manifest.json"}
        files_b = {p.name: p.read_bytes() for p in b.iterdir() if p.name != "manifest.json"}
        assert files_a == files_b and files_a


def test_second_rollback_of_a_model_is_refused_while_one_runs(
    bootstrap, topics, tmp_path, incident
):
    with rollback_lock(tmp_path, EMBEDDER), pytest.raises(RollbackInProgress):
        rollback(bootstrap, topics, tmp_path, MODELS, to="v1", dry_run=False)


def test_cli_dry_run_prints_plan_and_exit_0(ledger_cli, tmp_path, incident):
    args = ["rollback", "--model", EMBEDDER, "--model", CLASSIFIER, "--to", "v1"]
    result = ledger_cli(tmp_path, *args, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "gap (no v1 embedding)" in result.output
    assert "Dry run: nothing was changed." in result.output

    result = ledger_cli(tmp_path, *args, "--yes", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["switched"] is True
    assert {m["model"]: m["gap"] for m in data["models"] if "gap" in m} == {
        EMBEDDER: len(incident.gap("v1"))
    }


def test_cli_unknown_version_is_one_line_exit_2(ledger_cli, tmp_path, incident):
    result = ledger_cli(tmp_path, "rollback", "--model", EMBEDDER, "--to", "v9", "--dry-run")
    assert result.exit_code == 2
    assert "version v9 is not registered (known versions: v1, v2)" in result.output
    assert "Traceback" not in result.output


def test_rollback_waits_for_a_running_materialiser_instead_of_writing_its_shard(
    bootstrap, topics, tmp_path, incident
):
    import subprocess
    import sys
    import time

    consume = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledger",
            "--bootstrap",
            bootstrap,
            "--home",
            str(tmp_path),
            "--topic-prefix",
            topics.prefix,
            "consume",
            "--no-group",
            "--shard",
            "b",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "shards" / "b.duckdb").exists():  # it claimed its shard
            assert time.monotonic() < deadline and consume.poll() is None
            time.sleep(0.05)
        result = rollback(bootstrap, topics, tmp_path, MODELS, to="v1", dry_run=True)
        assert consume.poll() is None  # still the shard's writer: the rollback waited for it
    finally:
        consume.terminate()
        consume.wait(30)
    assert set(result.plan.models[0].gap) == incident.gap("v1")
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.duckdb")) == ["b.duckdb"]


def test_embedder_hook_fills_the_gap_through_the_log(bootstrap, topics, tmp_path, incident):
    calls: list[list[str]] = []

    def embed(ids: list[str]):
        calls.append(ids)
        rng = np.random.default_rng(len(ids))
        return rng.standard_normal((len(ids), 16)), [content_hash(f"refreshed {e}") for e in ids]

    result = rollback(
        bootstrap,
        topics,
        tmp_path,
        [EMBEDDER],
        to="v1",
        dry_run=False,
        options=RollbackOptions(hooks=Hooks(embedder=embed)),
    )

    todo = incident.gap("v1") | incident.stale("v1")
    assert {e for batch in calls for e in batch} == todo
    emb = result.plan.models[0]
    assert emb.gap == () and emb.stale == ()  # re-planned after the new v1 events
    with open_index(tmp_path, EMBEDDER) as index:
        assert set(index.item_ids) == incident.live()
    v1_writes = [
        decode(default_store(), m.value)[1] for m in read_to_end(bootstrap, [topics.embeddings])
    ]
    refreshed = {
        r["entity_id"]
        for r in v1_writes
        if r["model_version"] == "v1" and r["producer"] == "ledger"
    }
    assert refreshed == todo  # the log stays the source of truth
    (event,) = [d for d in _deployments(bootstrap, topics) if d["reason"] == "rollback"]
    assert int(event["summary"]["gap_before_fill"]) == len(incident.gap("v1"))
    assert int(event["summary"]["stale_before_fill"]) == len(incident.stale("v1"))
    assert event["summary"]["gap"] == "0"


def test_cli_rollback_asks_first_and_a_no_changes_nothing(ledger_cli, tmp_path, incident):
    result = ledger_cli(tmp_path, "rollback", "--model", EMBEDDER, "--to", "v1", input="n\n")
    assert result.exit_code == 0, result.output
    assert "Rebuild, verify and switch?" in result.output
    assert "Not confirmed: nothing was changed." in result.output
    assert current(tmp_path, EMBEDDER) is None
    assert not (tmp_path / "artifacts").exists()


def test_plan_eta_comes_from_the_homes_measured_rates(bootstrap, topics, tmp_path, incident):
    (tmp_path / "rates.json").write_text(json.dumps({"load": 100.0, "build": 16_000.0}))
    result = rollback(bootstrap, topics, tmp_path, [EMBEDDER], to="v1", dry_run=True)

    items = len(incident.items("v1"))
    trees = 50  # ledger.artifacts.index_build.DEFAULT_TREES
    assert result.plan.eta_seconds == pytest.approx(items / 100 + items * 16 * trees / 16_000)


def test_model_names_that_are_not_file_names_roll_back(bootstrap, topics, tmp_path):
    model = "team/emb"
    with Producer(bootstrap=bootstrap, name="svc", topics=topics) as producer:
        producer.register_model_version(model, "v1", kind="embedding", dimension=4, metric="dot")
        producer.write_embeddings(
            model,
            "v1",
            ["a", "b"],
            np.eye(2, 4),
            content_sha256s=[content_hash("a"), content_hash("b")],
        )
    result = rollback(bootstrap, topics, tmp_path, [model], to="v1", dry_run=False)

    assert result.switched and current(tmp_path, model).version == "v1"
    assert (tmp_path / result.report_dir / "team%2Femb.gap.csv").is_file()
    assert all(p.is_relative_to(tmp_path / "reports") for p in (tmp_path / "reports").rglob("*"))


def test_events_materialised_after_the_plan_stay_out_of_the_build(
    bootstrap, topics, tmp_path, incident
):
    from consumers.catchup import catch_up
    from ledger.artifacts.manifest import load_manifest

    def more_events_arrive(plan) -> bool:
        with Producer(bootstrap=bootstrap, name="late", topics=topics) as producer:
            producer.write_embeddings(
                EMBEDDER,
                "v1",
                ["late-1", "late-2"],
                np.ones((2, 16)),
                content_sha256s=[content_hash("l1"), content_hash("l2")],
            )
        catch_up(bootstrap, topics, tmp_path)  # as a running `ledger consume` would
        return True

    result = rollback(
        bootstrap,
        topics,
        tmp_path,
        [EMBEDDER],
        to="v1",
        dry_run=False,
        options=RollbackOptions(confirm=more_events_arrive),
    )

    manifest = load_manifest(tmp_path / result.artifacts[EMBEDDER])
    assert manifest.items == len(incident.items("v1")) == result.plan.models[0].items
    assert dict(manifest.log_offsets) == dict(result.plan.log_offsets)
    assert result.switched and all(c.passed for c in result.checks)


def test_rolling_to_a_version_with_no_embeddings_gives_an_empty_index_and_the_whole_gap(
    bootstrap, topics, tmp_path
):
    with Producer(bootstrap=bootstrap, name="svc", topics=topics) as producer:
        for version in ("v1", "v2"):
            producer.register_model_version(
                EMBEDDER, version, kind="embedding", dimension=4, metric="angular"
            )
            producer.register_model_version(
                CLASSIFIER, version, kind="classifier", labels=["ham", "spam"]
            )
        producer.write_embeddings(
            EMBEDDER,
            "v1",
            ["a", "b"],
            np.eye(2, 4),
            content_sha256s=[content_hash("a"), content_hash("b")],
        )
        producer.record_decision(
            CLASSIFIER, "v1", "a", "ham", score=1.0, input_sha256=content_hash("a")
        )
    result = rollback(bootstrap, topics, tmp_path, MODELS, to="v2", dry_run=False)

    emb, clf = result.plan.models
    assert (emb.items, set(emb.gap)) == (0, {"a", "b"})
    assert (clf.keep, clf.redecide) == (0, ("a",))
    assert result.switched, [c for c in result.checks if not c.passed]
    with open_index(tmp_path, EMBEDDER) as index:
        assert len(index) == 0


def test_a_decision_table_for_a_position_is_immutable(tmp_path):
    import pyarrow as pa

    from ledger.artifacts.decision_table import build_decision_table
    from ledger.errors import ArtifactError

    table = pa.table({"subject_id": ["a", "b"], "label": ["ham", "spam"]})
    first = build_decision_table(
        tmp_path, model="clf", version="v1", table=table, log_offsets={"t:0": 2}
    )
    again = build_decision_table(
        tmp_path, model="clf", version="v1", table=table, log_offsets={"t:0": 2}
    )
    assert again == first  # reused, not rewritten
    with pytest.raises(ArtifactError, match="different input"):
        build_decision_table(
            tmp_path,
            model="clf",
            version="v1",
            log_offsets={"t:0": 2},
            table=pa.table({"subject_id": ["a"], "label": ["spam"]}),
        )
