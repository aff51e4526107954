"""``ledger compare`` and ``ledger promote`` on a planted pair of model versions, through
the real broker and real DuckDB: the planted disagreement comes back as figures, the
gates give their exit codes, and a failed gate switches nothing."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from test_compare import planted_decisions, planted_pair

from ledger import Producer, content_hash
from ledger.cli import cli
from ledger.contract.schemas import default_store
from ledger.contract.wire import decode
from ledger.log.reading import read_to_end
from ledger.serving.pointers import current

pytestmark = pytest.mark.kafka

EMB, CLF = "planted-embedder", "planted-classifier"


@pytest.fixture
def planted(bootstrap, topics):
    """v1 = A, v2 = B of test_compare's planted pair (half the neighbourhoods rotated,
    7% of common subjects flipped); v1 serves both models."""
    ids_a, va, ids_b, vb = planted_pair()
    a, b, _, _, flipped = planted_decisions()
    with Producer(bootstrap=bootstrap, name="planter", topics=topics) as producer:
        for v in ("v1", "v2"):
            producer.register_model_version(
                EMB, v, kind="embedding", dimension=va.shape[1], metric="euclidean"
            )
            producer.register_model_version(
                CLF, v, kind="classifier", labels=["ham", "spam", "unsure"]
            )
        for version, ids, vectors in (("v1", ids_a, va), ("v2", ids_b, vb)):
            producer.write_embeddings(
                EMB,
                version,
                list(ids),
                vectors,
                content_sha256s=[content_hash(str(e)) for e in ids],
            )
        for version, table in (("v1", a), ("v2", b)):
            for subject, label in zip(
                table["subject_id"].to_pylist(), table["label"].to_pylist(), strict=True
            ):
                producer.record_decision(
                    CLF, version, subject, label, score=0.5, input_sha256=content_hash(subject)
                )
        for model in (EMB, CLF):
            producer.record_deployment(
                model, to_version="v1", from_version=None, reason="initial", actor="test"
            )
        producer.flush()
    return flipped


def _ledger(bootstrap, topics, home, *args):
    base = ["--bootstrap", bootstrap, "--home", str(home), "--topic-prefix", topics.prefix]
    return CliRunner().invoke(cli, [*base, *args])


def _deployments(bootstrap, topics):
    out = []
    for message in read_to_end(bootstrap, [topics.models]):
        name, record = decode(default_store(), message.value)
        if name == "DeploymentChanged":
            out.append(record)
    return out


def test_compare_reports_the_planted_disagreement_and_gate_exit_codes(
    bootstrap, topics, tmp_path, planted
):
    out = tmp_path / "report"
    compare = [
        "compare",
        "--model",
        EMB,
        "--model",
        CLF,
        "v1",
        "v2",
        "--sample",
        "300",
        "--seed",
        "1",
        "--out",
        str(out),
        "--json",
    ]
    result = _ledger(
        bootstrap,
        topics,
        tmp_path,
        *compare,
        "--gate",
        "agreement>=0.9,overlap>=0.3,coverage_a>0.95",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)

    emb = data["models"][EMB]
    assert emb["kind"] == "embeddings" and emb["k"] == 10 and emb["sample_size"] == 300
    assert emb["coverage"] == {
        "only_a": 30,
        "only_b": 25,
        "both": 800,
        "coverage_a": 800 / 830,
        "coverage_b": 800 / 825,
    }
    # Planted: half the entities keep all 10 neighbours, half keep none; mean 0.5.
    hist = emb["overlap_histogram"]
    assert sum(hist) == 300 and hist[1:10] == [0] * 9
    assert abs(emb["overlap_mean"] - 0.5) < 3 * emb["overlap_stderr"]
    assert 0.02 < emb["overlap_stderr"] < 0.03

    clf = data["models"][CLF]
    assert clf["agreement"] == 0.93 and clf["flipped"] == 140 and clf["agreed"] == 1860
    assert clf["coverage"]["both"] == 2000
    assert clf["confusion"]["labels"] == ["ham", "spam", "unsure"]
    counts = np.array(clf["confusion"]["counts"])
    assert counts.sum() == 2000 and np.trace(counts) == 1860

    parquet = pq.read_table(out / f"{CLF}.flipped.parquet")
    assert set(parquet["subject_id"].to_pylist()) == planted
    assert pacsv.read_csv(out / f"{CLF}.flipped.csv").to_pylist() == parquet.to_pylist()
    assert sorted(data["flipped_files"]) == sorted(
        str(out / f"{CLF}.flipped.{s}") for s in ("csv", "parquet")
    )
    # coverage_a is measured on both models: one result each.
    assert [(g["model"], g["gate"], g["passed"]) for g in data["gates"]["gates"]] == [
        (CLF, "agreement>=0.9", True),
        (EMB, "overlap>=0.3", True),
        (EMB, "coverage_a>0.95", True),
        (CLF, "coverage_a>0.95", True),
    ]

    failed = _ledger(bootstrap, topics, tmp_path, *compare, "--gate", "agreement>=0.95")
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["gates"]["passed"] is False

    human = _ledger(bootstrap, topics, tmp_path, *compare[:-1], "--gate", "overlap>=0.9")
    assert human.exit_code == 1
    assert "FAIL overlap>=0.9 on planted-embedder" in human.output

    unmeasured = _ledger(
        bootstrap,
        topics,
        tmp_path,
        "compare",
        "--model",
        EMB,
        "v1",
        "v2",
        "--gate",
        "agreement>=0.5",
    )
    assert unmeasured.exit_code == 1  # no model measures agreement: not a pass
    assert "no model measures it: not measured" in unmeasured.output

    bad_spec = _ledger(bootstrap, topics, tmp_path, *compare, "--gate", "agreement>=95")
    assert bad_spec.exit_code == 2 and "'agreement>=0.95,overlap>=0.6'" in bad_spec.output

    unknown = _ledger(bootstrap, topics, tmp_path, "compare", "--model", CLF, "v1", "v9")
    assert unknown.exit_code == 2
    assert "version v9 is not registered (known versions: v1, v2)" in unknown.output


def test_promote_refuses_on_a_failed_gate_and_switches_on_a_passing_one(
    bootstrap, topics, tmp_path, planted
):
    promote = ["promote", "--model", EMB, "--model", CLF, "--to", "v2", "--yes"]
    refused = _ledger(bootstrap, topics, tmp_path, *promote, "--gate", "agreement>=0.95")
    assert refused.exit_code == 1, refused.output
    assert "Refused: agreement>=0.95 on planted-classifier: 0.9300" in refused.output
    assert current(tmp_path, EMB) is None and current(tmp_path, CLF) is None
    assert not (tmp_path / "artifacts").exists()
    assert len(_deployments(bootstrap, topics)) == 2  # only the initial ones

    dry = _ledger(
        bootstrap, topics, tmp_path, *promote, "--dry-run", "--json", "--gate", "agreement>=0.9"
    )
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["switched"] is False and current(tmp_path, CLF) is None

    passed = _ledger(
        bootstrap, topics, tmp_path, *promote, "--json", "--gate", "agreement>=0.9,overlap>=0.3"
    )
    assert passed.exit_code == 0, passed.output
    data = json.loads(passed.stdout)
    assert data["against"] == {EMB: "v1", CLF: "v1"}
    assert data["switched"] is True and data["gates"]["passed"] is True
    assert current(tmp_path, EMB).version == "v2" and current(tmp_path, CLF).version == "v2"
    promoted = [d for d in _deployments(bootstrap, topics) if d["reason"].startswith("promotion")]
    assert {(d["model"], d["model_version"], d["from_version"]) for d in promoted} == {
        (EMB, "v2", "v1"),
        (CLF, "v2", "v1"),
    }
    assert promoted[0]["reason"] == "promotion to v2 (gates agreement>=0.9,overlap>=0.3)"
