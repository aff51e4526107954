"""verify: `ledger verify` of a serving index (checksum, position, count, purity of every item,
sampled recall@10) against reading the index files once; no broker (the lag check is one
list-offsets round trip and is left out)."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

NEEDS_BROKER = False
MODEL = "bench-embedder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=1_000_000, help="items (default 1M)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--trees", type=int, default=10, help="Annoy trees of the index")
    parser.add_argument("--sample", type=int, default=200, help="recall queries")
    parser.add_argument(
        "--search-k",
        type=int,
        default=None,
        help="Annoy search_k for recall (default: calibrated as a rollback does, then recorded)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed verify runs (median)")
    parser.add_argument("--keep", type=Path, default=None, help="build the home here and keep it")


def _embeddings(rng: np.random.Generator, basis: np.ndarray, n: int) -> np.ndarray:
    # Like real embeddings, low intrinsic dimension (16) inside 384: nearest neighbours are
    # well defined, so recall measures the index (isotropic 384-d noise would make every
    # point about equally far from every other, and any ANN index look bad).
    latent = rng.standard_normal((n, basis.shape[0]), dtype=np.float32)
    v = latent @ basis
    v += 0.05 * rng.standard_normal(v.shape, dtype=np.float32)
    return v


def _write_store(home: Path, vectors: np.ndarray, ids: list[str], topics: str) -> None:
    """The log as the materialiser would have stored it, written with ledger.store directly."""
    from ledger.contract.events import new_event_ids
    from ledger.store import ARROW_SCHEMAS, Batch, Shard

    n, d = vectors.shape
    now = datetime.now(UTC)
    shard = Shard(home, "main")

    def table(name: str, rows: int, **cols: object) -> pa.Table:
        base = {
            "event_id": new_event_ids(rows),
            "event_time": [now] * rows,
            "producer": ["bench"] * rows,
            "model": [MODEL] * rows,
            "model_version": ["v1"] * rows,
        }
        schema = ARROW_SCHEMAS[name]
        data = {**base, **cols}
        return pa.Table.from_arrays([pa.array(data[f.name], f.type) for f in schema], schema=schema)

    registration = table(
        "model_versions",
        1,
        kind=["embedding"],
        dimension=[d],
        metric=["angular"],
        artifact_uri=[""],
        artifact_sha256=["0" * 64],
        labels=[[]],
        topic=[f"{topics}.models"],
        partition=[0],
        offset=[0],
    )
    shard.write(Batch({"model_versions": registration}, {(f"{topics}.models", 0): 1}))
    step = 100_000
    for s in range(0, n, step):
        e = min(n, s + step)
        rows = e - s
        flat = pa.array(np.ascontiguousarray(vectors[s:e]).ravel(), pa.float32())
        offsets = pa.array(np.arange(0, rows * d + 1, d, dtype=np.int32))
        batch = table(
            "embeddings",
            rows,
            entity_id=ids[s:e],
            content_sha256=["a" * 64] * rows,
            dimension=[d] * rows,
            vector=pa.ListArray.from_arrays(offsets, flat),
            topic=[f"{topics}.embeddings"] * rows,
            partition=[0] * rows,
            offset=np.arange(s, e),
            shadow=[False] * rows,
        )
        shard.write(Batch({"embeddings": batch}, {(f"{topics}.embeddings", 0): e}))


def _record_deployment(home: Path, artifact: str, topics: str) -> None:
    """The DeploymentChanged a rollback publishes, as the materialiser would store it (so
    verify's ``deployed`` check sees the switch recorded in the log)."""
    from ledger.contract.events import new_event_ids
    from ledger.store import ARROW_SCHEMAS, Batch, Shard

    schema = ARROW_SCHEMAS["deployments"]
    data = {
        "event_id": new_event_ids(1),
        "event_time": [datetime.now(UTC)],
        "producer": ["bench"],
        "model": [MODEL],
        "model_version": ["v1"],
        "from_version": [None],
        "reason": ["bench"],
        "actor": ["bench"],
        "summary": [[("artifact", artifact)]],
        "topic": [f"{topics}.models"],
        "partition": [0],
        "offset": [1],
    }
    table = pa.Table.from_arrays([pa.array(data[f.name], f.type) for f in schema], schema=schema)
    Shard(home, "main").write(Batch({"deployments": table}, {(f"{topics}.models", 0): 2}))


def _read_once(folder: Path) -> tuple[float, int]:
    start = time.perf_counter()
    total = 0
    for path in sorted(folder.iterdir()):
        with path.open("rb", buffering=0) as f:
            while chunk := f.read(8 << 20):
                total += len(chunk)
    return time.perf_counter() - start, total


def run(args: argparse.Namespace) -> None:
    from ledger.artifacts.index_build import build_index
    from ledger.checks.recall import RecallSpec, SearchK
    from ledger.contract.events import Topics
    from ledger.ops.verify import verify
    from ledger.serving.pointers import switch

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} cores, load average {load}; n={args.n} d={args.dim} "
        f"trees={args.trees} sample={args.sample}"
    )
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((16, args.dim)).astype(np.float32)
    vectors = np.concatenate(
        [_embeddings(rng, basis, min(100_000, args.n - s)) for s in range(0, args.n, 100_000)]
    )
    ids = [f"doc-{i:07d}" for i in range(args.n)]
    with tempfile.TemporaryDirectory() as tmp:
        home = args.keep or Path(tmp) / "home"
        start = time.perf_counter()
        _write_store(home, vectors, ids, "bench")
        print(f"setup: store written (s): {time.perf_counter() - start:.1f}")
        start = time.perf_counter()
        manifest = build_index(
            home / "artifacts",
            model=MODEL,
            version="v1",
            entity_ids=ids,
            vectors=vectors,
            metric="angular",
            log_offsets={"bench.models:0": 1, "bench.embeddings:0": args.n},
            trees=args.trees,
        )
        print(f"setup: index built (s): {time.perf_counter() - start:.1f}")
        del vectors
        folder = home / "artifacts" / manifest.relative_path
        pointer = switch(home, MODEL, folder, verify=False)
        _record_deployment(home, pointer.artifact, "bench")
        if args.search_k is None:
            # What a rollback does before it switches: the smallest search_k meeting the
            # threshold, recorded in the pointer for serving and verify.
            from ledger.artifacts.index_reader import open_artifact
            from ledger.checks.index_facts import measure_recall, read_facts

            start = time.perf_counter()
            with open_artifact(folder) as reader:
                tuned = measure_recall(
                    read_facts(folder, reader), reader, sample=args.sample, calibrate_to=0.9
                )
            print(f"calibrate_search_k_s: {time.perf_counter() - start:.1f} (goal n/a)")
            print(f"calibrated_search_k: {tuned.search_k} (recall {tuned.recall:.3f}) (goal n/a)")
            switch(home, MODEL, folder, verify=False, info={"search_k": tuned.search_k})

        reads, verifies = [], []
        report = None
        for _ in range(args.rounds):  # interleaved, so both see the same page cache
            seconds, size = _read_once(folder)
            reads.append(seconds)
            start = time.perf_counter()
            report = verify(
                None,
                Topics("bench"),
                home,
                MODEL,
                recall=RecallSpec(
                    sample=args.sample,
                    search_k=SearchK.serving()
                    if args.search_k is None
                    else SearchK.fixed(args.search_k),
                ),
            )
            verifies.append(time.perf_counter() - start)
        assert report is not None
        read_s, verify_s = float(np.median(reads)), float(np.median(verifies))
        recall = next(c for c in report.checks if c.name == "recall").figures["recall"]
        print(f"index_bytes: {size} ({size / 2**30:.2f} GiB) (goal n/a)")
        print(f"checks: {[(c.name, c.passed) for c in report.checks]} (goal all True)")
        print(
            f"recall_at_10: {recall:.3f} (goal >= 0.9: {args.trees} trees, "
            f"search_k {args.search_k if args.search_k is not None else 'calibrated'})"
        )
        print(f"read_index_once_s: {read_s:.2f} (goal n/a: the reference)")
        print(f"verify_s: {verify_s:.2f} (goal < 10 on 2 cores for 1M items)")
        print(f"verify_to_read_ratio: {verify_s / read_s:.1f} (goal n/a)")
