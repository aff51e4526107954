"""The decision table artifact of a classifier version: one Parquet file plus a manifest.

Same layout and guarantees as an index artifact (:mod:`ledger.artifacts.manifest`): a folder per
(model, version, log position), written under a temporary name and renamed into place,
immutable, checksummed, and switched to by the same serving pointer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ledger.artifacts.manifest import Manifest, position_of, publish

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
    # Parquet written by pyarrow is byte-deterministic for the same table and options, so
    # the same log gives the same file, and its digest names the input.
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    digest = hashlib.sha256(data).hexdigest()
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
        input_sha256=digest,
        checksum="",
        created_at="",
        annoy_version="",
        kind="decisions",
    )

    def write(folder: Path) -> dict[str, str]:
        (folder / DECISIONS_FILE).write_bytes(data)
        return {DECISIONS_FILE: digest}

    return publish(out_dir, plan, write)


def read_decision_table(folder: Path | str) -> pa.Table:
    """The decision table of an artifact folder."""
    return pq.read_table(Path(folder) / DECISIONS_FILE)
