"""The lineage benchmark's compaction figures (``scripts/bench.py lineage --compact``):
``ledger.store.compaction.compact`` of the store in a process of its own (time, peak RSS),
then the lineage query with an unsorted tail of new events written after it."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks._common import entity_id, figure


def add_compaction_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compact",
        action="store_true",
        help="compact the shard (ledger.store.compaction.compact, in place) before the lookups",
    )
    parser.add_argument(
        "--tail",
        default="",
        metavar="N,M",
        help="the lookups again on a copy after N (then M) unsorted events were written "
        "after the store (e.g. after --compact)",
    )
    parser.add_argument(
        "--tail-shard",
        default="main",
        help="the shard --tail writes (another name: the views then union two shards)",
    )


_CHILD = """
import json, resource, sys, time
from pathlib import Path
from ledger.store.compaction import compact
c = compact(Path(sys.argv[1]), "main")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": c.seconds, "rows": c.rows, "before": c.bytes_before,
                  "after": c.bytes_after, "peak_rss": peak}))
"""


def compact_store(home: Path) -> None:
    """Compact the store's shard in a child process; print its time and peak RSS."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(home)], check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    done = json.loads(out.stdout.strip().splitlines()[-1])
    rows = sum(done["rows"].values())
    figure(
        "compact_seconds",
        f"{done['seconds']:.1f} ({rows:,} rows; {wall:.1f} s with the process start)",
        "n/a: `ledger compact` of the shard",
    )
    figure(
        "compact_peak_rss",
        f"{done['peak_rss'] / 2**30:.2f} GiB (the compacting process; shard "
        f"{done['before'] / 2**30:.2f} -> {done['after'] / 2**30:.2f} GiB)",
    )


def _append(home: Path, events: int, entities: int, seed: int, shard: str) -> None:
    # New events after the compaction, as the materialiser writes them: log order (random
    # entities), 50,000-row transactions, offsets continuing the stored ones.
    from benchmarks.lineage import CLF, EMB, PREFIX, _partition, _Writer
    from ledger.store import Shard

    rng = np.random.default_rng(seed)
    w = _Writer(home, shard)
    w.next = dict(Shard(home, "main").stored_offsets())
    start = np.datetime64("2027-01-01T00:00:00", "us")
    step = 25_000
    try:
        for lo in range(0, events // 2, step):
            n = min(step, events // 2 - lo)
            ids = [entity_id(int(i)) for i in rng.integers(0, entities, n)]
            parts = _partition(ids)
            times = pa.array(start + np.arange(lo, lo + n), pa.timestamp("us", tz="UTC"))
            w.write(
                "embeddings",
                f"{PREFIX}.embeddings",
                {
                    "event_time": times,
                    "model": [EMB] * n,
                    "model_version": ["v3"] * n,
                    "entity_id": ids,
                    "content_sha256": ["0" * 64] * n,
                    "dimension": [8] * n,
                    "vector": pa.ListArray.from_arrays(
                        pa.array(np.arange(0, n * 8 + 1, 8, dtype=np.int32)),
                        pa.array(rng.standard_normal(n * 8, dtype=np.float32)),
                    ),
                    "shadow": [False] * n,
                },
                parts,
            )
            w.write(
                "decisions",
                f"{PREFIX}.decisions",
                {
                    "event_time": times,
                    "model": [CLF] * n,
                    "model_version": ["v3"] * n,
                    "subject_id": ids,
                    "label": ["ham"] * n,
                    "score": rng.random(n),
                    "input_sha256": ["0" * 64] * n,
                    "shadow": [False] * n,
                },
                parts,
            )
    finally:
        w.close()


def tail_figures(
    home: Path,
    tmp: Path,
    picks: list[str],
    tails: Sequence[int],
    entities: int,
    lookups: Callable[[Path, list[str]], tuple[float, list[float], list[int]]],
    shard: str = "main",
) -> dict[int, float]:
    """Median lineage ms on a copy of the (compacted) store after ``tails`` events were
    written to it since the compaction (cumulative, ascending), into ``shard``."""
    copy = tmp / "with-tail"
    shutil.copytree(home / "shards", copy / "shards", ignore=shutil.ignore_patterns("*.writer"))
    out: dict[int, float] = {}
    written = 0
    try:
        for i, tail in enumerate(sorted(tails)):
            _append(copy, tail - written, entities, seed=10 + i, shard=shard)
            written = tail
            _, times, _ = lookups(copy, picks)
            out[tail] = statistics.median(times[1:])
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return out


def print_tails(found: dict[int, float], shard: str) -> None:
    where = "" if shard == "main" else f", into a second shard ({shard})"
    for tail, ms in found.items():
        figure(
            f"lineage_tail_{tail}_ms",
            f"{ms:.1f} ({tail:,} unsorted events written after the store{where})",
            "< 50",
        )


def parse_tails(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t]
