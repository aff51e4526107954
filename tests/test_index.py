"""Index artifacts: deterministic bytes, correct answers, atomic and immutable folders, gc."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from annoy import AnnoyIndex

import ledger.artifacts.index_build
import ledger.artifacts.manifest
from ledger.artifacts.index_build import build_index, shard_of
from ledger.artifacts.index_reader import open_artifact
from ledger.artifacts.listing import gc, list_artifacts
from ledger.artifacts.manifest import (
    MANIFEST,
    Manifest,
    artifact_path,
    load_manifest,
    shard_file,
    verify_artifact,
)
from ledger.errors import ArtifactError, ChecksumMismatch, ContractError

N, D = 3000, 32
OFFSETS = {"t.embeddings:0": 1500, "t.embeddings:1": 1502}


def clustered(n: int = N, d: int = D, *, clusters: int = 30, seed: int = 7):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32) * 4
    labels = rng.integers(0, clusters, n)
    vectors = centres[labels] + rng.standard_normal((n, d)).astype(np.float32)
    ids = [f"doc-{i:05d}" for i in rng.permutation(n)]  # not in sorted order on purpose
    return ids, vectors.astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return clustered()


def build(root, ids, vectors, **kw):
    opts = {
        "model": "embedder",
        "version": "v1",
        "metric": "angular",
        "log_offsets": OFFSETS,
        "trees": 10,
        "jobs": 1,
    }
    opts.update(kw)
    return build_index(root, entity_ids=ids, vectors=vectors, **opts)


def file_digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.name != MANIFEST
    }


def test_same_input_gives_byte_identical_files_across_runs_orders_and_worker_counts(tmp_path, data):
    ids, vectors = data
    one = build(tmp_path / "a", ids, vectors, shards=2, jobs=1)
    rng = np.random.default_rng(1)
    perm = rng.permutation(N)
    again = build(tmp_path / "b", [ids[i] for i in perm], vectors[perm], shards=2, jobs=1)
    pooled = build(tmp_path / "c", ids, vectors, shards=2, jobs=2)  # 2 spawned processes

    digests = [
        file_digests(root / m.relative_path)
        for root, m in ((tmp_path / "a", one), (tmp_path / "b", again), (tmp_path / "c", pooled))
    ]
    assert sorted(digests[0]) == ["ids.parquet", "shard-0000.ann", "shard-0001.ann"]
    assert digests[0] == digests[1] == digests[2]
    assert one.checksum == again.checksum == pooled.checksum
    assert one.same_build(pooled) and dict(one.files) == digests[0]


def test_manifest_records_the_build_and_round_trips_through_json(tmp_path, data):
    ids, vectors = data
    m = build(tmp_path, ids, vectors, shards=3, trees=7, seed=11)
    on_disk = load_manifest(
        artifact_path(tmp_path, model="embedder", version="v1", log_offsets=OFFSETS)
    )
    assert on_disk == m == Manifest.from_json(m.to_json())
    assert (m.model, m.version, m.dimension, m.metric, m.trees, m.seed, m.shards, m.items) == (
        "embedder",
        "v1",
        D,
        "angular",
        7,
        11,
        3,
        N,
    )
    assert dict(m.log_offsets) == OFFSETS and sum(m.shard_items) == N
    assert m.shard_items == tuple(np.bincount(shard_of(ids, 3), minlength=3))


def exact_top(vectors, queries, k, metric):
    if metric == "angular":
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        scores = -(q @ unit.T)
    elif metric == "dot":
        scores = -(queries @ vectors.T)
    else:
        scores = ((queries[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
    return np.argsort(scores, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("metric", ["angular", "euclidean", "dot"])
def test_sharded_index_recall_at_10_against_exact_numpy_search(tmp_path, data, metric):
    ids, vectors = data
    m = build(tmp_path, ids, vectors, metric=metric, shards=3, trees=30)
    rng = np.random.default_rng(3)
    queries = vectors[rng.choice(N, 100, replace=False)] + 0.1 * rng.standard_normal(
        (100, D)
    ).astype(np.float32)
    truth = exact_top(vectors, queries, 10, metric)
    with open_artifact(tmp_path / m.relative_path) as index:
        found = index.query_many(queries, 10)
    hits = sum(len({ids[j] for j in truth[q]} & {i for i, _ in found[q]}) for q in range(100))
    assert hits / 1000 >= 0.95
    for row in found:
        dists = [d for _, d in row]
        assert dists == sorted(dists, reverse=(metric == "dot"))


def test_one_shard_answers_exactly_like_an_unsharded_annoy_index(tmp_path, data):
    ids, vectors = data
    m = build(tmp_path, ids, vectors, shards=1, trees=10, seed=5)
    order = sorted(range(N), key=ids.__getitem__)
    plain = AnnoyIndex(D, "angular")
    plain.set_seed(5)
    for item, row in enumerate(order):
        plain.add_item(item, vectors[row].tolist())
    plain.build(10, n_jobs=1)
    plain.save(str(tmp_path / "plain.ann"))
    folder = tmp_path / m.relative_path
    assert (folder / shard_file(0)).read_bytes() == (tmp_path / "plain.ann").read_bytes()

    queries = np.random.default_rng(9).standard_normal((50, D)).astype(np.float32)
    with open_artifact(folder) as index:
        for q in queries:
            items, dists = plain.get_nns_by_vector(q.tolist(), 10, include_distances=True)
            expected = [(ids[order[i]], d) for i, d in zip(items, dists, strict=True)]
            assert index.query(q, 10) == expected


def test_merge_across_shards_breaks_distance_ties_by_entity_id(tmp_path):
    ids = [f"same-{c}" for c in "hgfedcba"] + [f"other-{i}" for i in range(40)]
    rng = np.random.default_rng(0)
    vectors = np.vstack([np.ones((8, 4)), 5 + rng.standard_normal((40, 4))]).astype(np.float32)
    assert len(set(shard_of(ids[:8], 3).tolist())) > 1  # the tied ids live in several shards
    m = build(tmp_path, ids, vectors, metric="euclidean", shards=3, trees=5)
    with open_artifact(tmp_path / m.relative_path) as index:
        assert index.query(np.ones(4), 5) == [(f"same-{c}", 0.0) for c in "abcde"]


def test_reader_exposes_items_vectors_and_length(tmp_path, data):
    ids, vectors = data
    m = build(tmp_path, ids, vectors, shards=2)
    with open_artifact(tmp_path / m.relative_path, verify=True) as index:
        assert len(index) == N
        assert index.item_ids == sorted(ids)
        assert np.array_equal(index.get_vector(ids[17]), vectors[17])
        with pytest.raises(KeyError):
            index.get_vector("nobody")
        with pytest.raises(ContractError):
            index.query(np.ones(D + 1), 3)


def test_empty_input_builds_an_index_that_finds_nothing(tmp_path):
    m = build(tmp_path, [], np.zeros((0, 8), dtype=np.float32), shards=2)
    assert m.items == 0 and m.shard_items == (0, 0)
    with open_artifact(tmp_path / m.relative_path, verify=True) as index:
        assert len(index) == 0 and index.query(np.ones(8), 5) == []


def test_exception_mid_build_leaves_no_partial_artifact(tmp_path, data, monkeypatch):
    ids, vectors = data

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash after the shards were written")

    monkeypatch.setattr(
        ledger.artifacts.manifest, "overall_checksum", crash
    )  # after the files, before the manifest
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(tmp_path, ids, vectors)
    assert list_artifacts(tmp_path) == []
    assert list((tmp_path / "embedder" / "v1").iterdir()) == []  # no staging folder either
    monkeypatch.undo()
    assert build(tmp_path, ids, vectors).items == N


def test_killed_build_leaves_no_artifact_and_gc_removes_its_staging_folder(tmp_path):
    script = textwrap.dedent(f"""
        import numpy as np
        from ledger.artifacts.index_build import build_index
        v = np.random.default_rng(0).standard_normal((100000, 32)).astype("float32")
        build_index({str(tmp_path)!r}, model="m", version="v1", entity_ids=[str(i) for i in
                    range(100000)], vectors=v, metric="angular", log_offsets={{}},
                    trees=100, jobs=1)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    version_dir = tmp_path / "m" / "v1"
    deadline = time.monotonic() + 30
    while not (version_dir.is_dir() and any(version_dir.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    staging = list(version_dir.iterdir())
    assert [p.name.startswith(".tmp-") for p in staging] == [True]
    assert list_artifacts(tmp_path) == []
    result = gc(tmp_path)
    assert result.leftovers == tuple(staging) and list(version_dir.iterdir()) == []


def test_rebuilding_an_existing_position_is_a_no_op(tmp_path, data):
    ids, vectors = data
    first = build(tmp_path, ids, vectors)
    folder = tmp_path / first.relative_path
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = build(tmp_path, ids[::-1], vectors[::-1])
    assert again == first  # same created_at: the existing manifest, not a new build
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes


@pytest.mark.parametrize("change", ["trees", "vectors"])
def test_rebuilding_a_position_with_different_content_is_refused(tmp_path, data, change):
    ids, vectors = data
    build(tmp_path, ids, vectors)
    if change == "trees":
        kwargs = {"trees": 11}
    else:
        moved = vectors.copy()
        moved[0] += 1
        kwargs = {"vectors": moved}
    with pytest.raises(ArtifactError, match="exists with different input"):
        build_index(
            tmp_path,
            model="embedder",
            version="v1",
            entity_ids=ids,
            metric="angular",
            log_offsets=OFFSETS,
            jobs=1,
            **{"trees": 10, "vectors": vectors, **kwargs},
        )


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
@pytest.mark.parametrize("name", ["shard-0001.ann", "ids.parquet"])
def test_checksum_mismatch_is_detected_after_damaging_a_file(tmp_path, data, damage, name):
    ids, vectors = data
    m = build(tmp_path, ids, vectors)
    folder = tmp_path / m.relative_path
    assert verify_artifact(folder) == []
    file = folder / name
    raw = bytearray(file.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x01
        file.write_bytes(bytes(raw))
    elif damage == "truncate":
        file.write_bytes(bytes(raw[: len(raw) - 16]))
    else:
        file.unlink()
    assert verify_artifact(folder) == [name]
    with pytest.raises(ChecksumMismatch) as caught:
        open_artifact(folder, verify=True)
    assert caught.value.files == (name,)
    with pytest.raises(ChecksumMismatch):
        build(tmp_path, ids, vectors)  # a rebuild does not bless a corrupt artifact


def test_build_refuses_bad_input(tmp_path):
    ok = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(ArtifactError, match="'a' appears twice"):
        build(tmp_path, ["a", "a"], ok)
    with pytest.raises(ContractError, match="finite"):
        build(tmp_path, ["a", "b"], np.array([[1, 2, 3, np.nan]] * 2, dtype=np.float32))
    with pytest.raises(ContractError, match="one vector per entity"):
        build(tmp_path, ["a"], ok)
    with pytest.raises(ContractError, match="metric"):
        build(tmp_path, ["a", "b"], ok, metric="cosine")
    assert not tmp_path.joinpath("embedder").exists()


def test_unusual_model_names_stay_one_folder_inside_the_root(tmp_path):
    m = build(tmp_path, ["a"], np.ones((1, 3), dtype=np.float32), model="../team/x", version="..")
    folder = tmp_path / m.relative_path
    assert folder.resolve().parent.parent.parent == tmp_path.resolve()
    assert [e.manifest.model for e in list_artifacts(tmp_path, "../team/x")] == ["../team/x"]


def test_list_artifacts_by_model_skips_folders_that_are_not_artifacts(tmp_path):
    one = np.ones((1, 3), dtype=np.float32)
    build(tmp_path, ["a"], one, model="m1", log_offsets={"t:0": 1})
    build(tmp_path, ["a"], one, model="m2", version="v2", log_offsets={"t:0": 1})
    (tmp_path / "m1" / "v1" / "stray").mkdir()
    assert [(e.manifest.model, e.manifest.version) for e in list_artifacts(tmp_path)] == [
        ("m1", "v1"),
        ("m2", "v2"),
    ]
    assert [e.manifest.model for e in list_artifacts(tmp_path, "m2")] == ["m2"]
    assert list_artifacts(tmp_path, "nobody") == []


def test_gc_keeps_pinned_and_newest_artifacts_per_version(tmp_path):
    one = np.ones((1, 3), dtype=np.float32)
    v1 = [
        tmp_path / build(tmp_path, ["a"], one, log_offsets={"t:0": n}).relative_path
        for n in (1, 2, 3)
    ]
    v2 = tmp_path / build(tmp_path, ["a"], one, version="v2").relative_path

    planned = gc(tmp_path, keep={v1[0]}, keep_last=1, dry_run=True)
    assert planned.removed == (v1[1],) and v1[1].exists()
    assert set(planned.kept) == {v1[0], v1[2], v2}

    done = gc(tmp_path, keep={v1[0]}, keep_last=1)
    assert done.removed == (v1[1],) and not v1[1].exists()
    assert [e.path for e in list_artifacts(tmp_path)] == [v1[0], v1[2], v2]
    assert not [p for p in (tmp_path / "embedder" / "v1").iterdir() if p.name.startswith(".")]

    gc(tmp_path, keep={v1[0]}, keep_last=0)
    assert [e.path for e in list_artifacts(tmp_path)] == [v1[0]]


def test_worker_count_never_changes_bytes_for_more_shards_than_workers(tmp_path, data):
    ids, vectors = data
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores to run 2 workers")
    a = build(tmp_path / "a", ids, vectors, shards=3, jobs=2)
    b = build(tmp_path / "b", ids, vectors, shards=3, jobs=1)
    assert a.checksum == b.checksum
    assert file_digests(tmp_path / "a" / a.relative_path) == file_digests(
        tmp_path / "b" / b.relative_path
    )


def test_search_k_calibration_stops_when_duplicates_make_the_threshold_unreachable(tmp_path):
    import time

    from ledger.checks.index_facts import measure_recall, read_facts

    vectors = np.ones((600, 8), dtype=np.float32)  # every item ties with every other
    m = build_index(
        tmp_path,
        model="m",
        version="v1",
        entity_ids=[f"e{i:04d}" for i in range(600)],
        vectors=vectors,
        metric="angular",
        log_offsets={"t:0": 600},
        trees=3,
        jobs=1,
    )
    folder = tmp_path / m.relative_path
    started = time.perf_counter()
    with open_artifact(folder) as reader:
        r = measure_recall(read_facts(folder, reader), reader, sample=50, calibrate_to=0.99)
    assert r.search_k <= max(m.shard_items) * m.trees  # never past an exhaustive search
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("n", [11, 12, 20])
def test_recall_of_an_exhaustive_search_is_exactly_one_on_small_sharded_indices(tmp_path, n):
    from ledger.checks.index_facts import measure_recall, read_facts

    vectors = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32)
    m = build_index(
        tmp_path,
        model="m",
        version="v1",
        entity_ids=[f"e{i:03d}" for i in range(n)],
        vectors=vectors,
        metric="angular",
        log_offsets={"t:0": n},
        trees=20,
        jobs=1,
    )
    folder = tmp_path / m.relative_path
    with open_artifact(folder) as reader:
        r = measure_recall(read_facts(folder, reader), reader, search_k=100_000)
    assert r.recall == 1.0  # the truth keeps every shard's full top k


def _streamed(root, ids, vectors, *, batch=700, extra=0, seed=3, **kw):
    """build_index_streamed over ``ids``/``vectors`` arriving shuffled in batches, with
    ``extra`` rows of unknown keys (older vectors) mixed in."""
    order = np.argsort(np.array(ids))
    sorted_ids = [ids[i] for i in order]
    rng = np.random.default_rng(seed)
    keys = rng.permutation(10 * len(ids))[: len(ids) + extra].astype(np.int64)
    row_keys = keys[: len(ids)]  # the key of sorted_ids[k]
    rows = np.concatenate([vectors[order], rng.standard_normal((extra, vectors.shape[1]))])
    shuffle = rng.permutation(len(rows))

    def batches():
        for start in range(0, len(rows), batch):
            pick = shuffle[start : start + batch]
            yield keys[pick], rows[pick].astype(np.float32)

    opts = {"model": "embedder", "version": "v1", "metric": "angular", "log_offsets": OFFSETS}
    opts.update({"trees": 10, "jobs": 1, **kw})
    return ledger.artifacts.index_build.build_index_streamed(
        root,
        entity_ids=sorted_ids,
        row_keys=row_keys,
        batches=batches(),
        dimension=vectors.shape[1],
        **opts,
    )


def test_streamed_build_gives_the_same_bytes_as_the_in_memory_one(tmp_path, data):
    ids, vectors = data
    plain = build(tmp_path / "a", ids, vectors, shards=2)
    streamed = _streamed(tmp_path / "b", ids, vectors, extra=500, shards=2, jobs=2)
    assert (streamed.input_sha256, streamed.checksum) == (plain.input_sha256, plain.checksum)
    assert file_digests(tmp_path / "b" / streamed.relative_path) == file_digests(
        tmp_path / "a" / plain.relative_path
    )
    # Only the artifact is left: no input files, no staging folder.
    assert [p.name for p in (tmp_path / "b" / "embedder" / "v1").iterdir()] == [plain.position]


def test_streamed_build_refuses_a_missing_or_repeated_vector(tmp_path, data):
    ids, vectors = data[0][:50], data[1][:50]
    sorted_ids = sorted(ids)
    opts = {"model": "m", "version": "v1", "metric": "angular", "log_offsets": OFFSETS}
    build_streamed = ledger.artifacts.index_build.build_index_streamed
    keys = np.arange(50, dtype=np.int64)
    rows = vectors.astype(np.float32)
    with pytest.raises(ArtifactError, match="1 items of shard . have no vector"):
        build_streamed(
            tmp_path,
            entity_ids=sorted_ids,
            row_keys=keys,
            batches=[(keys[1:], rows[1:])],
            dimension=D,
            **opts,
        )
    with pytest.raises(ArtifactError, match="written twice"):
        build_streamed(
            tmp_path,
            entity_ids=sorted_ids,
            row_keys=keys,
            batches=[(keys, rows), (keys[:1], rows[:1])],
            dimension=D,
            **opts,
        )
    with pytest.raises(ArtifactError, match="sorted and unique"):
        build_streamed(
            tmp_path, entity_ids=ids, row_keys=keys, batches=[(keys, rows)], dimension=D, **opts
        )
    bad = rows.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ContractError, match="finite"):
        build_streamed(
            tmp_path,
            entity_ids=sorted_ids,
            row_keys=keys,
            batches=[(keys, bad)],
            dimension=D,
            **opts,
        )
    assert not (tmp_path / "m").exists() or list((tmp_path / "m" / "v1").iterdir()) == []


def test_a_file_is_hashed_once_while_unchanged_and_again_once_written(tmp_path, monkeypatch):
    import hashlib as real

    calls = []
    digest = real.file_digest
    monkeypatch.setattr(
        ledger.artifacts.manifest.hashlib,
        "file_digest",
        lambda f, name: calls.append(name) or digest(f, name),
    )
    path = tmp_path / "shard-0000.ann"
    path.write_bytes(b"a" * 4096)
    time.sleep(0.2)  # settled: older than the kernel's timestamp tick
    first = ledger.artifacts.manifest.sha256_file(path)
    assert ledger.artifacts.manifest.sha256_file(path) == first and len(calls) == 1
    with path.open("r+b") as f:  # same size, one byte changed in place
        f.write(b"b")
    assert (
        ledger.artifacts.manifest.sha256_file(path) == real.sha256(b"b" + b"a" * 4095).hexdigest()
    )
    assert len(calls) == 2
    # Just written (within the settling time): never kept, hashed every time.
    path.write_bytes(b"c" * 4096)
    ledger.artifacts.manifest.sha256_file(path)
    ledger.artifacts.manifest.sha256_file(path)
    assert len(calls) == 4
