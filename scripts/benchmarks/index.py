"""index: build time of a sharded artifact (K shards in K processes) / one unsharded Annoy
build with n_jobs=1; query throughput; recall@10 against exact numpy search."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from array import array
from pathlib import Path

import numpy as np


def _clustered(n: int, d: int, *, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((256, d)).astype(np.float32) * 3
    vectors = centres[rng.integers(0, 256, n)]
    vectors += rng.standard_normal((n, d), dtype=np.float32)
    return [f"doc-{i:07d}" for i in range(n)], vectors


def _fmt(values: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def bench_index(args: argparse.Namespace) -> None:
    from annoy import AnnoyIndex

    from ledger.artifacts.index_build import build_index
    from ledger.artifacts.index_reader import open_artifact
    from ledger.artifacts.manifest import Manifest

    ids, vectors = _clustered(args.n, args.dim)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} cores, load average {load}; n={args.n} d={args.dim} "
        f"trees={args.trees} shards={args.shards} jobs={args.jobs}"
    )
    with tempfile.TemporaryDirectory() as tmp:

        def plain_build(run: int) -> tuple[float, AnnoyIndex]:
            # One unsharded Annoy build with n_jobs=1: the only deterministic single file.
            start = time.perf_counter()
            plain = AnnoyIndex(args.dim, "angular")
            plain.set_seed(1)
            for i, row in enumerate(vectors):  # the same fast path as build_index's workers
                plain.add_item(i, array("f", row.tobytes()))
            plain.build(args.trees, n_jobs=1)
            plain.save(str(Path(tmp) / f"plain-{run}.ann"))
            return time.perf_counter() - start, plain

        def artifact_build(run: int, jobs: int) -> tuple[float, Path, Manifest]:
            root = Path(tmp) / f"run-{run}-jobs-{jobs}"  # fresh: a rebuild would be a no-op
            start = time.perf_counter()
            m = build_index(
                root,
                model="bench",
                version="v1",
                entity_ids=ids,
                vectors=vectors,
                metric="angular",
                log_offsets={"bench:0": args.n},
                trees=args.trees,
                shards=args.shards,
                jobs=jobs,
            )
            return time.perf_counter() - start, root / m.relative_path, m

        # Interleaved repeats, minimum of each: the machine is shared, noise only adds time.
        times: dict[str, list[float]] = {"plain": [], "sharded": [], "sequential": []}
        manifests = []
        for run in range(args.repeat):
            t, plain = plain_build(run)
            times["plain"].append(t)
            t, path, m = artifact_build(run, args.jobs)
            times["sharded"].append(t)
            manifests.append(m)
            t, _, again = artifact_build(run, 1)
            times["sequential"].append(t)
            manifests.append(again)
        unsharded, sharded, sequential = (min(times[k]) for k in ("plain", "sharded", "sequential"))
        print(f"build unsharded n_jobs=1 (s): {unsharded:.1f}  runs {_fmt(times['plain'])}")
        print(
            f"build artifact {args.shards} shards, {args.jobs} processes, incl. sort, "
            f"id map, fsync, sha256 (s): {sharded:.1f}  runs {_fmt(times['sharded'])}"
        )
        print(
            f"build artifact {args.shards} shards, 1 process (s): {sequential:.1f}  "
            f"runs {_fmt(times['sequential'])}"
        )
        same = len({(tuple(x.files.items()), x.checksum) for x in manifests}) == 1
        print(
            f"byte-identical files over {len(manifests)} builds "
            f"({args.jobs} processes and 1): {same} (goal True)"
        )

        rng = np.random.default_rng(1)
        queries = vectors[rng.choice(args.n, args.queries, replace=False)]
        queries = queries + 0.1 * rng.standard_normal(queries.shape, dtype=np.float32)
        with open_artifact(path) as index:
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
    parser.add_argument("--repeat", type=int, default=2, help="builds of each kind; min is shown")


def run(args: argparse.Namespace) -> None:
    bench_index(args)
