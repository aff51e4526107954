"""Comparing two model versions: planted disagreement must come back as measured figures."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from ledger.demo.textembed import TextEmbedder, synthetic_corpus
from ledger.errors import GateSpecError, LedgerError
from ledger.ops.gates import GATE_METRICS, evaluate_gates, parse_gates
from ledger.ops.metrics import compare_decisions, compare_embeddings, write_table

CLUSTERS, SIZE, DIM = 40, 20, 24  # half the clusters (20) hold 20 members: a 20 x 20 transpose


def planted_pair(seed=0):
    """A and B over the same 800 entities plus 30 only-A and 25 only-B entities.

    Tight, far-apart clusters of 20. In B the first half of the clusters is "rotated":
    member j of cluster i moves to cluster j, so its new mates share none of its old ones
    (overlap 0) while the other half keep their vectors (overlap 1): population mean 0.5.
    The one-version entities sit on cluster centres, nearer than any member, so they
    would spoil the figure if they were not left out.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)) * 10
    cluster = np.repeat(np.arange(CLUSTERS), SIZE)
    a = centres[cluster] + rng.standard_normal((CLUSTERS * SIZE, DIM)) * 0.1
    b = a.copy()
    half = CLUSTERS // 2
    for i in range(half):
        for j in range(SIZE):
            b[i * SIZE + j] = centres[j] + rng.standard_normal(DIM) * 0.1
    ids = np.array([f"e{i:05d}" for i in range(CLUSTERS * SIZE)])
    only_a = [f"a{i:03d}" for i in range(30)]
    only_b = [f"b{i:03d}" for i in range(25)]
    ids_a = np.concatenate([ids, only_a])
    ids_b = np.concatenate([ids, only_b])
    va = np.concatenate([a, centres[np.arange(30) % CLUSTERS]])
    vb = np.concatenate([b, centres[np.arange(25) % CLUSTERS]])
    # B arrives in another row order, as a store query without ORDER BY may return it.
    perm = rng.permutation(len(ids_b))
    return ids_a, va.astype(np.float32), ids_b[perm], vb[perm].astype(np.float32)


@pytest.mark.parametrize("metric", ["euclidean", "angular"])
def test_half_rotated_neighbourhoods_report_overlap_one_half(metric):
    ids_a, va, ids_b, vb = planted_pair()
    report = compare_embeddings(ids_a, va, ids_b, vb, metric=metric, k=10, sample=300, seed=1)
    assert report.coverage.to_dict() == {
        "only_a": 30,
        "only_b": 25,
        "both": 800,
        "coverage_a": 800 / 830,
        "coverage_b": 800 / 825,
    }
    assert report.sample_size == 300 and report.k == 10
    # Each sampled entity shares all or none of its neighbours: nothing in between.
    hist = report.overlap_histogram
    assert len(hist) == 11 and sum(hist) == 300 and hist[1:10] == (0,) * 9
    assert report.overlap_mean == hist[10] / 300
    assert abs(report.overlap_mean - 0.5) < 3 * report.overlap_stderr
    assert 0.02 < report.overlap_stderr < 0.03  # ~ 0.5 / sqrt(300), shrunk by 300 of 800
    q = dict(report.overlap_quantiles)
    assert (q["p0"], q["p100"]) == (0.0, 1.0)
    assert all(o == 0.0 for _, o in report.most_changed) and len(report.most_changed) == 10


def test_sampling_every_entity_gives_the_exact_figure_and_zero_error():
    ids_a, va, ids_b, vb = planted_pair()
    report = compare_embeddings(ids_a, va, ids_b, vb, metric="euclidean", sample=10_000)
    assert report.sample_size == 800
    assert report.overlap_mean == 0.5
    assert report.overlap_stderr == 0.0


def test_report_does_not_depend_on_row_order_and_repeats_with_the_seed():
    ids_a, va, ids_b, vb = planted_pair()
    perm = np.random.default_rng(9).permutation(len(ids_a))
    first = compare_embeddings(ids_a, va, ids_b, vb, sample=200, seed=4).to_dict()
    shuffled = compare_embeddings(ids_a[perm], va[perm], ids_b, vb, sample=200, seed=4).to_dict()
    other_seed = compare_embeddings(ids_a, va, ids_b, vb, sample=200, seed=5).to_dict()
    assert first == shuffled
    assert first["most_changed"] != other_seed["most_changed"]


