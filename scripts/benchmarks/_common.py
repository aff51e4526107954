"""Helpers shared by the scale benchmarks (not a benchmark itself: bench.py skips ``_`` names).

- :func:`figure` prints one ``name: value (goal ...)`` line;
- :func:`embeddings` makes deterministic, embedding-like vectors chunk by chunk, so a parent
  and a child process regenerate exactly the same matrix from a seed;
- :func:`run_case` runs one measured case in a child process (``bench.py NAME --case ...``)
  while a thread samples the resident memory of the child and all its descendants;
- :func:`produce_log` writes a rollback's log through ``ledger.Producer``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "bench-embedder"
DIM = 384
LATENT = 16  # intrinsic dimension of the synthetic embeddings
CHUNK = 10_000  # rows per generator chunk: the matrix is the same whatever the caller's slices
BENCH = Path(__file__).resolve().parent.parent / "bench.py"


def figure(name: str, value: object, goal: str = "n/a") -> None:
    print(f"{name}: {value} (goal {goal})", flush=True)


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def entity_id(i: int) -> str:
    return f"doc-{i:08d}"


def _basis(version: str, dim: int) -> np.ndarray:
    seed = {"v1": 11, "v2": 22}[version]
    return np.random.default_rng(seed).standard_normal((LATENT, dim)).astype(np.float32)


def embeddings(version: str, start: int, stop: int, dim: int = DIM) -> np.ndarray:
    """Rows ``start:stop`` of ``version``'s vectors: a 16-d latent through a fixed 16 x dim map
    plus noise, like real embeddings (isotropic noise would make any ANN index look bad).
    Row ``i`` depends only on (version, i), via its chunk's seed."""
    basis = _basis(version, dim)
    out = np.empty((stop - start, dim), np.float32)
    first = start // CHUNK
    for chunk in range(first, (stop - 1) // CHUNK + 1 if stop > start else first):
        rng = np.random.default_rng([{"v1": 1, "v2": 2}[version], chunk])
        latent = rng.standard_normal((CHUNK, LATENT), dtype=np.float32)
        block = latent @ basis
        block += 0.05 * rng.standard_normal(block.shape, dtype=np.float32)
        lo, hi = max(start, chunk * CHUNK), min(stop, (chunk + 1) * CHUNK)
        out[lo - start : hi - start] = block[lo - chunk * CHUNK : hi - chunk * CHUNK]
    return out


# -- memory ------------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue  # exited between the listing and the read: nothing left to count
    return out


def _status_kb(pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    found[key] = int(rest.split()[0])
    except OSError:
        pass  # the process exited: it holds no memory any more
    return found


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "main"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    if "resource_tracker" in cmd:
        return "tracker"
    return "worker" if "shard_worker" in cmd or "spawn_main" in cmd else "other"


@dataclass
class TreeMemory:
    """Peak of the summed RSS of a process tree, sampled every ``interval`` seconds, and
    each process's own sampled peak (by role: main, worker, tracker, other).

    Sampled, not ``RUSAGE_CHILDREN``: a spawned worker is forked before it execs, and
    Linux carries the forked copy's RSS (the whole parent) into the child's ``ru_maxrss``.
    """

    pid: int
    interval: float = 0.1
    peak_kb: int = 0
    peak_anon_kb: int = 0
    peak_processes: int = 0
    samples: int = 0
    per_process: dict[int, tuple[str, int]] = field(default_factory=dict)
    at_peak: dict[str, int] = field(default_factory=dict)
    #: (wall-clock time, summed VmRSS KiB, summed RssAnon KiB) of every sample
    series: list[tuple[float, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> TreeMemory:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _descendants(self.pid)
            stats = [_status_kb(p) for p in pids]
            for p, st in zip(pids, stats, strict=True):
                role, peak = self.per_process.get(p) or (_role(p, self.pid), 0)
                self.per_process[p] = (role, max(peak, st.get("VmRSS", 0)))
            total = sum(s.get("VmRSS", 0) for s in stats)
            if total > self.peak_kb:
                self.peak_kb, self.peak_processes = total, sum(1 for s in stats if s)
                # Who held what at that moment (the main process vs its workers).
                self.at_peak = {
                    role: sum(
                        st.get("VmRSS", 0)
                        for p, st in zip(pids, stats, strict=True)
                        if self.per_process[p][0] == role
                    )
                    for role in {r for r, _ in self.per_process.values()}
                }
            anon = sum(s.get("RssAnon", 0) for s in stats)
            self.peak_anon_kb = max(self.peak_anon_kb, anon)
            self.series.append((time.time(), total, anon))
            self.samples += 1
            self._stop.wait(self.interval)


def rss_kb(pid: int) -> int:
    return _status_kb(pid).get("VmRSS", 0)


def child_rusage() -> dict[str, int]:
    """This process's peak RSS and the largest peak of its reaped children (KiB)."""
    import resource

    return {
        "maxrss_self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "maxrss_children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }


def run_case(name: str, case: str, argv: list[str]) -> dict[str, Any]:
    """Run ``bench.py NAME --case CASE ARGV`` in a child process; its JSON result, plus the
    sampled peak RSS of the child and every process below it (the build workers)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = Path(f.name)
    try:
        cmd = [sys.executable, str(BENCH), name, "--case", case, "--result", str(result_path)]
        started = time.perf_counter()
        proc = subprocess.Popen([*cmd, *argv])
        with TreeMemory(proc.pid) as memory:
            code = proc.wait()
        wall = time.perf_counter() - started
        if code != 0:
            raise SystemExit(f"case {case} failed (exit {code})")
        result: dict[str, Any] = json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)
    result.update(
        tree_peak_kb=memory.peak_kb,
        tree_peak_anon_kb=memory.peak_anon_kb,
        tree_peak_processes=memory.peak_processes,
        main_peak_kb=max((kb for r, kb in memory.per_process.values() if r == "main"), default=0),
        worker_peak_kb=max(
            (kb for r, kb in memory.per_process.values() if r == "worker"), default=0
        ),
        workers=sum(1 for r, _ in memory.per_process.values() if r == "worker"),
        at_peak_kb=memory.at_peak,
        memory_series=memory.series,
        child_wall_s=wall,
    )
    return result


def write_result(path: str, result: dict[str, Any]) -> None:
    result.update(child_rusage())
    Path(path).write_text(json.dumps(result))


# -- the log -----------------------------------------------------------------------------


def batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, n, size):
        yield lo, min(n, lo + size)


def produce_log(bootstrap: str, prefix: str, n: int, *, reembed_every: int = 10) -> int:
    """The rollback's log: ``n`` v1 embeddings, every ``reembed_every``-th entity re-embedded
    by v2 (same content), v2 deployed, then v1 redeployed naively (a deployment event only).
    Returns the number of events written."""
    from ledger import Producer, Topics, content_hash, init_topics

    topics = Topics(prefix)
    init_topics(bootstrap, topics, partitions=4)
    hashes = [content_hash(entity_id(i)) for i in range(n)]
    events = 0
    with Producer(bootstrap=bootstrap, name="bench", topics=topics) as producer:
        for v in ("v1", "v2"):
            producer.register_model_version(
                MODEL, v, kind="embedding", dimension=DIM, metric="angular"
            )
            events += 1
        for lo, hi in batches(n, 5000):
            ids = [entity_id(i) for i in range(lo, hi)]
            producer.write_embeddings(
                MODEL, "v1", ids, embeddings("v1", lo, hi), content_sha256s=hashes[lo:hi]
            )
            events += hi - lo
        for lo, hi in batches(n, 5000 * reembed_every):
            rows = list(range(lo, hi, reembed_every))
            vectors = embeddings("v2", lo, hi)[::reembed_every]
            producer.write_embeddings(
                MODEL,
                "v2",
                [entity_id(i) for i in rows],
                vectors,
                content_sha256s=[hashes[i] for i in rows],
            )
            events += len(rows)
        producer.record_deployment(
            MODEL, to_version="v2", from_version="v1", reason="deploy v2", actor="bench"
        )
        producer.record_deployment(
            MODEL, to_version="v1", from_version="v2", reason="naive redeploy", actor="bench"
        )
        events += 2
    return events


def raw_read(
    bootstrap: str,
    topics: Any,
    total: int,
    client: str | None = None,
    *,
    keep: list[Any] | None = None,
) -> float:
    """Seconds for the plain client (``client``, default: the one in use), with the
    materialiser's fetch settings, to read ``total`` messages of ``topics`` from the start:
    the ceiling a materialiser is held to. It counts the records and touches nothing else;
    the records read are appended to ``keep`` when it is given (as the seam's records,
    built after the clock stops)."""
    import dataclasses

    from consumers.materialiser import SETTINGS
    from ledger.log.clients import LIBRDKAFKA, client_name, open_consumer
    from ledger.log.topics import partitions_of

    settings = dataclasses.replace(SETTINGS, strict=False, max_records=5000)
    finder = open_consumer(bootstrap)
    try:
        tps = partitions_of(finder, topics.all)
    finally:
        finder.close()
    if (client or client_name()) == LIBRDKAFKA:
        return _raw_read_librdkafka(bootstrap, settings, tps, total, keep)
    from kafka import KafkaConsumer, TopicPartition

    from ledger.log.clients.kafka_python import consumer_config

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, **consumer_config(settings))
    try:
        consumer.assign([TopicPartition(t, p) for t, p in tps])
        seen, started = 0, time.perf_counter()
        while seen < total:
            for records in consumer.poll(timeout_ms=200).values():
                seen += len(records)
                if keep is not None:
                    keep.extend(records)
        return time.perf_counter() - started
    finally:
        consumer.close()


def _raw_read_librdkafka(
    bootstrap: str, settings: Any, tps: list[Any], total: int, keep: list[Any] | None
) -> float:
    import confluent_kafka

    from ledger.log.clients import LogRecord
    from ledger.log.clients.librdkafka import consumer_config

    consumer = confluent_kafka.Consumer(consumer_config(bootstrap, settings))
    messages: list[Any] = []
    try:
        consumer.assign([confluent_kafka.TopicPartition(t, p, 0) for t, p in tps])
        seen, started = 0, time.perf_counter()
        while seen < total:
            got = consumer.consume(settings.max_records, 0.2)
            seen += len(got)
            if keep is not None:
                messages.extend(got)
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    if keep is not None:
        keep.extend(
            LogRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value()) for m in messages
        )
    return seconds
