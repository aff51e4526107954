"""Querying an index one shard at a time (what the recall check does): the same answers as
querying every shard per row, with at most one shard's pages resident at once."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ledger.artifacts.index_build import build_index
from ledger.artifacts.index_reader import IndexReader, open_artifact
from ledger.artifacts.manifest import shard_file

OFFSETS = {"t.embeddings:0": 10}


def _build(root: Path, n: int, d: int, metric: str, shards: int) -> Path:
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    vectors[:8] = 1.0  # ties across shards: the merge breaks them by entity id
    ids = [f"doc-{i:05d}" for i in range(n)]
    m = build_index(
        root,
        model="embedder",
        version="v1",
        entity_ids=ids,
        vectors=vectors,
        metric=metric,
        log_offsets=OFFSETS,
        trees=10,
        shards=shards,
        jobs=1,
    )
    return root / m.relative_path


@pytest.mark.parametrize("metric", ["angular", "euclidean", "dot"])
def test_one_shard_at_a_time_gives_the_same_answers(tmp_path, metric):
    folder = _build(tmp_path, 2000, 16, metric, shards=3)
    queries = np.random.default_rng(5).standard_normal((60, 16)).astype(np.float32)
    queries[0] = 1.0
    with open_artifact(folder) as reader:
        for search_k in (-1, 50, 20_000):
            every = reader.query_many(queries, 11, search_k=search_k)
            by_shard = reader.query_many(queries, 11, search_k=search_k, one_shard_at_a_time=True)
            assert by_shard == every
            assert len(every[0]) == 11
        # The reader still answers after its shards were unmapped and mapped again.
        assert reader.query(queries[1], 11, search_k=20_000) == every[1]


def _resident_kb(paths: list[Path]) -> dict[str, int]:
    """Resident kB of this process's mappings of each file (from /proc/self/smaps)."""
    names = {str(p.resolve()): 0 for p in paths}
    current = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and "-" in fields[0] and ":" in fields[3]:
            current = fields[5] if len(fields) > 5 else None
        elif fields and fields[0] == "Rss:" and current in names:
            names[current] += int(fields[1])
    return names


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_one_shard_at_a_time_keeps_one_shard_resident(tmp_path, monkeypatch):
    folder = _build(tmp_path, 20_000, 64, "angular", shards=2)
    files = [folder / shard_file(s) for s in range(2)]
    size_kb = min(f.stat().st_size for f in files) // 1024
    queries = np.random.default_rng(5).standard_normal((20, 64)).astype(np.float32)
    exhaustive = 20_000 * 10  # every node of every tree: every page is touched
    seen: list[dict[str, int]] = []
    release = IndexReader._release

    def sampled(self: IndexReader, shard: int) -> None:
        seen.append(_resident_kb(files))  # before the shard is unmapped: its peak
        release(self, shard)

    monkeypatch.setattr(IndexReader, "_release", sampled)
    with open_artifact(folder) as reader:
        reader.query_many(queries, 10, search_k=exhaustive, one_shard_at_a_time=True)
        after = _resident_kb(files)
        reader.query_many(queries, 10, search_k=exhaustive)
        every = _resident_kb(files)
    assert len(seen) == 2
    for shard, resident in enumerate(seen):
        mine, other = (
            resident[str(files[shard].resolve())],
            resident[str(files[1 - shard].resolve())],
        )
        assert mine > size_kb // 2  # the shard in use is read
        assert other < size_kb // 10  # the other one is not resident meanwhile
    assert all(kb < size_kb // 10 for kb in after.values())
    assert all(kb > size_kb // 2 for kb in every.values())  # without it, both stay
