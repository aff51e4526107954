"""materialise: events/s of catch_up() into a fresh shard (384-d embeddings) / the same
client's raw consumer reading the same messages with the same fetch settings, in the same
run; ``--client kafka-python|librdkafka`` (default: the one in use). ~30 s on 2 cores.

Also the pipeline without the consume: the messages the raw read kept, in polls of the
materialiser's size, through the same decode, checks and shard writer thread
(``materialise_pipeline_rate``), and the decode and checks alone (``..._build_rate``)."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks._common import raw_read
from consumers.batch import BatchBuilder, poll_batch
from consumers.catchup import catch_up
from consumers.writer import ShardWriter
from ledger import Producer, Topics, content_hash, init_topics
from ledger.contract.rules import Registry
from ledger.contract.schemas import default_store
from ledger.log.clients import CLIENTS, ENV_CLIENT, LIBRDKAFKA, client_in_use
from ledger.store import Shard

NEEDS_BROKER = True


def _figure(name: str, value: str, goal: str) -> None:
    print(f"{name}: {value} (goal {goal})", flush=True)


def _produce(bootstrap: str, topics: Topics, events: int, dimension: int) -> float:
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    with Producer(bootstrap=bootstrap, name="bench", topics=topics) as p:
        p.register_model_version(
            "bench", "v1", kind="embedding", dimension=dimension, metric="angular"
        )
        for lo in range(0, events, 5000):
            ids = [f"e{i}" for i in range(lo, min(lo + 5000, events))]
            p.write_embeddings(
                "bench",
                "v1",
                ids,
                rng.random((len(ids), dimension), np.float32),
                content_sha256s=[content_hash(i) for i in ids],
            )
    return time.perf_counter() - started


def _pipeline(topics: Topics, records: list[object], home: Path, *, write: bool) -> float:
    """Seconds to decode, check and (``write``) store ``records`` as the materialiser does,
    in polls of its size, one transaction in flight on the writer thread."""
    shard = Shard(home, "main", hold=1.0)
    shard.claim()
    writer = ShardWriter(shard)
    registry, schemas, size = Registry(), default_store(), 5000
    try:
        started = time.perf_counter()
        for lo in range(0, len(records), size):
            builder = BatchBuilder(schemas, registry, topics)
            batch = poll_batch(builder, records[lo : lo + size], {})
            if write:
                writer.submit(builder, batch)
        writer.drain()
        return time.perf_counter() - started
    finally:
        writer.close()
        shard.release()


def bench_materialise(bootstrap: str, *, events: int, dimension: int, partitions: int) -> None:
    """Produce ``events`` embeddings, read them raw, then materialise them into a new home."""
    topics = Topics(f"bench{uuid.uuid4().hex[:8]}")
    init_topics(bootstrap, topics, partitions=partitions)
    produced = _produce(bootstrap, topics, events, dimension)
    total = events + 1  # and the registration
    client = client_in_use()
    kept: list[object] = []
    raw = total / raw_read(bootstrap, topics, total, keep=kept)
    fastest = (
        raw if client.name == LIBRDKAFKA else total / raw_read(bootstrap, topics, total, LIBRDKAFKA)
    )
    with tempfile.TemporaryDirectory() as home:
        build = total / _pipeline(topics, kept, Path(home), write=False)
    with tempfile.TemporaryDirectory() as home:
        pipeline = total / _pipeline(topics, kept, Path(home), write=True)
    del kept
    with tempfile.TemporaryDirectory() as home:
        stats = catch_up(bootstrap, topics, Path(home))
        size = sum(f.stat().st_size for f in (Path(home) / "shards").glob("*.duckdb"))
    if stats.events != total:
        raise SystemExit(f"materialised {stats.events} events, expected {total}")
    rate = total / stats.seconds
    _figure(f"produce events/s ({dimension}-d)", f"{events / produced:,.0f}", "n/a, input")
    _figure("client", f"{client.name} {client.version}", "n/a")
    _figure(f"raw {client.name} read events/s", f"{raw:,.0f}", "n/a, the ceiling")
    _figure("raw librdkafka read events/s", f"{fastest:,.0f}", "n/a, the fastest client")
    _figure("shard MB", f"{size / 1e6:,.1f}", "n/a")
    _figure("transactions", f"{stats.transactions}", "n/a")
    _figure(
        "materialise_build_rate (decode + checks, no consume, no write)", f"{build:,.0f}", "n/a"
    )
    _figure(
        "materialise_pipeline_rate (decode + checks + write, no consume)",
        f"{pipeline:,.0f}",
        "well above 60,000",
    )
    _figure(f"materialise_rate ({dimension}-d events/s)", f"{rate:,.0f}", ">= 60,000")
    _figure("materialise_ratio (materialise / raw read)", f"{rate / raw:.2f}", ">= 0.6")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=100_000, help="embedding events")
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--client", choices=CLIENTS, help="Kafka client (default: the one in use)")


def run(args: argparse.Namespace) -> None:
    if args.client:
        os.environ[ENV_CLIENT] = args.client  # the producer, the materialiser and the raw read
    bench_materialise(
        args.bootstrap, events=args.events, dimension=args.dimension, partitions=args.partitions
    )
