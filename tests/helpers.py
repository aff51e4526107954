"""Small producers of ledger events for the materialiser tests."""

from __future__ import annotations

import numpy as np

from ledger.contract.events import Topics
from ledger.log.producer import Producer, content_hash


def produce_embeddings(
    bootstrap: str,
    topics: Topics,
    n: int,
    *,
    dimension: int = 8,
    model: str = "emb",
    version: str = "v1",
    start: int = 0,
    seed: int = 0,
) -> list[str]:
    """Register ``model``/``version`` and write ``n`` embeddings of entities e<start..>."""
    rng = np.random.default_rng(seed)
    with Producer(bootstrap=bootstrap, name="test", topics=topics) as p:
        p.register_model_version(
            model, version, kind="embedding", dimension=dimension, metric="angular"
        )
        ids: list[str] = []
        for lo in range(start, start + n, 2000):
            hi = min(lo + 2000, start + n)
            ents = [f"e{i}" for i in range(lo, hi)]
            vectors = rng.random((hi - lo, dimension), dtype=np.float32)
            ids += p.write_embeddings(
                model, version, ents, vectors, content_sha256s=[content_hash(e) for e in ents]
            )
    return ids


def envelope(model: str, version: str, **fields: object) -> dict[str, object]:
    """A record dict with a fresh envelope plus ``fields``."""
    from ledger.contract.events import new_event_id, now_micros

    return {
        "event_id": new_event_id(),
        "event_time": now_micros(),
        "producer": "raw",
        "model": model,
        "model_version": version,
        **fields,
    }


def encoded(event_type: str, record: dict[str, object]) -> bytes:
    """``record`` framed with the current schema of ``event_type``."""
    from ledger.contract.schemas import default_store
    from ledger.contract.wire import encode

    return encode(default_store().current[event_type], record)


def send_raw(bootstrap: str, messages: list[tuple]) -> None:
    """Send ``(topic, key, value)`` or ``(topic, key, value, partition)`` messages as they
    are, in order, and flush."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for topic, key, value, *partition in messages:
            producer.send(topic, key=key, value=value, partition=(partition or [None])[0])
        producer.flush()
    finally:
        producer.close()
