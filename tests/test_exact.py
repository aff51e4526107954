"""Exact top-k against brute force and against Annoy's own distance definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from annoy import AnnoyIndex

from ledger.checks.exact import METRICS, exact_topk, overlap_per_query, recall_at_k


def brute_force(corpus, queries, k, metric, exclude=None):
    """Full float64 distance matrix, full sort by (distance, index): the reference."""
    c = np.asarray(corpus, np.float64)
    q = np.asarray(queries, np.float64)
    if metric == "angular":
        cn = np.linalg.norm(c, axis=1, keepdims=True)
        qn = np.linalg.norm(q, axis=1, keepdims=True)
        cos = (q / np.where(qn == 0, 1, qn)) @ (c / np.where(cn == 0, 1, cn)).T
        dist = np.sqrt(np.maximum(2 - 2 * cos, 0))
        key = dist.copy()
    elif metric == "euclidean":
        dist = np.sqrt(((q[:, None, :] - c[None, :, :]) ** 2).sum(-1))
        key = dist.copy()
    else:
        dist = q @ c.T
        key = -dist
    if exclude is not None:
        key[np.arange(len(q)), exclude] = np.inf
    idx = np.array([np.lexsort((np.arange(len(c)), row))[:k] for row in key])
    return idx, np.take_along_axis(dist, idx, 1)


def corpus_with_ties(seed=0, n=2000, d=12):
    rng = np.random.default_rng(seed)
    corpus = rng.standard_normal((n, d)).astype(np.float32)
    corpus[100:115] = corpus[7]  # 16 identical rows: ties wider than k
    corpus[500] = 0.0  # a zero vector
    return corpus


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("blocks", [(1024, 8192), (37, 101)])
def test_exact_topk_equals_brute_force_with_ties_for_every_metric(metric, blocks):
    corpus = corpus_with_ties()
    queries = np.concatenate(
        [corpus[:40], corpus[[7, 100, 500]], np.random.default_rng(1).standard_normal((60, 12))]
    )
    want_idx, want_dist = brute_force(corpus, queries, 10, metric)
    idx, dist = exact_topk(
        corpus, queries, 10, metric, query_block=blocks[0], corpus_block=blocks[1]
    )
    assert idx.dtype == np.int64 and idx.shape == (103, 10)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(dist, want_dist, atol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_exact_topk_is_exact_when_nearest_rows_come_last(metric):
    # Corpus sorted farthest-first: every block beats the previous bar (the slow path).
    rng = np.random.default_rng(2)
    corpus = rng.standard_normal((3000, 8))
    query = rng.standard_normal((1, 8))
    key = brute_force(corpus, query, 3000, metric)[0][0]
    corpus = corpus[key[::-1]]
    want, _ = brute_force(corpus, query, 15, metric)
    idx, _ = exact_topk(corpus, query, 15, metric, corpus_block=500)
    np.testing.assert_array_equal(idx, want)


def test_identical_vectors_come_back_in_index_order_whatever_the_blocks():
    corpus = np.ones((300, 4), np.float32)
    for block in (7, 64, 1000):
        idx, dist = exact_topk(
            corpus, corpus[[5]], 10, "euclidean", exclude=[5], corpus_block=block
        )
        assert idx[0].tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]
        assert dist.max() == 0.0


@pytest.mark.parametrize("metric", METRICS)
def test_exclude_and_allowed_restrict_the_candidates(metric):
    corpus = corpus_with_ties(seed=3, n=800)
    allowed = np.random.default_rng(4).random(800) < 0.3
    rows = np.flatnonzero(allowed)[:50]
    idx, _ = exact_topk(
        corpus, corpus[rows], 10, metric, exclude=rows, allowed=allowed, corpus_block=97
    )
    sub = corpus[allowed]
    want, _ = brute_force(sub, corpus[rows], 10, metric, exclude=np.arange(50))
    np.testing.assert_array_equal(idx, np.flatnonzero(allowed)[want])
    assert all(r not in row for r, row in zip(rows, idx, strict=True))


@pytest.mark.parametrize("metric", METRICS)
def test_distances_are_annoys_distances(metric):
    rng = np.random.default_rng(5)
    corpus = rng.standard_normal((200, 16)).astype(np.float32)
    index = AnnoyIndex(16, metric)
    for i, v in enumerate(corpus):
        index.add_item(i, v.tolist())
    index.build(2, n_jobs=1)
    idx, dist = exact_topk(corpus, corpus[:20], 10, metric, exclude=np.arange(20))
    for q in range(20):
        for j, d in zip(idx[q], dist[q], strict=True):
            assert math.isclose(index.get_distance(q, int(j)), d, rel_tol=1e-4, abs_tol=1e-4)


def test_zero_vector_is_sqrt2_from_everything_under_angular():
    corpus = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    _, dist = exact_topk(corpus, [[0.0, 0.0]], 3, "angular")
    np.testing.assert_allclose(dist[0], [math.sqrt(2)] * 3)


def test_width_shrinks_to_the_candidates_available():
    corpus = np.eye(3)
    assert exact_topk(corpus, corpus, 10, "dot")[0].shape == (3, 3)
    assert exact_topk(corpus, corpus, 10, "dot", exclude=[0, 1, 2])[0].shape == (3, 2)
    idx, dist = exact_topk(corpus, corpus, 10, "dot", allowed=[False, False, False])
    assert idx.shape == (3, 0) and dist.shape == (3, 0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="metric"):
        exact_topk(np.eye(2), np.eye(2), 1, "cosine")
    with pytest.raises(ValueError, match="share d"):
        exact_topk(np.eye(2), np.eye(3), 1)
    with pytest.raises(ValueError, match="exclude"):
        exact_topk(np.eye(2), np.eye(2), 1, exclude=[0, 2])


def test_recall_counts_each_true_neighbour_once():
    exact = [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert recall_at_k([[0, 1, 2, 3], [4, 5, 6, 7]], exact) == 1.0
    assert recall_at_k([[3, 2, 9, 9], [-1, -1, -1, -1]], exact) == 0.25
    np.testing.assert_allclose(overlap_per_query([[0, 0, 0, 1], [7, 8, 9, 4]], exact), [0.5, 0.5])
    with pytest.raises(ValueError, match="zero queries"):
        recall_at_k(np.zeros((0, 10)), np.zeros((0, 10)))