@pytest.mark.parametrize("metric", ["euclidean", "angular"])
def test_a_rotated_basis_keeps_every_neighbourhood(metric):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((500, 16))
    rotation, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    ids = [f"e{i}" for i in range(500)]
    report = compare_embeddings(ids, vectors, ids, vectors @ rotation, metric=metric, sample=100)
    assert report.overlap_mean == 1.0 and report.overlap_histogram[-1] == 100


def test_two_text_embedder_versions_agree_on_part_of_each_neighbourhood():
    # Each version searched in its own space: both are topical, so neighbourhoods overlap
    # far above chance (10 / 2000) but differ in the detail their projections keep.
    corpus = synthetic_corpus(2000)
    v1, v2 = TextEmbedder("v1").embed(corpus.texts), TextEmbedder("v2").embed(corpus.texts)
    same = compare_embeddings(corpus.ids, v1, corpus.ids, v1, sample=200)
    across = compare_embeddings(corpus.ids, v1, corpus.ids, v2, sample=200)
    assert same.overlap_mean == 1.0
    assert across.overlap_mean is not None and 0.1 < across.overlap_mean < 0.8


def test_no_common_entities_measures_nothing_and_fails_every_gate():
    report = compare_embeddings(["x"], np.ones((1, 4)), ["y"], np.ones((1, 4)))
    assert report.overlap_mean is None and report.coverage.coverage_a == 0.0
    gates = evaluate_gates("overlap>=0.1", report)
    assert not gates.passed and gates.results[0].value is None


def test_duplicate_ids_are_refused():
    with pytest.raises(ValueError, match="duplicate"):
        compare_embeddings(["a", "a"], np.ones((2, 2)), ["a"], np.ones((1, 2)))


def planted_decisions():
    """2000 subjects in both, 7% (140) flipped in B; 50 only in A, 30 only in B."""
    rng = np.random.default_rng(11)
    subjects = [f"s{i:05d}" for i in range(2000)]
    labels_a = rng.choice(["ham", "spam", "unsure"], size=2000, p=[0.7, 0.2, 0.1])
    flipped = np.sort(rng.choice(2000, size=140, replace=False))
    labels_b = labels_a.copy()
    swap = {"ham": "spam", "spam": "ham", "unsure": "ham"}
    labels_b[flipped] = [swap[x] for x in labels_a[flipped]]
    a = pa.table(
        {
            "subject_id": subjects + [f"x{i}" for i in range(50)],
            "label": list(labels_a) + ["ham"] * 50,
        }
    )
    perm = rng.permutation(2030)
    b_subjects = np.array(subjects + [f"y{i}" for i in range(30)])[perm]
    b_labels = np.array(list(labels_b) + ["spam"] * 30)[perm]
    b = pa.table({"subject_id": b_subjects, "label": b_labels})
    return a, b, labels_a, labels_b, {subjects[i] for i in flipped}


def test_seven_percent_flipped_labels_report_agreement_093_and_the_flips():
    a, b, labels_a, labels_b, flipped = planted_decisions()
    report = compare_decisions(a, b, version_a="v2", version_b="v1")
    assert report.agreement == 0.93 and report.agreed == 1860
    assert report.coverage.to_dict() == {
        "only_a": 50,
        "only_b": 30,
        "both": 2000,
        "coverage_a": 2000 / 2050,
        "coverage_b": 2000 / 2030,
    }
    assert report.labels == ("ham", "spam", "unsure")
    for i, la in enumerate(report.labels):
        for j, lb in enumerate(report.labels):
            assert report.confusion[i][j] == int(((labels_a == la) & (labels_b == lb)).sum())
    table = report.flipped
    assert table.column_names == ["subject_id", "label_a", "label_b"]
    assert set(table["subject_id"].to_pylist()) == flipped
    assert table["subject_id"].to_pylist() == sorted(flipped)
    assert all(
        x != y
        for x, y in zip(table["label_a"].to_pylist(), table["label_b"].to_pylist(), strict=True)
    )
    assert json.loads(json.dumps(report.to_dict()))["flipped"] == 140


