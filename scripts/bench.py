"""Benchmarks that print one figure per line: ``figure: value (goal ...)``, headline last.

Usage:
    python scripts/bench.py materialise --events 100000 --dimension 384
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer

from consumers.materialiser import catch_up
from ledger.broker import EmbeddedBroker
from ledger.events import Topics
from ledger.log import init_topics, partitions_of
from ledger.producer import Producer, content_hash


def _produce(bootstrap: str, topics: Topics, events: int, dimension: int) -> float:
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    with Producer(bootstrap=bootstrap, name="bench", topics=topics) as p:
        p.register_model_version("bench", "v1", kind="embedding", dimension=dimension,
                                 metric="angular")
        for lo in range(0, events, 5000):
            ids = [f"e{i}" for i in range(lo, min(lo + 5000, events))]
            p.write_embeddings("bench", "v1", ids, rng.random((len(ids), dimension), np.float32),
                               content_sha256s=[content_hash(i) for i in ids])
    return time.perf_counter() - started


def _raw_read(bootstrap: str, topics: Topics, total: int) -> float:
    # The same fetch settings as the materialiser: the ratio isolates our own work.
    from consumers.materialiser import FETCH_CONFIG

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", max_poll_records=5000, **FETCH_CONFIG)
    try:
        consumer.assign(partitions_of(consumer, topics.all))
        seen, started = 0, time.perf_counter()
        while seen < total:
            for records in consumer.poll(timeout_ms=200).values():
                seen += len(records)
        return time.perf_counter() - started
    finally:
        consumer.close()


def materialise(args: argparse.Namespace) -> None:
    """Materialiser events/s into a fresh shard vs a raw KafkaConsumer reading the same log."""
    with EmbeddedBroker() as bootstrap:
        topics = Topics("bench")
        init_topics(bootstrap, topics, partitions=args.partitions)
        produced = _produce(bootstrap, topics, args.events, args.dimension)
        total = args.events + 1
        raw = _raw_read(bootstrap, topics, total)
        with tempfile.TemporaryDirectory() as home:
            stats = catch_up(bootstrap, topics, Path(home))
            size = sum(f.stat().st_size for f in (Path(home) / "shards").glob("*.duckdb"))
        assert stats.events == total, stats
        rate = total / stats.seconds
        print(f"produce events/s ({args.dimension}-d): {args.events / produced:,.0f}")
        print(f"raw KafkaConsumer read events/s: {total / raw:,.0f}")
        print(f"shard size MB: {size / 1e6:,.1f}")
        print(f"transactions: {stats.transactions}")
        print(f"materialise events/s ({args.dimension}-d): {rate:,.0f} (goal >= 20,000)")
        ratio = rate / (total / raw)
        print(f"materialise / raw read: {ratio:.2f} (1.0 = as fast as reading the log)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("materialise", help=materialise.__doc__)
    m.add_argument("--events", type=int, default=100_000)
    m.add_argument("--dimension", type=int, default=384)
    m.add_argument("--partitions", type=int, default=4)
    m.set_defaults(run=materialise)
    args = parser.parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
