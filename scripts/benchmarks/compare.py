"""compare: `ledger compare` on a planted pair through the broker (half the neighbourhoods
rotated, 7% of labels flipped): time per step and the planted figures recovered."""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from consumers.catchup import catch_up
from ledger import Producer, Topics, content_hash, init_topics
from ledger.ops.compare import compare_log
from ledger.ops.metrics import ComparisonSpec
from ledger.ops.runbook import make_runbook

NEEDS_BROKER = True
SIZE = 20  # members per cluster; clusters are rotated in blocks of SIZE (a transpose)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=40_000, help="entities (and subjects)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)


def planted(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A and B over n entities in clusters of 20; B transposes the first half of the
    clusters in blocks of 20 (member j of cluster i moves to cluster j of its block), so
    half the entities keep all their neighbours and half keep none: overlap 0.5."""
    rng = np.random.default_rng(seed)
    clusters = n // SIZE
    centres = rng.standard_normal((clusters, dim)).astype(np.float32) * 10
    cluster = np.repeat(np.arange(clusters), SIZE)
    a = centres[cluster] + rng.standard_normal((n, dim)).astype(np.float32) * 0.1
    b = a.copy()
    member = np.tile(np.arange(SIZE), clusters)
    rotated = cluster < clusters // 2
    target = (cluster // SIZE) * SIZE + member
    b[rotated] = centres[target[rotated]] + rng.standard_normal((rotated.sum(), dim)) * 0.1
    ids = np.array([f"e{i:07d}" for i in range(n)])
    return ids, a, b


def run(args: argparse.Namespace) -> None:
    n = args.n - args.n % (SIZE * SIZE * 2)
    ids, a, b = planted(n, args.dim)
    rng = np.random.default_rng(1)
    labels_a = rng.choice(["ham", "spam"], size=n, p=[0.8, 0.2])
    flipped = rng.choice(n, size=round(n * 0.07), replace=False)
    labels_b = labels_a.copy()
    labels_b[flipped] = np.where(labels_a[flipped] == "ham", "spam", "ham")
    topics = Topics(f"bench{uuid.uuid4().hex[:8]}")
    init_topics(args.bootstrap, topics, partitions=4)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"data: {n} entities x {args.dim}-d per version, {n} subjects per version")

    started = time.perf_counter()
    with Producer(bootstrap=args.bootstrap, name="bench", topics=topics) as producer:
        for v in ("v1", "v2"):
            producer.register_model_version(
                "emb", v, kind="embedding", dimension=args.dim, metric="euclidean"
            )
            producer.register_model_version("clf", v, kind="classifier", labels=["ham", "spam"])
        shas = [content_hash(e) for e in ids]
        for v, vectors in (("v1", a), ("v2", b)):
            for i in range(0, n, 5000):
                producer.write_embeddings(
                    "emb",
                    v,
                    list(ids[i : i + 5000]),
                    vectors[i : i + 5000],
                    content_sha256s=shas[i : i + 5000],
                )
        for v, labels in (("v1", labels_a), ("v2", labels_b)):
            for s, label, sha in zip(ids, labels, shas, strict=True):
                producer.record_decision("clf", v, s, str(label), score=0.5, input_sha256=sha)
        for model in ("emb", "clf"):
            producer.record_deployment(
                model, to_version="v1", from_version=None, reason="bench", actor="bench"
            )
    print(f"produce {4 * n} events: {time.perf_counter() - started:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        started = time.perf_counter()
        catch_up(args.bootstrap, topics, home)
        print(f"materialise: {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        report = compare_log(
            args.bootstrap,
            topics,
            home,
            ["emb", "clf"],
            "v1",
            "v2",
            gate="agreement>=0.9,overlap>=0.4",
            spec=ComparisonSpec(k=args.k, sample=args.sample),
            out=home / "out",
        )
        compare_s = time.perf_counter() - started
        emb, clf = report.comparison.models["emb"], report.comparison.models["clf"]
        print(
            f"compare (views -> arrow -> exact search, both models): {compare_s:.2f} s "
            "(goal: seconds)"
        )
        print(
            f"overlap@{args.k}: {emb.overlap_mean:.4f} +- {emb.overlap_stderr:.4f} "  # type: ignore[union-attr]
            f"(planted 0.5, sample {args.sample})"
        )
        print(f"agreement: {clf.agreement:.4f} (planted 0.93)")  # type: ignore[union-attr]
        started = time.perf_counter()
        make_runbook(args.bootstrap, topics, home, ["emb", "clf"], to="v2", cli_prefix=["ledger"])
        print(f"runbook (catch-up + plan + markdown): {time.perf_counter() - started:.2f} s")
        print(f"gates passed: {report.gates.passed if report.gates else None}")
        print(f"overlap measured / planted: {emb.overlap_mean / 0.5:.3f}")  # type: ignore[union-attr]
