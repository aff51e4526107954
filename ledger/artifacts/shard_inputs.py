"""The build's input: one raw float32 file per shard, written in chunks, never whole in memory.

A shard worker reads its shard's vectors, in item order, from ``<stem>.input.f32`` (little-
endian float32 rows of ``dimension`` values, no header): the build writes those files first,
from wherever its vectors come from (a matrix in memory, or record batches streamed out of
the store in any order), and then starts the workers. Rows land at their final place with
``pwrite`` (``item * row bytes``), so the writer needs only the rows of one chunk: the page
cache, not the process, holds the rest, and the kernel can write it back under pressure.

An entity's item is its rank among the sorted ids of its shard (see :func:`item_positions`);
the input digest covers the sorted ids and these files, so it names the input whichever
way it was written.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ledger.errors import ArtifactError, ContractError

Vectors = npt.NDArray[np.float32]
_READ_CHUNK = 1 << 20


def input_name(shard_name: str) -> str:
    """``shard-0000.ann`` -> ``shard-0000.input.f32``: the shard's input file in staging."""
    return f"{Path(shard_name).stem}.input.f32"


def item_positions(where: npt.NDArray[np.int64], shards: int) -> npt.NDArray[np.int64]:
    """The item of each (sorted) entity: its rank among the entities of its shard.

    Example:
        >>> item_positions(np.array([1, 0, 1, 1]), 2).tolist()
        [0, 0, 1, 2]
    """
    items = np.zeros(len(where), dtype=np.int64)
    for shard in range(shards):
        mask = where == shard
        items[mask] = np.arange(int(mask.sum()), dtype=np.int64)
    return items


class ShardInputs:
    """The per-shard input files of one build, in ``folder``; rows written where they belong.

    Every item must be written exactly once (:meth:`check_complete` says if one was not);
    a row is finite and ``dimension`` wide, or :class:`ContractError`.

    Example:
        >>> inputs = ShardInputs(staging, ["shard-0000.ann"], [2], dimension=2)  # doctest: +SKIP
        >>> inputs.write(0, np.array([1, 0]), np.eye(2, dtype="float32"))  # doctest: +SKIP
        >>> inputs.close(); inputs.check_complete()  # doctest: +SKIP
    """

    def __init__(
        self, folder: Path, names: Sequence[str], counts: Sequence[int], *, dimension: int
    ) -> None:
        self.paths = [folder / input_name(n) for n in names]
        self.dimension = dimension
        self._row_bytes = 4 * dimension
        self._filled = [np.zeros(c, dtype=bool) for c in counts]
        self._fds: list[int] = []
        try:
            for path, count in zip(self.paths, counts, strict=True):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                self._fds.append(fd)
                os.ftruncate(fd, count * self._row_bytes)
        except BaseException:
            self._close_fds()
            raise

    @property
    def shards(self) -> int:
        return len(self.paths)

    def write(self, shard: int, items: npt.NDArray[np.int64], vectors: npt.ArrayLike) -> None:
        """Write ``vectors[k]`` as item ``items[k]`` of ``shard``."""
        rows = _checked(vectors, len(items), self.dimension)
        filled = self._filled[shard]
        if len(items) and (items.min() < 0 or items.max() >= len(filled)):
            raise ArtifactError(f"an item of shard {shard} is out of range")
        if filled[items].any() or len(np.unique(items)) != len(items):
            raise ArtifactError(f"an item of shard {shard} was written twice")
        filled[items] = True
        fd, size = self._fds[shard], self._row_bytes
        order = np.argsort(items, kind="stable")
        items, rows = items[order], rows[order]
        # Runs of consecutive items go in one call (a sorted input is one run per shard).
        breaks = np.flatnonzero(np.diff(items) != 1) + 1
        for start, stop in zip([0, *breaks.tolist()], [*breaks.tolist(), len(items)], strict=True):
            if start < stop:
                os.pwrite(fd, rows[start:stop].data, int(items[start]) * size)

    def close(self) -> None:
        """Close the files (safe to call again)."""
        self._close_fds()

    def check_complete(self) -> None:
        """ArtifactError if an item was never written."""
        for shard, filled in enumerate(self._filled):
            if not filled.all():
                raise ArtifactError(
                    f"{int((~filled).sum())} items of shard {shard} have no vector: the "
                    "vectors read do not cover the ids"
                )

    def _close_fds(self) -> None:
        while self._fds:
            os.close(self._fds.pop())


def _checked(vectors: npt.ArrayLike, n: int, dimension: int) -> Vectors:
    rows = np.ascontiguousarray(vectors, dtype="<f4")
    if rows.shape != (n, dimension):
        raise ContractError(
            "one vector of the index's dimension per item",
            field="vectors",
            expected=f"({n}, {dimension})",
            got=str(rows.shape),
        )
    if not np.isfinite(rows).all():
        raise ContractError(
            "vectors must be finite", field="vectors", expected="finite", got="NaN or inf"
        )
    return rows


def input_digest(sorted_ids: Sequence[str], paths: Sequence[Path], dimension: int) -> str:
    """sha256 of the input: its shape, the sorted ids, then each shard's input file."""
    h = hashlib.sha256(f"{len(sorted_ids)}x{dimension}\n".encode())
    h.update(b"".join(len(b).to_bytes(4, "little") + b for b in (i.encode() for i in sorted_ids)))
    buffer = bytearray(_READ_CHUNK)
    view = memoryview(buffer)
    for path in paths:
        with path.open("rb", buffering=0) as f:
            while size := f.readinto(buffer):
                h.update(view[:size])
    return h.hexdigest()
