"""Exact nearest neighbours with numpy: the ground truth for recall checks and comparisons.

Distances follow Annoy's definitions, so an exact answer and an Annoy answer can be
compared figure for figure:

- ``"angular"``: ``sqrt(2 - 2 cos)`` (a zero vector is at ``sqrt(2)`` from everything);
- ``"euclidean"``: the L2 distance;
- ``"dot"``: the dot product itself, larger is nearer (what Annoy reports for ``dot``).

The search works block by block (a block of queries times a block of corpus rows,
one matrix product each) so a 1M x 384 float32 corpus never needs more than a few
tens of MB of scratch, and it may be a ``np.memmap``. Each block keeps only the rows
that can still enter a query's top k (a threshold from the best seen so far), so the
selection work after the first block is a comparison, not a partition. Candidates are
re-scored in float64 at the end and ordered by (distance, item index): equal distances
always come back in index order, whatever the block sizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

METRICS = ("angular", "euclidean", "dot")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# Scratch per block is query_block x corpus_block float32 (32 MB at the defaults): big
# enough for BLAS to run near peak, small enough to share a 2-core machine; 1000 sampled
# queries fit one query block, so the corpus is read (and normalised) once.
_QUERY_BLOCK = 1024
_CORPUS_BLOCK = 8192
# Coarse (float32) candidates kept beyond k, re-scored in float64: float32 rounding can
# only swap items whose distances agree to ~1e-6, far inside this margin.
_MIN_PAD = 8


def exact_topk(
    corpus: npt.ArrayLike,
    queries: npt.ArrayLike,
    k: int,
    metric: str = "angular",
    *,
    exclude: npt.ArrayLike | None = None,
    allowed: npt.ArrayLike | None = None,
    query_block: int = _QUERY_BLOCK,
    corpus_block: int = _CORPUS_BLOCK,
) -> tuple[IntArray, FloatArray]:
    """The exact ``k`` nearest corpus rows of every query, nearest first.

    Args:
        corpus: ``(n, d)`` vectors (any float dtype; a ``np.memmap`` works).
        queries: ``(q, d)`` vectors.
        k: neighbours per query.
        metric: ``"angular"``, ``"euclidean"`` or ``"dot"`` (Annoy's definitions).
        exclude: optional ``(q,)`` corpus row to leave out per query (the query itself
            when queries are corpus rows); ``-1`` leaves nothing out for that query.
        allowed: optional ``(n,)`` booleans; only rows marked True can be neighbours.
        query_block, corpus_block: block sizes (memory is about their product x 4 bytes).

    Returns:
        ``(indices, distances)``, both ``(q, w)`` with ``w = min(k, candidates)``, where
        candidates is the number of allowed rows, minus one when ``exclude`` is given.
        ``indices`` are int64 corpus rows; ``distances`` float64, ordered nearest first,
        ties broken by the smaller row index.

    Example:
        >>> corpus = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
        >>> idx, dist = exact_topk(corpus, corpus[:1], 2, "euclidean")
        >>> idx.tolist(), [round(float(x), 3) for x in dist[0]]
        ([[0, 2]], [0.0, 0.141])
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if query_block < 1 or corpus_block < 1:
        raise ValueError("block sizes must be >= 1")
    base = corpus if isinstance(corpus, np.ndarray) else np.asarray(corpus, dtype=np.float32)
    q64 = np.asarray(queries, dtype=np.float64)
    if q64.ndim == 1:
        q64 = q64.reshape(1, -1)
    if base.ndim != 2 or q64.ndim != 2 or base.shape[1] != q64.shape[1]:
        raise ValueError(
            f"corpus (n, d) and queries (q, d) must share d; got {base.shape} and {q64.shape}"
        )
    n, nq = base.shape[0], q64.shape[0]
    excl = _exclude_array(exclude, nq, n)
    mask = _allowed_array(allowed, n)
    candidates = n if mask is None else int(mask.sum())
    width = max(0, min(k, candidates - (1 if excl is not None else 0)))
    if width == 0 or nq == 0:
        return np.zeros((nq, width), np.int64), np.zeros((nq, width), np.float64)
    keep = min(candidates, width + max(_MIN_PAD, width))

    if metric == "angular":
        q64 = _normalised(q64)
    # Scores are "lower is nearer" so one selection rule serves all metrics: angular and
    # dot use -q.c; euclidean uses |c|^2 - 2 q.c (|q|^2 is constant per query).
    scale = -2.0 if metric == "euclidean" else -1.0
    q32 = np.ascontiguousarray(q64 * scale, dtype=np.float32)

    out_idx = np.empty((nq, width), np.int64)
    out_dist = np.empty((nq, width), np.float64)
    for qs in range(0, nq, query_block):
        qe = min(nq, qs + query_block)
        rows = _coarse(
            base,
            q32[qs:qe],
            metric,
            keep,
            None if excl is None else excl[qs:qe],
            mask,
            corpus_block,
        )
        out_idx[qs:qe], out_dist[qs:qe] = _refine(base, q64[qs:qe], rows, metric, width)
    return out_idx, out_dist


def overlap_per_query(found: npt.ArrayLike, truth: npt.ArrayLike) -> FloatArray:
    """Per query, the share of ``truth``'s neighbours that ``found`` also lists.

    Args:
        found: ``(q, w)`` neighbour ids (e.g. from Annoy); ``-1`` pads short rows.
        truth: ``(q, k)`` neighbour ids (e.g. from :func:`exact_topk`), ``k >= 1``.

    Duplicates in ``found`` count once; the result is in ``[0, 1]``, one value per query.

    Example:
        >>> overlap_per_query([[1, 2, 3], [4, 5, -1]], [[3, 2, 9], [7, 8, 6]]).tolist()
        [0.6666666666666666, 0.0]
    """
    f = np.asarray(found, dtype=np.int64)
    t = np.asarray(truth, dtype=np.int64)
    if f.ndim != 2 or t.ndim != 2 or f.shape[0] != t.shape[0]:
        raise ValueError(f"need two (q, k) id arrays with equal q; got {f.shape} and {t.shape}")
    if t.shape[1] == 0:
        raise ValueError("truth has no neighbours per query (k = 0): overlap is undefined")
    # (q, k, w) booleans: fine for the k of a recall check (10 x 10 per query).
    hit = (t[:, :, None] == f[:, None, :]) & (t[:, :, None] >= 0)
    return np.asarray(hit.any(axis=2).sum(axis=1) / t.shape[1], dtype=np.float64)


def recall_at_k(approx_indices: npt.ArrayLike, exact_indices: npt.ArrayLike) -> float:
    """Mean per-query overlap of approximate neighbours with the exact ones (recall@k).

    ``k`` is the width of ``exact_indices``. Raises ``ValueError`` for zero queries: an
    empty sample proves nothing, and the caller must decide what that means.

    Example:
        >>> recall_at_k([[0, 1], [2, 9]], [[0, 1], [2, 3]])
        0.75
    """
    per_query = overlap_per_query(approx_indices, exact_indices)
    if per_query.size == 0:
        raise ValueError("recall of zero queries is undefined")
    return float(per_query.mean())


def _exclude_array(exclude: npt.ArrayLike | None, nq: int, n: int) -> IntArray | None:
    if exclude is None:
        return None
    excl = np.asarray(exclude, dtype=np.int64).reshape(-1)
    if excl.shape[0] != nq:
        raise ValueError(f"exclude needs one row per query ({nq}), got {excl.shape[0]}")
    if excl.size and (excl.min() < -1 or excl.max() >= n):
        raise ValueError(f"exclude rows must be in [-1, {n})")
    return excl


def _allowed_array(allowed: npt.ArrayLike | None, n: int) -> npt.NDArray[np.bool_] | None:
    if allowed is None:
        return None
    mask = np.asarray(allowed, dtype=np.bool_).reshape(-1)
    if mask.shape[0] != n:
        raise ValueError(f"allowed needs one flag per corpus row ({n}), got {mask.shape[0]}")
    return mask


def _normalised(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero vector stays zero: cos 0 against everything, i.e. Annoy's angular sqrt(2).
    norms[norms == 0] = 1.0
    return np.asarray(x / norms, dtype=x.dtype)


def _coarse(
    corpus: npt.NDArray[Any],
    q32: npt.NDArray[np.float32],
    metric: str,
    keep: int,
    excl: IntArray | None,
    allowed: npt.NDArray[np.bool_] | None,
    corpus_block: int,
) -> IntArray:
    """The ``keep`` best rows per query by float32 score, -1 where fewer exist."""
    nq, n = q32.shape[0], corpus.shape[0]
    best_score = np.full((nq, keep), np.inf, np.float32)
    best_row = np.full((nq, keep), -1, np.int64)
    pending: list[tuple[IntArray, npt.NDArray[np.float32], IntArray]] = []
    pending_size = 0
    masked = excl is not None or allowed is not None
    for cs in range(0, n, corpus_block):
        ce = min(n, cs + corpus_block)
        block = np.asarray(corpus[cs:ce], dtype=np.float32)
        if metric == "angular":
            block = _normalised(block)
        scores = q32 @ block.T
        if metric == "euclidean":
            scores += np.einsum("ij,ij->i", block, block)[None, :]
        if allowed is not None:
            scores[:, ~allowed[cs:ce]] = np.inf
        if excl is not None:
            hit = np.flatnonzero((excl >= cs) & (excl < ce))
            scores[hit, excl[hit] - cs] = np.inf
        # 1. The bar is each query's keep-th best so far: after the first block only a
        #    few rows per block beat it, so selecting them is one comparison.
        thresh = best_score[:, keep - 1]
        hits = scores <= thresh[:, None] if np.isfinite(thresh).all() else None
        if hits is None or np.count_nonzero(hits) > 4 * keep * nq:
            # 2. No bar yet (or a loose one, when nearer rows come late): also apply the
            #    block's own keep-th score, found by a partition. A row worse than it has
            #    keep better rows in this block alone, so it cannot make the top keep.
            kth = min(keep, ce - cs) - 1
            thresh = np.minimum(thresh, np.partition(scores, kth, axis=1)[:, kth])
            hits = scores <= thresh[:, None]
        # flatnonzero: a 2-D nonzero is ~10x slower on a mostly-False matrix.
        r, c = np.divmod(np.flatnonzero(hits), ce - cs)
        if masked:
            finite = scores[r, c] < np.inf
            r, c = r[finite], c[finite]
        pending.append((r, scores[r, c], c + cs))
        pending_size += r.size
        # 3. Merge the candidates with the ones kept so far, ordered by (score, row) so
        #    that ties keep the lower row, and cut each query back to keep. Merging is a
        #    sort, so it waits until the blocks brought about as many as are kept (a
        #    stale bar only lets more candidates through; it never loses one).
        if pending_size >= keep * nq or ce == n:
            old = best_row >= 0
            best_score, best_row = _top_per_row(
                np.concatenate([np.nonzero(old)[0]] + [p[0] for p in pending]),
                np.concatenate([best_score[old]] + [p[1] for p in pending]),
                np.concatenate([best_row[old]] + [p[2] for p in pending]),
                nq,
                keep,
            )
            pending, pending_size = [], 0
    return best_row


def _top_per_row(
    rows: IntArray, scores: npt.NDArray[Any], items: IntArray, nq: int, keep: int
) -> tuple[npt.NDArray[Any], IntArray]:
    """Scatter the ``keep`` best (score, item) per row into dense arrays (inf / -1 pad)."""
    order = np.lexsort((items, scores, rows))
    rows, scores, items = rows[order], scores[order], items[order]
    starts = np.searchsorted(rows, np.arange(nq))
    rank = np.arange(rows.size) - starts[rows]
    sel = rank < keep
    out_score = np.full((nq, keep), np.inf, scores.dtype)
    out_item = np.full((nq, keep), -1, np.int64)
    out_score[rows[sel], rank[sel]] = scores[sel]
    out_item[rows[sel], rank[sel]] = items[sel]
    return out_score, out_item


def _refine(
    corpus: npt.NDArray[Any], q64: FloatArray, rows: IntArray, metric: str, width: int
) -> tuple[IntArray, FloatArray]:
    """Re-score the coarse candidates in float64 and keep the best ``width`` per query."""
    nq, keep = rows.shape
    valid = rows >= 0
    vecs = np.asarray(corpus[np.where(valid, rows, 0).ravel()], dtype=np.float64)
    vecs = vecs.reshape(nq, keep, -1)
    if metric == "angular":
        norms = np.linalg.norm(vecs, axis=2, keepdims=True)
        norms[norms == 0] = 1.0
        cos = np.einsum("qkd,qd->qk", vecs / norms, q64)
        dist = np.sqrt(np.maximum(2.0 - 2.0 * cos, 0.0))
        order_key = dist
    elif metric == "euclidean":
        dist = np.sqrt(np.einsum("qkd,qkd->qk", vecs - q64[:, None, :], vecs - q64[:, None, :]))
        order_key = dist
    else:
        dist = np.einsum("qkd,qd->qk", vecs, q64)
        order_key = -dist
    order_key = np.where(valid, order_key, np.inf)
    qrow = np.repeat(np.arange(nq), keep)
    order = np.lexsort((rows.ravel(), order_key.ravel(), qrow)).reshape(nq, keep)[:, :width]
    flat = order - (np.arange(nq) * keep)[:, None]
    return (
        np.take_along_axis(rows, flat, axis=1),
        np.take_along_axis(dist, flat, axis=1),
    )