def test_flipped_subjects_round_trip_through_parquet_and_csv(tmp_path):
    a, b, *_ = planted_decisions()
    flipped = compare_decisions(a, b).flipped
    assert pq.read_table(write_table(flipped, tmp_path / "flips.parquet")).equals(flipped)
    from_csv = pacsv.read_csv(write_table(flipped, tmp_path / "flips.csv"))
    assert from_csv.to_pylist() == flipped.to_pylist()


def test_decision_table_without_a_label_column_is_refused():
    with pytest.raises(ValueError, match="label"):
        compare_decisions(pa.table({"subject_id": ["s"]}), pa.table({"subject_id": ["s"]}))


def test_gates_pass_and_fail_with_their_figures():
    a, b, *_ = planted_decisions()
    report = compare_decisions(a, b)
    result = evaluate_gates("agreement>=0.95, coverage_a>0.9, coverage_b<=1", report)
    assert [(str(r.gate), r.value, r.passed) for r in result.results] == [
        ("agreement>=0.95", 0.93, False),
        ("coverage_a>0.9", 2000 / 2050, True),
        ("coverage_b<=1", 2000 / 2030, True),
    ]
    assert not result.passed and [str(r.gate) for r in result.failed] == ["agreement>=0.95"]
    assert evaluate_gates("agreement>=0.9,agreement<0.94", report).passed
    assert json.loads(json.dumps(result.to_dict()))["passed"] is False


def test_a_gate_on_a_figure_the_comparison_lacks_fails():
    a, b, *_ = planted_decisions()
    result = evaluate_gates("overlap>=0", compare_decisions(a, b))
    assert not result.passed and result.results[0].value is None


def test_gate_spec_parses_every_metric_and_operator():
    gates = parse_gates("agreement>=0.95,overlap>0.6, coverage_a <= 1 ,coverage_b<0.5")
    assert [(g.metric, g.op, g.threshold) for g in gates] == [
        ("agreement", ">=", 0.95),
        ("overlap", ">", 0.6),
        ("coverage_a", "<=", 1.0),
        ("coverage_b", "<", 0.5),
    ]
    assert {g.metric for g in gates} == set(GATE_METRICS)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "  ",
        "agreement",
        "agreemnt>=0.9",
        "agreement=>0.9",
        "agreement==0.9",
        "agreement>=95",
        "agreement>=-0.1",
        "agreement>=abc",
        "agreement>=nan",
        "agreement>=0.9,",
        "agreement>=0.9 overlap>=0.5",
    ],
)
def test_bad_gate_spec_says_what_a_valid_one_looks_like(spec):
    with pytest.raises(GateSpecError) as info:
        parse_gates(spec)
    assert isinstance(info.value, LedgerError)
    assert "'agreement>=0.95,overlap>=0.6'" in str(info.value)
    assert info.value.spec == spec


def test_decisions_accept_the_arrow_string_types_a_store_returns():
    a = pa.table(
        {
            "subject_id": pa.array(["s1", "s2"], pa.large_string()),
            "label": pa.array(["ham", "spam"]).dictionary_encode(),
        }
    )
    b = pa.table(
        {
            "subject_id": pa.chunked_array([["s2"], ["s1", "s3"]]),
            "label": pa.chunked_array([["ham"], ["ham", "spam"]]),
        }
    )
    report = compare_decisions(a, b)
    assert (report.agreed, report.coverage.only_b) == (1, 1)
    assert report.flipped.to_pylist() == [{"subject_id": "s2", "label_a": "spam", "label_b": "ham"}]


def test_no_common_subjects_give_no_agreement_figure():
    report = compare_decisions(
        pa.table({"subject_id": ["x"], "label": ["ham"]}),
        pa.table({"subject_id": ["y"], "label": ["ham"]}),
    )
    assert report.agreement is None and report.confusion == () and report.flipped.num_rows == 0
