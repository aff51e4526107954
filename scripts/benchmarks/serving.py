"""serving: queries/s of the serving index (built like a rollback's, queried through
``open_index`` / ``IndexReader.query_many`` with the calibrated search_k) / exact numpy search
(``exact_topk``, batched matmul) over the same N x 384 items; a trees table.

Queries are held-out vectors of the same distribution (not items of the index). For each
``--trees`` value: build the artifact (``build_index``, ``--shards`` files, by default the
rollback's, half of them built at a time), calibrate search_k as a rollback does (doubling
from Annoy's default until recall@10 >= 0.9 on 200 item queries), record it in the serving
pointer, open the index as serving does, time ``query_many`` over the queries, and check
recall@10 of the answers against exact search.

    scripts/bench.py serving --n 100000 --queries 300      # a smoke test
    scripts/bench.py serving --n 1000000 --trees 50,100
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import DIM, MODEL, embeddings, entity_id, figure, load

NEEDS_BROKER = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=1_000_000, help="items (default 1M)")
    parser.add_argument("--queries", type=int, default=1000, help="held-out query vectors")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--trees", default=None, help="comma-separated tree counts (default: the rollback's)"
    )
    parser.add_argument(
        "--shards", type=int, default=None, help="Annoy files per index (default: the rollback's)"
    )


def run(args: argparse.Namespace) -> None:
    from ledger import open_index
    from ledger.artifacts.index_build import DEFAULT_SHARDS, DEFAULT_TREES, build_index
    from ledger.artifacts.index_reader import open_artifact
    from ledger.checks.exact import exact_topk, recall_at_k
    from ledger.checks.index_facts import measure_recall, read_facts
    from ledger.serving.pointers import switch

    trees_list = [int(t) for t in (args.trees or str(DEFAULT_TREES)).split(",")]
    n, k = args.n, args.k
    shards = args.shards or DEFAULT_SHARDS
    print(f"machine: load average {load()}; n={n} d={DIM} shards={shards} k={k}")
    vectors = embeddings("v1", 0, n)
    queries = embeddings("v1", n, n + args.queries)  # same distribution, not in the index
    ids = [entity_id(i) for i in range(n)]

    started = time.perf_counter()
    truth, _ = exact_topk(vectors, queries, k, "angular")
    exact_s = time.perf_counter() - started
    exact_qps = args.queries / exact_s
    figure("exact_qps", f"{exact_qps:.0f} ({args.queries} queries in {exact_s:.2f} s, batched)")

    rows: list[tuple[int, float, int, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        home = Path(tmp) / "home"
        for trees in trees_list:
            started = time.perf_counter()
            manifest = build_index(
                home / "artifacts",
                model=MODEL,
                version="v1",
                entity_ids=ids,
                vectors=vectors,
                metric="angular",
                log_offsets={"bench.embeddings:0": n, "bench.models:0": trees},
                trees=trees,
                shards=shards,
            )
            build_s = time.perf_counter() - started
            folder = home / "artifacts" / manifest.relative_path
            with open_artifact(folder) as reader:
                tuned = measure_recall(read_facts(folder, reader), reader, calibrate_to=0.9)
            switch(home, MODEL, folder, verify=False, info={"search_k": tuned.search_k})
            with open_index(home, MODEL) as index:
                index.query_many(queries[:20], k)  # page in the top of the trees
                started = time.perf_counter()
                found = index.query_many(queries, k)
                seconds = time.perf_counter() - started
            got = np.array(
                [[int(e[4:]) for e, _ in hits] + [-1] * (k - len(hits)) for hits in found]
            )
            recall = float(recall_at_k(got, truth))
            qps = args.queries / seconds
            size = sum(f.stat().st_size for f in folder.glob("*.ann"))
            rows.append((trees, build_s, tuned.search_k, qps, recall, size / 2**30))
            figure(
                f"annoy_trees_{trees}",
                f"build {build_s:.1f} s, search_k {tuned.search_k} (item recall "
                f"{tuned.recall:.3f}), {qps:.0f} queries/s, held-out recall@{k} {recall:.3f}, "
                f"{size / 2**30:.2f} GiB",
            )
            del index, found

    print("| trees | build s | calibrated search_k | queries/s | recall@10 | index GiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for trees, build_s, sk, qps, recall, gib in rows:
        print(f"| {trees} | {build_s:.1f} | {sk} | {qps:.0f} | {recall:.3f} | {gib:.2f} |")
    best = max(rows, key=lambda r: r[3])
    if len(rows) > 1:
        figure("best_trees", f"{best[0]} ({best[3] / exact_qps:.2f} x exact)")
    default = next((r for r in rows if r[0] == DEFAULT_TREES), rows[0])
    figure(
        "serving_qps_ratio",
        f"{default[3] / exact_qps:.2f} ({default[0]} trees: {default[3]:.0f} vs {exact_qps:.0f}/s)",
        "> 1: the index must beat exact search",
    )
