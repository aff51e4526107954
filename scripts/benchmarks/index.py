"""index: build time of a sharded artifact (K shards in K processes) / one unsharded Annoy
build with n_jobs=1; query throughput; recall@10 against exact numpy search."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _clustered(n: int, d: int, *, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((256, d)).astype(np.float32) * 3
    vectors = centres[rng.integers(0, 256, n)]
    vectors += rng.standard_normal((n, d), dtype=np.float32)
    return [f"doc-{i:07d}" for i in range(n)], vectors


def bench_index(args: argparse.Namespace) -> None:
    from annoy import AnnoyIndex

    from ledger.index import build_index, open_artifact

    ids, vectors = _clustered(args.n, args.dim)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} cores, load average {load}; n={args.n} d={args.dim} "
        f"trees={args.trees} shards={args.shards} jobs={args.jobs}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        # One unsharded Annoy build with n_jobs=1: the only deterministic single-file build.
        start = time.perf_counter()
        plain = AnnoyIndex(args.dim, "angular")
        plain.set_seed(1)
        for first in range(0, args.n, 4096):  # lists of floats, a chunk at a time
            for i, row in enumerate(vectors[first : first + 4096].tolist(), first):
                plain.add_item(i, row)
        plain.build(args.trees, n_jobs=1)
        plain.save(str(Path(tmp) / "plain.ann"))
        unsharded = time.perf_counter() - start

        start = time.perf_counter()
        m = build_index(
            Path(tmp) / "artifacts",
            model="bench",
            version="v1",
            entity_ids=ids,
            vectors=vectors,
            metric="angular",
            log_offsets={"bench:0": args.n},
            trees=args.trees,
            shards=args.shards,
            jobs=args.jobs,
        )
        sharded = time.perf_counter() - start
        print(f"build unsharded n_jobs=1 (s): {unsharded:.1f}")
        print(
            f"build artifact {args.shards} shards, {args.jobs} processes, incl. sort, "
            f"id map, fsync, sha256 (s): {sharded:.1f}"
        )
        # The same input again, shards built one after the other in this process: shows
        # how much of the gain is sharding itself, and that the bytes do not change.
        start = time.perf_counter()
        again = build_index(
            Path(tmp) / "again",
            model="bench",
            version="v1",
            entity_ids=ids,
            vectors=vectors,
            metric="angular",
            log_offsets={"bench:0": args.n},
            trees=args.trees,
            shards=args.shards,
            jobs=1,
        )
        sequential = time.perf_counter() - start
        print(f"build artifact {args.shards} shards, 1 process (s): {sequential:.1f}")
        same = again.files == m.files and again.checksum == m.checksum
        print(f"byte-identical files, {args.jobs} processes vs 1: {same} (goal True)")

        rng = np.random.default_rng(1)
        queries = vectors[rng.choice(args.n, args.queries, replace=False)]
        queries = queries + 0.1 * rng.standard_normal(queries.shape, dtype=np.float32)
        with open_artifact(Path(tmp) / "artifacts" / m.relative_path) as index:
            start = time.perf_counter()
            found = index.query_many(queries, 10)
            qps = args.queries / (time.perf_counter() - start)
        start = time.perf_counter()
        for q in queries.tolist():
            plain.get_nns_by_vector(q, 10)
        plain_qps = args.queries / (time.perf_counter() - start)

        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        truth = np.argsort(-(qn @ unit.T), axis=1)[:, :10]
        hits = sum(
            len({ids[j] for j in truth[r]} & {i for i, _ in found[r]}) for r in range(args.queries)
        )
        print(f"query k=10 sharded artifact (queries/s): {qps:.0f}")
        print(f"query k=10 unsharded annoy (queries/s): {plain_qps:.0f}")
        print(f"recall@10 sharded vs exact numpy: {hits / (10 * args.queries):.3f} (goal >= 0.9)")
        print(f"build time sharded / unsharded: {sharded / unsharded:.2f} (goal ~0.55)")


NEEDS_BROKER = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--queries", type=int, default=500)


def run(args: argparse.Namespace) -> None:
    bench_index(args)
