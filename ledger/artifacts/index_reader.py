"""Reading an index artifact: the entity-id map and every shard's Annoy file, queried as
one index."""

from __future__ import annotations

import heapq
from pathlib import Path
from types import TracebackType
from typing import cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from annoy import AnnoyIndex

from ledger.artifacts.index_build import AnnoyMetric, Vectors
from ledger.artifacts.manifest import (
    ID_MAP,
    Manifest,
    load_manifest,
    shard_file,
    verify_artifact,
)
from ledger.errors import ArtifactError, ChecksumMismatch, ContractError


class IndexReader:
    """A loaded artifact: its shards (memory-mapped) queried as one index.

    Results merge the shards' top k in the order one index would give (ascending distance;
    descending dot product for ``dot``), ties broken by entity id.

    Example:
        >>> path = ".ledger/artifacts/embedder/v1/3f9c0a1b2c3d4e5f"
        >>> with open_artifact(path) as r:  # doctest: +SKIP
        ...     r.query(r.get_vector("doc-1"), 3)
        [('doc-1', 0.0), ('doc-7', 0.41), ('doc-3', 0.52)]
    """

    def __init__(
        self, path: Path, manifest: Manifest, ids: list[list[str]], shards: list[AnnoyIndex]
    ) -> None:
        self.path = path
        self.manifest = manifest
        self._ids = ids
        self._shards = shards
        self._where: dict[str, tuple[int, int]] | None = None
        self._descending = manifest.metric == "dot"
        #: Annoy's search_k per shard when a query gives none (-1: Annoy's trees x k). The
        #: serving pointer sets the value the rollback calibrated (see ledger.serving.pointers).
        self.search_k = -1

    def __len__(self) -> int:
        return self.manifest.items

    def __enter__(self) -> IndexReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Unmap the shard files."""
        for shard in self._shards:
            shard.unload()
        self._shards = []

    @property
    def item_ids(self) -> list[str]:
        """Every entity id in the index, sorted."""
        return sorted(i for ids in self._ids for i in ids)

    def get_vector(self, entity_id: str) -> Vectors:
        """The stored vector of ``entity_id``; ``KeyError`` if it is not in the index."""
        if self._where is None:
            self._where = {i: (s, n) for s, ids in enumerate(self._ids) for n, i in enumerate(ids)}
        shard, item = self._where[entity_id]
        return np.asarray(self._shards[shard].get_item_vector(item), dtype=np.float32)

    def _check(self, vector: npt.ArrayLike) -> list[float]:
        v = np.asarray(vector, dtype=np.float32)
        if v.shape != (self.manifest.dimension,):
            raise ContractError(
                "query vector has the wrong shape",
                field="vector",
                expected=f"({self.manifest.dimension},)",
                got=str(v.shape),
            )
        return v.tolist()  # type: ignore[no-any-return]

    def _shard_hits(
        self, shard: int, v: list[float], k: int, search_k: int
    ) -> list[tuple[float, str, float]]:
        """One shard's top ``k`` as merge keys: (signed distance, entity id, distance)."""
        items, dists = self._shards[shard].get_nns_by_vector(v, k, search_k, include_distances=True)
        ids = self._ids[shard]
        sign = -1.0 if self._descending else 1.0
        return [(sign * d, ids[i], d) for i, d in zip(items, dists, strict=True)]

    @staticmethod
    def _merge(candidates: list[tuple[float, str, float]], k: int) -> list[tuple[str, float]]:
        return [(i, d) for _, i, d in heapq.nsmallest(k, candidates)]

    def _query(self, v: list[float], k: int, search_k: int) -> list[tuple[str, float]]:
        hits = [h for s in range(len(self._shards)) for h in self._shard_hits(s, v, k, search_k)]
        return self._merge(hits, k)

    def _release(self, shard: int) -> None:
        """Unmap a shard's pages from this process and map its file again (nothing is read
        until a query asks: the pages stay in the page cache, out of resident memory)."""
        index = self._shards[shard]
        index.unload()
        index.load(str(self.path / shard_file(shard)))

    def query(
        self, vector: npt.ArrayLike, k: int, *, search_k: int | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` nearest entities to ``vector`` as ``(entity_id, distance)``, best first.

        ``search_k`` is Annoy's per shard (-1: trees * k; None: :attr:`search_k`). For
        ``dot`` the "distance" is the dot product (higher is nearer), as Annoy reports it.
        """
        return self._query(self._check(vector), k, self._search_k(k, search_k))

    def query_many(
        self,
        matrix: npt.ArrayLike,
        k: int,
        *,
        search_k: int | None = None,
        one_shard_at_a_time: bool = False,
    ) -> list[list[tuple[str, float]]]:
        """:meth:`query` for each row of an ``(m, d)`` matrix.

        With ``one_shard_at_a_time`` every row is asked of one shard, whose pages are then
        unmapped, before the next shard (the answers are the same): at most one shard's
        pages are resident at once, for checks that query many rows over a large index
        (DESIGN decision 11). Serving keeps its shards mapped.
        """
        m = np.asarray(matrix, dtype=np.float32)
        if m.ndim != 2 or m.shape[1] != self.manifest.dimension:
            raise ContractError(
                "query matrix has the wrong shape",
                field="matrix",
                expected=f"(m, {self.manifest.dimension})",
                got=str(m.shape),
            )
        sk = self._search_k(k, search_k)
        rows = m.tolist()
        if not one_shard_at_a_time:
            return [self._query(row, k, sk) for row in rows]
        hits: list[list[tuple[float, str, float]]] = [[] for _ in rows]
        for shard in range(len(self._shards)):
            for found, row in zip(hits, rows, strict=True):
                found.extend(self._shard_hits(shard, row, k, sk))
            self._release(shard)
        return [self._merge(found, k) for found in hits]

    def _search_k(self, k: int, search_k: int | None) -> int:
        if search_k is not None:
            return search_k
        if self.search_k < 0:
            return -1
        # Calibrated for k = 10: never search less than Annoy's own default for this k.
        return max(self.search_k, self.manifest.trees * k)

    def verify_checksums(self) -> list[str]:
        """Files of this artifact whose sha256 differs from the manifest (empty: intact)."""
        return verify_artifact(self.path)


def open_artifact(path: Path | str, *, verify: bool = False) -> IndexReader:
    """Open the artifact folder ``path`` for queries (shards are memory-mapped, not read).

    With ``verify=True`` every file's sha256 is checked first (:class:`ChecksumMismatch`).

    Example:
        >>> r = open_artifact(".ledger/artifacts/embedder/v1/3f9c0a1b2c3d4e5f")  # doctest: +SKIP
        >>> len(r), r.manifest.version  # doctest: +SKIP
        (4000, 'v1')
    """
    p = Path(path)
    manifest = load_manifest(p)
    if manifest.kind != "index":
        raise ArtifactError(f"artifact {p} is a {manifest.kind} artifact, not an index")
    if verify:
        bad = verify_artifact(p)
        if bad:
            raise ChecksumMismatch(
                f"artifact {p} is corrupt: {', '.join(bad)} do not match the manifest",
                files=tuple(bad),
            )
    try:
        table = pq.read_table(p / ID_MAP)
    except (OSError, pa.ArrowException) as exc:
        raise ArtifactError(f"cannot read the id map of {p}: {exc}") from exc
    entity_ids = table.column("entity_id").to_pylist()
    where = table.column("shard").to_numpy()
    ids: list[list[str]] = [[] for _ in range(manifest.shards)]
    items = table.column("item").to_numpy()
    for shard in range(manifest.shards):
        mask = where == shard
        # Rows are sorted by id and items are ranks within the shard: keep that invariant.
        if not np.array_equal(items[mask], np.arange(int(mask.sum()))):
            raise ArtifactError(f"the id map of {p} is not in item order for shard {shard}")
        ids[shard] = [entity_ids[i] for i in np.flatnonzero(mask)]
    if tuple(len(x) for x in ids) != manifest.shard_items:
        raise ArtifactError(f"the id map of {p} does not match the manifest's shard sizes")
    shards: list[AnnoyIndex] = []
    for shard in range(manifest.shards):
        index = AnnoyIndex(manifest.dimension, cast(AnnoyMetric, manifest.metric))
        try:
            index.load(str(p / shard_file(shard)))
        except OSError as exc:
            for loaded in shards:
                loaded.unload()
            raise ArtifactError(f"cannot load {p / shard_file(shard)}: {exc}") from exc
        if index.get_n_items() != manifest.shard_items[shard]:
            index.unload()
            for loaded in shards:
                loaded.unload()
            raise ArtifactError(
                f"{p / shard_file(shard)} holds {index.get_n_items()} items, "
                f"the manifest says {manifest.shard_items[shard]}"
            )
        shards.append(index)
    return IndexReader(p, manifest, ids, shards)
