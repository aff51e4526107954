"""producer: ledger.Producer send rate (single and batch API) / the same client's raw producer
sending pre-encoded bytes of the same size, same config, 384-d vectors; ``--client
kafka-python|librdkafka`` (default: the one in use). ~1 min on 2 cores."""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from ledger import Producer, Topics, content_hash, init_topics
from ledger.contract.schemas import default_store
from ledger.contract.wire import encode
from ledger.log.clients import CLIENTS, ENV_CLIENT, LIBRDKAFKA, client_in_use

DIMENSION = 384
BATCH_ROWS = 1000  # rows per write_embeddings call: a realistic service batch
#: the producer's Kafka settings, given explicitly to both sides so the comparison is fair
KAFKA_CONFIG: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 10,
    "batch_size": 256 * 1024,
    "max_request_size": 16 * 1024 * 1024,
}


def _figure(name: str, value: str, goal: str) -> None:
    print(f"{name}: {value} (goal {goal})", flush=True)


def bench_producer(bootstrap: str, *, events: int, rounds: int) -> None:
    """Send ``events`` embeddings per method per round; print rates and ratios to raw Kafka."""
    topics = Topics(f"bench{uuid.uuid4().hex[:8]}")
    init_topics(bootstrap, topics, partitions=4)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((events, DIMENSION)).astype(np.float32)
    ids = [f"entity-{i:08d}" for i in range(events)]
    hashes = [content_hash(i) for i in ids]  # the caller's work, outside the timed part
    keys = [i.encode() for i in ids]

    with Producer(bootstrap=bootstrap, name="bench", topics=topics, **KAFKA_CONFIG) as ledger:
        ledger.register_model_version(
            "bench-embedder", "v1", kind="embedding", dimension=DIMENSION, metric="angular"
        )
        # Real events of the same size, encoded before the clock starts: the raw producer
        # sends these bytes as they are (distinct objects, like the ledger's).
        schema = default_store().current["EmbeddingWritten"]
        payloads = [
            encode(
                schema,
                {
                    "event_id": str(uuid.uuid4()),
                    "event_time": 0,
                    "producer": "bench",
                    "model": "bench-embedder",
                    "model_version": "v1",
                    "entity_id": ids[i],
                    "content_sha256": hashes[i],
                    "dimension": DIMENSION,
                    "vector": vectors[i].tobytes(),
                },
            )
            for i in range(events)
        ]
        client = client_in_use()
        run_raw, close_raw = _raw_sender(bootstrap, client.name, topics.embeddings, keys, payloads)

        def run_single() -> None:
            for i in range(events):
                ledger.write_embedding(
                    "bench-embedder", "v1", ids[i], vectors[i], content_sha256=hashes[i]
                )
            ledger.flush()

        def run_batch() -> None:
            for start in range(0, events, BATCH_ROWS):
                end = start + BATCH_ROWS
                ledger.write_embeddings(
                    "bench-embedder",
                    "v1",
                    ids[start:end],
                    vectors[start:end],
                    content_sha256s=hashes[start:end],
                )
            ledger.flush()

        methods: dict[str, Callable[[], None]] = {
            "raw": run_raw,
            "single": run_single,
            "batch": run_batch,
        }
        run_raw()  # warm-up: connections, metadata, allocator
        # Wall-clock rates are what a service sees; this process's CPU time (all its
        # threads) is also recorded because it barely moves when the machine is shared.
        rates: dict[str, list[float]] = {m: [] for m in methods}
        cpu_rates: dict[str, list[float]] = {m: [] for m in methods}
        order = list(methods)
        for _ in range(rounds):
            for method in order:
                wall, cpu = time.perf_counter(), time.process_time()
                methods[method]()
                rates[method].append(events / (time.perf_counter() - wall))
                cpu_rates[method].append(events / (time.process_time() - cpu))
            order = order[1:] + order[:1]  # rotate so no method always runs first
        close_raw()

    median = {m: statistics.median(r) for m, r in rates.items()}

    def ratio(of: dict[str, list[float]], method: str) -> float:
        # Per round (against the same round's raw run), then the median over rounds.
        return statistics.median(r / b for r, b in zip(of[method], of["raw"], strict=True))

    _figure("client", f"{client.name} {client.version}", "n/a")
    _figure("producer_events", f"{events} x {rounds} rounds, {len(payloads[0])} B each", "n/a")
    _figure("producer_raw_rate", f"{median['raw']:.0f} events/s", "n/a: the reference")
    _figure("producer_single_rate", f"{median['single']:.0f} events/s", "n/a")
    _figure("producer_batch_rate", f"{median['batch']:.0f} events/s", "n/a")
    _figure("producer_single_cpu_ratio", f"{ratio(cpu_rates, 'single'):.2f}", ">= 0.8")
    _figure("producer_batch_cpu_ratio", f"{ratio(cpu_rates, 'batch'):.2f}", ">= 0.8")
    _figure("producer_single_ratio", f"{ratio(rates, 'single'):.2f}", ">= 0.8")
    _figure("producer_batch_ratio", f"{ratio(rates, 'batch'):.2f}", ">= 0.8")


def _raw_sender(
    bootstrap: str, client: str, topic: str, keys: list[bytes], payloads: list[bytes]
) -> tuple[Callable[[], None], Callable[[], None]]:
    """The raw baseline of ``client``: send the payloads as they are, then flush; and its
    close. librdkafka gets the ledger's options without delivery reports (a plain user's)."""
    if client == LIBRDKAFKA:
        import confluent_kafka

        from ledger.log.clients.librdkafka import producer_settings

        rd = confluent_kafka.Producer(producer_settings(bootstrap, KAFKA_CONFIG))

        def run_rd() -> None:
            produce, poll = rd.produce, rd.poll
            for i, (key, payload) in enumerate(zip(keys, payloads, strict=True)):
                produce(topic, payload, key)
                if i % 1000 == 999:
                    poll(0)
            rd.flush()

        return run_rd, rd.close
    from kafka import KafkaProducer

    kp = KafkaProducer(bootstrap_servers=bootstrap, **KAFKA_CONFIG)

    def run_kp() -> None:
        for key, payload in zip(keys, payloads, strict=True):
            kp.send(topic, key=key, value=payload)
        kp.flush()

    return run_kp, kp.close


NEEDS_BROKER = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=10_000, help="events per method per round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--client", choices=CLIENTS, help="Kafka client (default: the one in use)")


def run(args: argparse.Namespace) -> None:
    if args.client:
        os.environ[ENV_CLIENT] = args.client
    bench_producer(args.bootstrap, events=args.events, rounds=args.rounds)
