"""The decision table artifact of a classifier version: one Parquet file plus a manifest.

Same layout and guarantees as an index artifact (:mod:`ledger.manifest`): a folder per
(model, version, log position), written under a temporary name and renamed into place,
immutable, checksummed, and switched to by the same serving pointer.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ledger.errors import ArtifactError
from ledger.manifest import (
    MANIFEST,
    STAGING_PREFIX,
    Manifest,
    fsync_path,
    load_manifest,
    overall_checksum,
    position_of,
    sha256_file,
)

DECISIONS_FILE = "decisions.parquet"


def build_decision_table(
    out_dir: Path | str,
    *,
    model: str,
    version: str,
    table: pa.Table,
    log_offsets: Mapping[str, int],
) -> Manifest:
    """Write ``table`` (one row per subject, sorted by subject) as the artifact of
    (model, version, log position); an existing identical artifact is reused.

    Example:
        >>> m = build_decision_table(".ledger/artifacts", model="spam-filter", version="v1",
        ...     table=pa.table({"subject_id": ["a"], "label": ["ham"]}),
        ...     log_offsets={"ledger.decisions:0": 1})  # doctest: +SKIP
        >>> m.kind, m.items  # doctest: +SKIP
        ('decisions', 1)
    """
    plan = Manifest(
        model=model,
        version=version,
        position=position_of(log_offsets),
        log_offsets={str(k): int(v) for k, v in log_offsets.items()},
        dimension=0,
        metric="",
        trees=0,
        seed=0,
        shards=0,
        items=table.num_rows,
        shard_items=(),
        files={},
        input_sha256="",
        checksum="",
        created_at="",
        annoy_version="",
        kind="decisions",
    )
    final = Path(out_dir) / plan.relative_path
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f"{STAGING_PREFIX}{plan.position}-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        # Parquet written by pyarrow is byte-deterministic for the same table and options,
        # so the same log gives the same file (and the same checksum) on every path.
        pq.write_table(table, staging / DECISIONS_FILE, compression="zstd")
        fsync_path(staging / DECISIONS_FILE)
        sha = sha256_file(staging / DECISIONS_FILE)
        files = {DECISIONS_FILE: sha}
        manifest = replace(
            plan,
            files=files,
            input_sha256=sha,
            checksum=overall_checksum(files),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        if final.exists():
            existing = load_manifest(final)
            if existing.checksum != manifest.checksum:
                raise ArtifactError(
                    f"a different decision table exists for this log position at {final}; "
                    "artifacts are immutable: remove it with `ledger artifacts gc` if it is bad"
                )
            return existing
        (staging / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        fsync_path(staging / MANIFEST)
        fsync_path(staging, directory=True)
        staging.rename(final)
        fsync_path(final.parent, directory=True)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_decision_table(folder: Path | str) -> pa.Table:
    """The decision table of an artifact folder."""
    return pq.read_table(Path(folder) / DECISIONS_FILE)
