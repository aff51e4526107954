"""exact: exact top-k over a large corpus (blocked numpy) vs a naive per-query baseline."""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from ledger.checks.exact import exact_topk, recall_at_k


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}"


def bench_exact(args: argparse.Namespace) -> None:
    """Blocked exact top-k vs a naive per-query full sort, on random float32 vectors."""
    rng = np.random.default_rng(0)
    corpus = np.empty((args.rows, args.dim), np.float32)
    for start in range(0, args.rows, 65536):  # float32 all the way: no 3 GB float64 detour
        rng.standard_normal(out=corpus[start : start + 65536], dtype=np.float32)
    picked = np.sort(rng.choice(args.rows, size=args.queries, replace=False))
    queries = corpus[picked]
    print(f"machine: {_machine()}")
    print(
        f"corpus: {args.rows} x {args.dim} float32 ({corpus.nbytes / 2**30:.2f} GiB), "
        f"metric {args.metric}, k={args.k}"
    )

    started = time.perf_counter()
    idx, _ = exact_topk(corpus, queries, args.k, args.metric, exclude=picked)
    blocked = time.perf_counter() - started
    print(f"exact_topk {args.queries} queries: {blocked:.2f} s (goal: a few seconds on 2 cores)")
    print(f"exact_topk per query: {blocked / args.queries * 1000:.2f} ms")

    # Naive: per query one matrix-vector product and a full argsort (what a first version
    # writes); angular gets a pre-normalised corpus, built before the clock starts.
    naive_n = min(args.naive_queries, args.queries)
    base = corpus
    if args.metric == "angular":
        base = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    sq = np.einsum("ij,ij->i", corpus, corpus) if args.metric == "euclidean" else None
    started = time.perf_counter()
    naive = np.empty((naive_n, args.k), np.int64)
    for i in range(naive_n):
        dots = base @ queries[i]
        dist = -dots if sq is None else sq - 2 * dots
        dist[picked[i]] = np.inf
        naive[i] = np.argsort(dist, kind="stable")[: args.k]
    naive_per_query = (time.perf_counter() - started) / naive_n
    print(f"naive per query (measured on {naive_n}): {naive_per_query * 1000:.1f} ms")
    print(f"naive {args.queries} queries (extrapolated): {naive_per_query * args.queries:.1f} s")
    agree = recall_at_k(naive, idx[:naive_n])
    print(f"exact_topk agrees with naive: {agree:.4f} (goal 1.0)")
    print(f"speedup vs naive: {naive_per_query * args.queries / blocked:.1f}x")


NEEDS_BROKER = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument(
        "--naive-queries",
        type=int,
        default=10,
        help="queries to time the naive baseline on (it is extrapolated)",
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--metric", default="angular", choices=("angular", "euclidean", "dot"))


def run(args: argparse.Namespace) -> None:
    bench_exact(args)
