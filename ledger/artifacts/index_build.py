"""Immutable, deterministic Annoy index artifacts: build, open, verify, list, gc.

An artifact is one folder per (model, version, log position) holding ``manifest.json``,
``ids.parquet`` (the entity-id map) and one Annoy file per shard; :mod:`ledger.artifacts.manifest`
describes the format.

Determinism (DESIGN decision 6): items are added in entity-id order with a fixed seed and
every shard is built with ``n_jobs=1``, because Annoy's multi-threaded build gives a
different file on every run. Parallelism comes from shards instead: an entity's shard is a
stable hash (crc32) of its id, and each shard is built in its own process. The files depend
on the input and on ``shards``, never on how many worker processes built them.

The workers (:mod:`ledger.artifacts.shard_jobs`) are fresh interpreters started with
:mod:`subprocess`, not multiprocessing: multiprocessing's ``spawn`` re-imports the caller's
``__main__`` in every worker (a script without an ``if __name__ == "__main__":`` guard ran
again and failed) and leaves a resource tracker and workers behind when the caller is
killed, holding its stdout/stderr open. A worker reads its shard from a ``.npy`` file in the
staging folder (memory-mapped) and its job as JSON on stdin, and dies with its parent: end of
file on stdin, and on Linux PR_SET_PDEATHSIG. On SIGTERM or an exception the build kills and
reaps its workers and removes its staging folder; a SIGTERM is then sent again to the
handler that was there before (by default the process ends, killed by the signal).
"""

from __future__ import annotations

import hashlib
import os
import sys
import zlib
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from ledger.artifacts.manifest import (
    ID_MAP,
    Manifest,
    fsync_path,
    position_of,
    publish,
    sha256_file,
    shard_file,
)
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
# the same log must give the same artifact on any machine. Two suits a 2-core box.
DEFAULT_SHARDS = 2


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


def _input_digest(sorted_ids: Sequence[str], sorted_vectors: Vectors) -> str:
    h = hashlib.sha256(f"{sorted_vectors.shape[0]}x{sorted_vectors.shape[1]}\n".encode())
    h.update(b"".join(len(b).to_bytes(4, "little") + b for b in (i.encode() for i in sorted_ids)))
    h.update(np.ascontiguousarray(sorted_vectors, dtype="<f4").data)
    return h.hexdigest()


def _check_inputs(
    entity_ids: Sequence[str],
    vectors: npt.ArrayLike,
    *,
    metric: str,
    trees: int,
    shards: int,
    jobs: int | None,
    log_offsets: Mapping[str, int],
) -> Vectors:
    if metric not in METRICS:
        raise ContractError(
            f"metric must be one of {METRICS}",
            field="metric",
            expected="|".join(METRICS),
            got=repr(metric),
        )
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
    if trees < 1 or shards < 1 or (jobs is not None and jobs < 1):
        raise ArtifactError(f"trees, shards and jobs must be >= 1 (got {trees}, {shards}, {jobs})")
    if any(not isinstance(v, int) or v < 0 for v in log_offsets.values()):
        raise ArtifactError("log_offsets values must be offsets (ints >= 0)")
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
    same parameters, checksums intact) and its manifest returned.

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
        jobs: worker processes (default ``min(shards, cpu count)``); never changes the bytes.

    Raises:
        ContractError: bad vectors or metric. ArtifactError: duplicate ids, an artifact
        for this position exists with different content, or a worker process failed (its
        last stderr line). ChecksumMismatch: it is corrupt.

    Example:
        >>> m = build_index(".ledger/artifacts", model="embedder", version="v1",
        ...                 entity_ids=["a", "b"], vectors=np.eye(2, dtype="float32"),
        ...                 metric="angular", log_offsets={"ledger.embeddings:0": 2})
        >>> m.items, m.shards
        (2, 2)
    """
    ids = list(entity_ids)
    arr = _check_inputs(
        ids, vectors, metric=metric, trees=trees, shards=shards, jobs=jobs, log_offsets=log_offsets
    )
    n, dimension = arr.shape
    order = sorted(range(n), key=ids.__getitem__)
    sorted_ids = [ids[i] for i in order]
    duplicates = [a for a, b in zip(sorted_ids, sorted_ids[1:], strict=False) if a == b]
    if duplicates:
        raise ArtifactError(f"entity ids must be unique; {duplicates[0]!r} appears twice")
    sorted_vectors: Vectors = arr[np.asarray(order, dtype=np.int64)] if n else arr
    where = shard_of(sorted_ids, shards)
    plan = Manifest(
        model=model,
        version=version,
        position=position_of(log_offsets),
        log_offsets={str(k): int(v) for k, v in log_offsets.items()},
        dimension=dimension,
        metric=metric,
        trees=trees,
        seed=seed,
        shards=shards,
        items=n,
        shard_items=tuple(int(c) for c in np.bincount(where, minlength=shards)),
        files={},
        input_sha256=_input_digest(sorted_ids, sorted_vectors),
        checksum="",
        created_at="",
        annoy_version=package_version("annoy"),
    )
    try:
        return publish(
            out_dir,
            plan,
            lambda staging: {
                ID_MAP: _write_id_map(staging, sorted_ids, where),
                **_build_shards(staging, sorted_vectors, where, plan, jobs=jobs),
            },
        )
    except Terminated:
        # The workers are reaped and the staging folder is gone: now let SIGTERM do what it
        # would have done (by default, end the process here).
        resend_sigterm()
        raise ArtifactError("the index build was stopped by SIGTERM") from None


def _write_id_map(staging: Path, sorted_ids: list[str], where: npt.NDArray[np.int64]) -> str:
    # The item of an entity is its rank among the (sorted) ids of its shard.
    items = np.zeros(len(sorted_ids), dtype=np.int32)
    for shard in np.unique(where):
        mask = where == shard
        items[mask] = np.arange(int(mask.sum()), dtype=np.int32)
    table = pa.table(
        {
            "entity_id": pa.array(sorted_ids, type=pa.string()),
            "shard": pa.array(where.astype(np.int32)),
            "item": pa.array(items),
        }
    )
    path = staging / ID_MAP
    pq.write_table(table, path, compression="zstd")
    fsync_path(path)
    return sha256_file(path)


def _build_shards(
    staging: Path,
    sorted_vectors: Vectors,
    where: npt.NDArray[np.int64],
    plan: Manifest,
    *,
    jobs: int | None,
) -> dict[str, str]:
    workers = min(plan.shards, jobs if jobs is not None else (os.cpu_count() or 1))
    params = ShardParams(plan.dimension, plan.metric, plan.trees, plan.seed)

    def shards() -> Iterator[tuple[str, Vectors]]:
        # Lazily: a shard's vectors are copied out when it is about to be built.
        for s in range(plan.shards):
            yield shard_file(s), sorted_vectors[where == s]

    if workers == 1 or not sys.executable:  # no interpreter to start: build here
        return {name: build_shard_file(v, staging / name, params) for name, v in shards()}
    with sigterm_raises():
        return build_in_workers(staging, shards(), params, workers=workers)


# -- read -------------------------------------------------------------------------------------
