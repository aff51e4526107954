"""``ledger demo``: the incident, played on a throwaway broker.

At this stage it shows the spine: two versions of an embedding model and a
classifier are registered, events are produced through the validated producer, and
the log is read back and summarised per model version.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from ledger.events import Topics
from ledger.log import init_topics, read_to_end
from ledger.producer import Producer, content_hash
from ledger.schemas import default_store
from ledger.wire import decode

EMBEDDER = "text-embedder"
CLASSIFIER = "spam-filter"
DIMENSION = 64


def run_demo(
    bootstrap: str,
    topics: Topics,
    *,
    events: int = 4000,
    echo: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Produce ``events`` embeddings (v1 for all, v2 for a third) plus decisions; read back."""
    say = echo or (lambda _msg: None)
    rng = np.random.default_rng(7)
    init_topics(bootstrap, topics)
    started = time.perf_counter()
    with Producer(bootstrap=bootstrap, name="demo", topics=topics) as producer:
        for version in ("v1", "v2"):
            producer.register_model_version(
                EMBEDDER, version, kind="embedding", dimension=DIMENSION, metric="angular"
            )
            producer.register_model_version(
                CLASSIFIER, version, kind="classifier", labels=["ham", "spam"]
            )
        producer.record_deployment(
            EMBEDDER, to_version="v1", from_version=None, reason="initial deployment", actor="demo"
        )
        ids = [f"doc-{i:06d}" for i in range(events)]
        hashes = [content_hash(i) for i in ids]
        producer.write_embeddings(
            EMBEDDER, "v1", ids, rng.standard_normal((events, DIMENSION)), content_sha256s=hashes
        )
        third = events // 3
        producer.write_embeddings(
            EMBEDDER,
            "v2",
            ids[:third],
            rng.standard_normal((third, DIMENSION)),
            content_sha256s=hashes[:third],
        )
        for i, subject in enumerate(ids[:third]):
            producer.record_decision(
                CLASSIFIER,
                "v2",
                subject,
                "spam" if i % 7 == 0 else "ham",
                score=0.9,
                input_sha256=hashes[i],
            )
    produced = time.perf_counter() - started
    say(f"produced {events + third * 2 + 5} events in {produced:.2f}s")

    counts: Counter[tuple[str, str, str]] = Counter()
    store = default_store()
    for message in read_to_end(bootstrap, list(topics.all)):
        name, record = decode(store, message.value)
        counts[(name, record["model"], record["model_version"])] += 1
    rows = [
        {"event_type": n, "model": m, "version": v, "events": c}
        for (n, m, v), c in sorted(counts.items())
    ]
    for row in rows:
        say(f"  {row['event_type']:<24} {row['model']:<14} {row['version']:<4} {row['events']:>7}")
    return {"bootstrap": bootstrap, "topics": list(topics.all), "events": rows}
