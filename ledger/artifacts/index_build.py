"""Immutable, deterministic Annoy index artifacts: build, open, verify, list, gc.

An artifact is one folder per (model, version, log position) holding ``manifest.json``,
``ids.parquet`` (the entity-id map) and one Annoy file per shard; :mod:`ledger.artifacts.manifest`
describes the format.

Determinism (DESIGN decision 6): items are added in entity-id order with a fixed seed and
every shard is built with ``n_jobs=1``, because Annoy's multi-threaded build gives a
different file on every run. Parallelism comes from shards instead: an entity's shard is a
stable hash (crc32) of its id, and each shard is built in its own process. The files depend
on the input and on ``shards``, never on how many worker processes built them. A worker
holds its whole shard while it builds (Annoy reads every node, in its file mapping), so by
default half the shards are built at a time: the workers hold at most half the index.

The workers (:mod:`ledger.artifacts.shard_jobs`) are fresh interpreters started with
:mod:`subprocess`, not multiprocessing: multiprocessing's ``spawn`` re-imports the caller's
``__main__`` in every worker (a script without an ``if __name__ == "__main__":`` guard ran
again and failed) and leaves a resource tracker and workers behind when the caller is
killed, holding its stdout/stderr open. The vectors are first written to one raw input
file per shard (:mod:`ledger.artifacts.shard_inputs`), in chunks, so that neither a matrix
in memory nor batches streamed out of the store (:func:`build_index_streamed`) are ever
copied whole; a worker reads its shard's file in chunks and its job as JSON on stdin, and
dies with its parent: end of file on stdin, and on Linux PR_SET_PDEATHSIG. On SIGTERM or
an exception the build kills and reaps its workers and removes its staging folder; a
SIGTERM is then sent again to the handler that was there before (by default the process
ends, killed by the signal).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from ledger.artifacts.manifest import (
    ID_MAP,
    STAGING_PREFIX,
    Manifest,
    fsync_path,
    path_part,
    position_of,
    publish,
    sha256_file,
    shard_file,
)
from ledger.artifacts.shard_inputs import ShardInputs, input_digest, item_positions
from ledger.artifacts.shard_jobs import AnnoyMetric as AnnoyMetric
from ledger.artifacts.shard_jobs import (
    ShardParams,
    Terminated,
    build_in_workers,
    build_shard_file,
    resend_sigterm,
    sigterm_raises,
)
from ledger.artifacts.shard_jobs import Vectors as Vectors
from ledger.contract.rules import METRICS
from ledger.errors import ArtifactError, ContractError

DEFAULT_TREES = 50
DEFAULT_SEED = 1
# A constant, not the machine's core count: ``shards`` is part of what the files are, and
# the same log must give the same artifact on any machine. A worker holds its whole shard
# (Annoy's build reads every node, in its file mapping), so half the shards are built at a
# time: four suit a 2-core box, the workers holding half the index at once (decision 11).
DEFAULT_SHARDS = 4


# -- build ------------------------------------------------------------------------------------


def shard_of(entity_ids: Sequence[str], shards: int) -> npt.NDArray[np.int64]:
    """The shard of each entity: crc32 of its UTF-8 id modulo ``shards`` (stable everywhere).

    Example:
        >>> shard_of(["a", "b", "c"], 2).tolist()
        [1, 1, 1]
    """
    return np.fromiter(
        (zlib.crc32(i.encode()) % shards for i in entity_ids),
        dtype=np.int64,
        count=len(entity_ids),
    )


def _check_params(
    *, metric: str, trees: int, shards: int, jobs: int | None, log_offsets: Mapping[str, int]
) -> None:
    if metric not in METRICS:
        raise ContractError(
            f"metric must be one of {METRICS}",
            field="metric",
            expected="|".join(METRICS),
            got=repr(metric),
        )
    if trees < 1 or shards < 1 or (jobs is not None and jobs < 1):
        raise ArtifactError(f"trees, shards and jobs must be >= 1 (got {trees}, {shards}, {jobs})")
    if any(not isinstance(v, int) or v < 0 for v in log_offsets.values()):
        raise ArtifactError("log_offsets values must be offsets (ints >= 0)")


def _check_vectors(entity_ids: Sequence[str], vectors: npt.ArrayLike) -> Vectors:
    arr = np.asarray(vectors)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ContractError(
            "vectors must be an (n, d) matrix",
            field="vectors",
            expected="(n, d), d >= 1",
            got=str(arr.shape),
        )
    if arr.shape[0] != len(entity_ids):
        raise ContractError(
            "one vector per entity id",
            field="vectors",
            expected=f"{len(entity_ids)} rows",
            got=f"{arr.shape[0]} rows",
        )
    out = arr.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise ContractError(
            "vectors must be finite", field="vectors", expected="finite", got="NaN or inf"
        )
    return out


def build_index(
    out_dir: Path | str,
    *,
    model: str,
    version: str,
    entity_ids: Sequence[str],
    vectors: npt.ArrayLike,
    metric: str,
    log_offsets: Mapping[str, int],
    trees: int = DEFAULT_TREES,
    seed: int = DEFAULT_SEED,
    shards: int = DEFAULT_SHARDS,
    jobs: int | None = None,
) -> Manifest:
    """Build the artifact of (model, version, log position) under ``out_dir``; its manifest.

    The artifact lands at ``out_dir / manifest.relative_path`` (see :func:`artifact_path`).
    Building an artifact that exists is a no-op: the existing one is checked (same input,
    same parameters, checksums intact) and its manifest returned. For more vectors than
    should be held in memory at once, :func:`build_index_streamed` takes them in batches.

    Args:
        out_dir: the artifacts root, e.g. ``<home>/artifacts``.
        model, version: whose embeddings these are.
        entity_ids: one unique id per row of ``vectors`` (any order; sorted here).
        vectors: ``(n, d)`` float32 matrix (other float dtypes are converted).
        metric: ``angular`` | ``euclidean`` | ``dot`` (Annoy's names).
        log_offsets: what the input covers, e.g. ``{"ledger.embeddings:0": 1200}`` (next
            offset per topic:partition); it names the artifact.
        trees, seed: Annoy parameters (more trees: better recall, bigger files).
        shards: how many Annoy files; part of the artifact's identity.
        jobs: worker processes (default: half the shards, at most the cpu count, at least
            one): each holds its shard while it builds; never changes the bytes.

    Raises:
        ContractError: bad vectors or metric. ArtifactError: duplicate ids, an artifact
        for this position exists with different content, or a worker process failed (its
        last stderr line). ChecksumMismatch: it is corrupt.

    Example:
        >>> m = build_index(".ledger/artifacts", model="embedder", version="v1",
        ...                 entity_ids=["a", "b"], vectors=np.eye(2, dtype="float32"),
        ...                 metric="angular", log_offsets={"ledger.embeddings:0": 2})
        >>> m.items, m.shards
        (2, 4)
    """
    ids = list(entity_ids)
    arr = _check_vectors(ids, vectors)
    _check_params(metric=metric, trees=trees, shards=shards, jobs=jobs, log_offsets=log_offsets)
    order = np.asarray(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.int64)
    sorted_ids = [ids[i] for i in order]
    duplicates = [a for a, b in zip(sorted_ids, sorted_ids[1:], strict=False) if a == b]
    if duplicates:
        raise ArtifactError(f"entity ids must be unique; {duplicates[0]!r} appears twice")

    def write(inputs: ShardInputs, where: npt.NDArray[np.int64], items: Items) -> None:
        for start in range(0, len(order), _CHUNK):
            block = arr[order[start : start + _CHUNK]]
            _scatter(inputs, np.arange(start, start + len(block)), block, where, items)

    spec = BuildSpec(model, version, metric, dict(log_offsets), trees, seed, shards, jobs)
    return _build(out_dir, spec, sorted_ids, arr.shape[1], write)


def build_index_streamed(
    out_dir: Path | str,
    *,
    model: str,
    version: str,
    entity_ids: Sequence[str],
    row_keys: npt.NDArray[np.int64],
    batches: Iterable[tuple[npt.NDArray[np.int64], npt.ArrayLike]],
    dimension: int,
    metric: str,
    log_offsets: Mapping[str, int],
    trees: int = DEFAULT_TREES,
    seed: int = DEFAULT_SEED,
    shards: int = DEFAULT_SHARDS,
    jobs: int | None = None,
) -> Manifest:
    """:func:`build_index` for vectors that come in batches, in any order: the same artifact
    (same bytes) for the same ids and vectors, with only one batch in memory at a time.

    Each batch is ``(keys, vectors)``: a row is the vector of the entity whose
    ``row_keys`` entry is its key; rows with a key no entity has are skipped (e.g. older
    vectors of the same entities). Each entity's vector must come exactly once.

    Args:
        entity_ids: the ids to index, sorted ascending (by code point), unique.
        row_keys: one unique int64 key per id (e.g. where its vector sits in the log).
        batches: ``(keys, (k, dimension) vectors)`` pairs, read once.
        dimension: the vectors' width. The rest: as in :func:`build_index`.

    Raises:
        ContractError: bad vectors or metric. ArtifactError: ids not sorted or unique, keys
        not unique, an entity whose vector never came or came twice; and as
        :func:`build_index`.

    Example:
        >>> m = build_index_streamed(".ledger/artifacts", model="embedder", version="v1",
        ...     entity_ids=["a", "b"], row_keys=np.array([3, 7]),
        ...     batches=[(np.array([7, 3]), np.array([[0, 1], [1, 0]], "float32"))],
        ...     dimension=2, metric="angular", log_offsets={"ledger.embeddings:0": 2})
        >>> m.items  # the artifact build_index's example builds: same ids, same vectors
        2
    """
    ids = list(entity_ids)
    _check_params(metric=metric, trees=trees, shards=shards, jobs=jobs, log_offsets=log_offsets)
    if dimension < 1:
        raise ContractError("dimension must be >= 1", field="dimension", got=str(dimension))
    if any(a >= b for a, b in zip(ids, ids[1:], strict=False)):
        raise ArtifactError("entity ids must be sorted and unique")
    keys = np.asarray(row_keys, dtype=np.int64)
    by_key = np.argsort(keys, kind="stable")
    sorted_keys = keys[by_key]
    if len(keys) != len(ids) or (len(keys) > 1 and (np.diff(sorted_keys) == 0).any()):
        raise ArtifactError("row_keys must hold one unique key per entity id")

    def write(inputs: ShardInputs, where: npt.NDArray[np.int64], items: Items) -> None:
        for batch_keys, batch_vectors in batches:
            found = np.searchsorted(sorted_keys, batch_keys)
            hit = found < len(keys)
            hit[hit] = sorted_keys[found[hit]] == batch_keys[hit]
            rows = np.asarray(batch_vectors)[hit] if not hit.all() else batch_vectors
            _scatter(inputs, by_key[found[hit]], rows, where, items)

    spec = BuildSpec(model, version, metric, dict(log_offsets), trees, seed, shards, jobs)
    return _build(out_dir, spec, ids, dimension, write)


Items = npt.NDArray[np.int64]
_CHUNK = 16_384  # rows per write: ~25 MB at 384-d


@dataclass(frozen=True, slots=True)
class BuildSpec:
    """What names and parameterises a build (the arguments of :func:`build_index`)."""

    model: str
    version: str
    metric: str
    log_offsets: dict[str, int]
    trees: int
    seed: int
    shards: int
    jobs: int | None


def _scatter(
    inputs: ShardInputs,
    positions: Items,
    vectors: npt.ArrayLike,
    where: npt.NDArray[np.int64],
    items: Items,
) -> None:
    # Row k of vectors belongs to the entity at ``positions[k]`` of the sorted ids.
    rows = np.asarray(vectors)
    shard = where[positions]
    for s in range(inputs.shards):
        mask = shard == s
        if mask.any():
            inputs.write(s, items[positions[mask]], rows[mask])


def _build(
    out_dir: Path | str,
    spec: BuildSpec,
    sorted_ids: list[str],
    dimension: int,
    write_inputs: Callable[[ShardInputs, npt.NDArray[np.int64], Items], None],
) -> Manifest:
    """The build, once the ids are sorted: 1. write each shard's input file (into a hidden
    folder beside the artifact, removed at the end); 2. name the input (digest) and plan
    the manifest; 3. publish: the id map and one worker per shard, reading its file."""
    where = shard_of(sorted_ids, spec.shards)
    items = item_positions(where, spec.shards)
    counts = tuple(int(c) for c in np.bincount(where, minlength=spec.shards))
    position = position_of(spec.log_offsets)
    version_dir = Path(out_dir) / path_part(spec.model) / path_part(spec.version)
    version_dir.mkdir(parents=True, exist_ok=True)
    folder = version_dir / f"{STAGING_PREFIX}{position}-input-{os.getpid()}-{secrets.token_hex(4)}"
    folder.mkdir()
    try:
        inputs = ShardInputs(
            folder, [shard_file(s) for s in range(spec.shards)], counts, dimension=dimension
        )
        try:
            write_inputs(inputs, where, items)
        finally:
            inputs.close()
        inputs.check_complete()
        plan = Manifest(
            model=spec.model,
            version=spec.version,
            position=position,
            log_offsets=spec.log_offsets,
            dimension=dimension,
            metric=spec.metric,
            trees=spec.trees,
            seed=spec.seed,
            shards=spec.shards,
            items=len(sorted_ids),
            shard_items=counts,
            files={},
            input_sha256=input_digest(sorted_ids, inputs.paths, dimension),
            checksum="",
            created_at="",
            annoy_version=package_version("annoy"),
        )
        return publish(
            out_dir,
            plan,
            lambda staging: {
                ID_MAP: _write_id_map(staging, sorted_ids, where, items),
                **_build_shards(staging, inputs.paths, plan, jobs=spec.jobs),
            },
        )
    except Terminated:
        # The workers are reaped and the staging folder is gone; the inputs go too: now let
        # SIGTERM do what it would have done (by default, end the process here).
        shutil.rmtree(folder, ignore_errors=True)
        resend_sigterm()
        raise ArtifactError("the index build was stopped by SIGTERM") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _write_id_map(
    staging: Path, sorted_ids: list[str], where: npt.NDArray[np.int64], items: Items
) -> str:
    # The item of an entity is its rank among the (sorted) ids of its shard.
    table = pa.table(
        {
            "entity_id": pa.array(sorted_ids, type=pa.string()),
            "shard": pa.array(where.astype(np.int32)),
            "item": pa.array(items.astype(np.int32)),
        }
    )
    path = staging / ID_MAP
    pq.write_table(table, path, compression="zstd")
    fsync_path(path)
    return sha256_file(path)


def default_jobs(shards: int) -> int:
    """Build processes when none are asked for: half the shards (at least one, at most the
    cpu count), so the workers hold at most half the index at once (DESIGN decision 11)."""
    return max(1, min(shards // 2, os.cpu_count() or 1))


def _build_shards(
    staging: Path, input_paths: Sequence[Path], plan: Manifest, *, jobs: int | None
) -> dict[str, str]:
    workers = min(plan.shards, jobs if jobs is not None else default_jobs(plan.shards))
    params = ShardParams(plan.dimension, plan.metric, plan.trees, plan.seed)
    shards = [(shard_file(s), input_paths[s]) for s in range(plan.shards)]
    if workers == 1 or not sys.executable:  # no interpreter to start: build here
        return {name: build_shard_file(path, staging / name, params) for name, path in shards}
    with sigterm_raises():
        return build_in_workers(staging, shards, params, workers=workers)


# -- read -------------------------------------------------------------------------------------
