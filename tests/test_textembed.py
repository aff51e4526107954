"""The demo's toy models: deterministic, topical within a version, unrelated across versions."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from ledger.checks.exact import exact_topk, recall_at_k
from ledger.demo.textembed import LABELS, SPAM_TOPICS, TextEmbedder, ToyClassifier, synthetic_corpus

N = 4000


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus(N, seed=3)


@pytest.fixture(scope="module")
def vectors(corpus):
    return {v: TextEmbedder(v).embed(corpus.texts) for v in ("v1", "v2")}


def same_cluster_rate(corpus, index_vectors, query_vectors, queries, *, exclude):
    idx, _ = exact_topk(
        index_vectors, query_vectors[queries], 10, "angular", exclude=queries if exclude else None
    )
    rate = corpus.same_cluster_rate(queries, idx)
    cluster = np.asarray(corpus.clusters)
    assert rate == float((cluster[idx] == cluster[queries, None]).mean())
    return rate


def test_corpus_is_a_function_of_n_and_seed(corpus):
    again = synthetic_corpus(N, seed=3)
    assert again == corpus
    assert synthetic_corpus(N, seed=4).texts != corpus.texts
    assert synthetic_corpus(N, seed=4).ids == corpus.ids  # ids are stable across seeds
    assert synthetic_corpus(1500, seed=3).texts == corpus.texts[:1500]  # a prefix
    assert len(set(corpus.ids)) == N and corpus.ids[12] == "doc-000012"
    assert set(corpus.clusters) == set(range(len(corpus.topics)))
    table = corpus.to_table()
    assert table.num_rows == N and table.column_names == ["entity_id", "text", "topic"]


def test_embeddings_are_unit_float32_rows_of_the_dimension(corpus, vectors):
    v1 = vectors["v1"]
    assert v1.dtype == np.float32 and v1.shape == (N, 64)
    np.testing.assert_allclose(np.linalg.norm(v1, axis=1), 1.0, rtol=1e-5)
    assert TextEmbedder("v1", dimension=32).embed(["a b c"]).shape == (1, 32)
    assert not TextEmbedder("v1").embed([""]).any()  # no 3-gram: a zero row, not NaN


def test_embedding_is_byte_identical_across_processes_batches_and_hash_seeds(corpus, vectors):
    # Python's hash() of str changes with PYTHONHASHSEED; the embedder must not use it.
    code = (
        "import sys; from ledger.demo.textembed import TextEmbedder, synthetic_corpus;"
        "sys.stdout.buffer.write(TextEmbedder('v1').embed(synthetic_corpus(50, seed=3).texts)"
        ".tobytes())"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        )
        assert out.stdout == vectors["v1"][:50].tobytes()
    assert TextEmbedder("v1").embed(corpus.texts[7:8]).tobytes() == vectors["v1"][7].tobytes()


def test_similar_texts_are_neighbours_within_a_version(corpus, vectors):
    queries = np.arange(0, N, 20)
    for version in ("v1", "v2"):
        rate = same_cluster_rate(corpus, vectors[version], vectors[version], queries, exclude=True)
        assert rate > 0.8, version


def test_a_v1_query_against_v2_vectors_finds_noise(corpus, vectors):
    queries = np.arange(0, N, 20)
    rate = same_cluster_rate(corpus, vectors["v2"], vectors["v1"], queries, exclude=False)
    chance = 1 / len(corpus.topics)
    assert rate < chance + 0.1


def test_a_mixed_index_loses_the_entities_of_the_other_version(corpus, vectors):
    # Half the entities carry v2 vectors (the incident): v1 queries no longer find them.
    moved = np.random.default_rng(0).random(N) < 0.5
    mixed = np.where(moved[:, None], vectors["v2"], vectors["v1"])
    queries = np.arange(0, N, 20)
    truth, _ = exact_topk(vectors["v1"], vectors["v1"][queries], 10, exclude=queries)
    found, _ = exact_topk(mixed, vectors["v1"][queries], 10, exclude=queries)
    assert recall_at_k(found, truth) < 0.65
    assert recall_at_k(truth, truth) == 1.0


def test_embedding_ten_thousand_texts_is_fast():
    texts = synthetic_corpus(10_000).texts
    started = time.perf_counter()
    TextEmbedder("v1").embed(texts)
    assert time.perf_counter() - started < 5.0  # ~0.2 s on 2 cores; generous when shared


def test_classifier_labels_by_topic_and_v2_flips_a_known_share(corpus):
    labels_v1, scores = ToyClassifier("v1").classify(corpus.texts)
    labels_v2, _ = ToyClassifier("v2").classify(corpus.texts)
    assert set(labels_v1) <= set(LABELS) and scores.shape == (N,)
    spam_topic = np.array([corpus.topics[c] in SPAM_TOPICS for c in corpus.clusters])
    is_spam = np.array([label == "spam" for label in labels_v1])
    assert (is_spam == spam_topic).mean() > 0.95
    disagree = np.mean([a != b for a, b in zip(labels_v1, labels_v2, strict=True)])
    assert abs(disagree - 0.07) < 0.02  # binomial sd at n=4000 is 0.004
    assert ToyClassifier("v2").classify(corpus.texts)[0] == labels_v2
    assert ToyClassifier("v3", flip=0.0).classify(corpus.texts)[0] == labels_v1
