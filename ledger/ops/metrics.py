"""What changes between two versions of a model, in figures an operator can gate on.

- :func:`compare_embeddings`: for entities embedded by both versions, how many of a
  sampled entity's exact ``k`` nearest neighbours the two versions agree on.
- :func:`compare_decisions`: for subjects decided by both versions, how often the
  labels agree, a confusion matrix, and the flipped subjects as an Arrow table.
- :func:`parse_gates` / :func:`evaluate_gates`: ``"agreement>=0.95,overlap>=0.6"``
  checked against a comparison.

Gate metrics (every one is a share in ``[0, 1]``):

- ``agreement``: decisions only. Of the subjects decided by both versions, the share
  given the same label.
- ``overlap``: embeddings only. Mean over sampled entities (embedded by both) of the
  share of the entity's ``k`` exact nearest neighbours under A that are also among its
  ``k`` nearest under B; neighbours are searched among entities embedded by both, the
  entity itself excluded. 1.0: same neighbourhoods; near ``k/n``: unrelated.
- ``coverage_a``: of version A's entities (or subjects), the share B also has.
- ``coverage_b``: of version B's entities (or subjects), the share A also has.

A gate whose metric the comparison does not measure (``overlap`` on decisions, any
metric when the versions share nothing) fails: a check that could not run is not a pass.

Inputs are per version and already reduced to one row per entity or subject (its
latest embedding / decision); results do not depend on the order of the rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ledger.checks.exact import exact_topk, overlap_per_query

IdsLike: TypeAlias = Sequence[str] | pa.Array | pa.ChunkedArray | npt.NDArray[Any]

_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


@dataclass(frozen=True, slots=True)
class ComparisonSpec:
    """How versions are compared: overlap@``k`` on ``sample`` entities drawn with ``seed``."""

    k: int = 10
    sample: int = 1000
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Coverage:
    """How many entities (or subjects) only A, only B, or both versions have.

    Example:
        >>> Coverage(only_a=1, only_b=0, both=3).coverage_a
        0.75
    """

    only_a: int
    only_b: int
    both: int

    @property
    def coverage_a(self) -> float | None:
        """Share of A's entities that B also has (``None`` when A has none)."""
        return _share(self.both, self.both + self.only_a)

    @property
    def coverage_b(self) -> float | None:
        """Share of B's entities that A also has (``None`` when B has none)."""
        return _share(self.both, self.both + self.only_b)

    def to_dict(self) -> dict[str, Any]:
        return {
            "only_a": self.only_a,
            "only_b": self.only_b,
            "both": self.both,
            "coverage_a": self.coverage_a,
            "coverage_b": self.coverage_b,
        }


@dataclass(frozen=True, slots=True)
class EmbeddingComparison:
    """Neighbour overlap@k between two versions of an embedding model.

    ``overlap_histogram[j]`` counts sampled entities sharing exactly ``j`` of their ``k``
    neighbours; ``overlap_stderr`` is the sampling error of ``overlap_mean`` (with the
    finite-population correction, so 0 when every common entity was sampled);
    ``most_changed`` lists up to 10 sampled entities with the lowest overlap.
    """

    version_a: str
    version_b: str
    metric_a: str
    metric_b: str
    k: int
    seed: int
    sample_size: int
    coverage: Coverage
    overlap_mean: float | None
    overlap_stderr: float | None
    overlap_quantiles: tuple[tuple[str, float], ...]
    overlap_histogram: tuple[int, ...]
    most_changed: tuple[tuple[str, float], ...]

    def figures(self) -> dict[str, float | None]:
        """The gate metrics this comparison measures."""
        return {
            "overlap": self.overlap_mean,
            "coverage_a": self.coverage.coverage_a,
            "coverage_b": self.coverage.coverage_b,
        }

    def console_lines(self, version_a: str, version_b: str) -> list[str]:
        err = "" if self.overlap_stderr is None else f" +- {self.overlap_stderr:.4f}"
        out = [
            f"  overlap@{self.k} {_fmt(self.overlap_mean)}{err} on {self.sample_size} sampled "
            "entities"
        ]
        if self.overlap_quantiles:
            out.append("  quantiles " + " ".join(f"{q} {v:.2f}" for q, v in self.overlap_quantiles))
            out.append(
                "  histogram (shared neighbours: entities) "
                + " ".join(f"{j}:{n}" for j, n in enumerate(self.overlap_histogram) if n)
            )
        return out

    def tables(self) -> dict[str, pa.Table]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "embeddings",
            "version_a": self.version_a,
            "version_b": self.version_b,
            "metric_a": self.metric_a,
            "metric_b": self.metric_b,
            "k": self.k,
            "seed": self.seed,
            "sample_size": self.sample_size,
            "coverage": self.coverage.to_dict(),
            "overlap_mean": self.overlap_mean,
            "overlap_stderr": self.overlap_stderr,
            "overlap_quantiles": dict(self.overlap_quantiles),
            "overlap_histogram": list(self.overlap_histogram),
            "most_changed": [{"entity_id": e, "overlap": o} for e, o in self.most_changed],
        }


@dataclass(frozen=True, slots=True)
class DecisionComparison:
    """Label agreement between two versions of a classifier.

    ``confusion[i][j]`` counts subjects labelled ``labels[i]`` by A and ``labels[j]`` by
    B. ``flipped`` is an Arrow table (``subject_id``, ``label_a``, ``label_b``) of the
    subjects whose labels differ, sorted by subject id; see :func:`write_table`.
    """

    version_a: str
    version_b: str
    coverage: Coverage
    agreed: int
    agreement: float | None
    labels: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]
    flipped: pa.Table = field(compare=False, repr=False)

    def figures(self) -> dict[str, float | None]:
        """The gate metrics this comparison measures."""
        return {
            "agreement": self.agreement,
            "coverage_a": self.coverage.coverage_a,
            "coverage_b": self.coverage.coverage_b,
        }

    def console_lines(self, version_a: str, version_b: str) -> list[str]:
        out = [
            f"  agreement {_fmt(self.agreement)} ({self.agreed} agreed, "
            f"{self.flipped.num_rows} flipped)"
        ]
        if self.labels:
            width = max(8, *(len(x) for x in self.labels))
            corner = f"{version_a}/{version_b}"
            out.append(f"  {corner:>{width + 4}} " + " ".join(f"{x:>{width}}" for x in self.labels))
            for label, row in zip(self.labels, self.confusion, strict=True):
                out.append(f"  {label:>{width + 4}} " + " ".join(f"{n:>{width}}" for n in row))
        return out

    def tables(self) -> dict[str, pa.Table]:
        return {"flipped": self.flipped}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "decisions",
            "version_a": self.version_a,
            "version_b": self.version_b,
            "coverage": self.coverage.to_dict(),
            "agreed": self.agreed,
            "flipped": self.flipped.num_rows,
            "agreement": self.agreement,
            "confusion": {
                "labels": list(self.labels),
                "counts": [list(row) for row in self.confusion],
            },
        }


def compare_embeddings(
    ids_a: IdsLike,
    vectors_a: npt.ArrayLike,
    ids_b: IdsLike,
    vectors_b: npt.ArrayLike,
    *,
    metric: str = "angular",
    metric_b: str | None = None,
    k: int = 10,
    sample: int = 1000,
    seed: int = 0,
    version_a: str = "A",
    version_b: str = "B",
) -> EmbeddingComparison:
    """Neighbour overlap@k of two versions over the entities both embedded.

    Args:
        ids_a, vectors_a: version A's entity ids (unique) and their ``(n, d)`` vectors.
        ids_b, vectors_b: the same for B (B's dimension may differ).
        metric: A's metric; ``metric_b`` is B's (default: the same).
        k: neighbours per entity.
        sample: how many common entities to query (all of them when fewer).
        seed: the sample is drawn from the common ids in sorted order with this seed,
            so the same data and seed give the same report whatever the row order.
        version_a, version_b: names for the report.

    Rows sorted by id avoid a copy of the vectors (exact search breaks ties by row, and
    both versions must break them the same way).

    Example:
        >>> v = np.eye(4)
        >>> r = compare_embeddings(["a", "b", "c", "d"], v, ["d", "c", "b", "a"], v[::-1], k=2)
        >>> r.overlap_mean, r.coverage.both
        (1.0, 4)
    """
    if k < 1 or sample < 0:
        raise ValueError(f"need k >= 1 and sample >= 0, got k={k}, sample={sample}")
    metric_b = metric_b or metric
    ia, ib = _ids(ids_a, "ids_a"), _ids(ids_b, "ids_b")
    va, vb = _vectors(vectors_a, len(ia), "vectors_a"), _vectors(vectors_b, len(ib), "vectors_b")
    common = _sorted_common(ia, ib)
    coverage = Coverage(len(ia) - len(common), len(ib) - len(common), len(common))
    pos_a, pos_b = _positions(common, ia), _positions(common, ib)
    size = min(sample, len(common))
    picked = np.sort(np.random.default_rng(seed).choice(len(common), size=size, replace=False))
    nb_a = _neighbours(va, pos_a, picked, k, metric)
    nb_b = _neighbours(vb, pos_b, picked, k, metric_b)
    width = nb_a.shape[1]
    figures = _overlap_figures(nb_a, nb_b, picked, common) if size and width else _NO_OVERLAP
    return EmbeddingComparison(
        version_a, version_b, metric, metric_b, width, seed, size, coverage, **figures
    )


_NO_OVERLAP: dict[str, Any] = {
    "overlap_mean": None,
    "overlap_stderr": None,
    "overlap_quantiles": (),
    "overlap_histogram": (),
    "most_changed": (),
}


def _overlap_figures(
    nb_a: npt.NDArray[np.int64],
    nb_b: npt.NDArray[np.int64],
    picked: npt.NDArray[np.int64],
    common: pa.Array,
) -> dict[str, Any]:
    width = nb_a.shape[1]
    overlaps = overlap_per_query(nb_b, nb_a)
    shared = np.rint(overlaps * width).astype(np.int64)
    worst = np.lexsort((picked, overlaps))[:10]
    return {
        "overlap_mean": float(overlaps.mean()),
        "overlap_stderr": _stderr(overlaps, len(common)),
        "overlap_quantiles": tuple(
            (f"p{round(q * 100)}", float(v))
            for q, v in zip(_QUANTILES, np.quantile(overlaps, _QUANTILES), strict=True)
        ),
        "overlap_histogram": tuple(int(c) for c in np.bincount(shared, minlength=width + 1)),
        "most_changed": tuple(
            (str(common[int(picked[i])].as_py()), float(overlaps[i])) for i in worst
        ),
    }


def compare_decisions(
    a: pa.Table, b: pa.Table, *, version_a: str = "A", version_b: str = "B"
) -> DecisionComparison:
    """Agreement of two versions' labels over the subjects both decided.

    Args:
        a, b: one row per subject: columns ``subject_id`` and ``label`` (strings).
        version_a, version_b: names for the report.

    Example:
        >>> a = pa.table({"subject_id": ["s1", "s2", "s3"], "label": ["ham", "spam", "ham"]})
        >>> b = pa.table({"subject_id": ["s2", "s1"], "label": ["ham", "ham"]})
        >>> r = compare_decisions(a, b)
        >>> r.agreement, r.flipped["subject_id"].to_pylist(), r.coverage.only_a
        (0.5, ['s2'], 1)
    """
    sa, la = _decision_columns(a, "a")
    sb, lb = _decision_columns(b, "b")
    common = _sorted_common(sa, sb)
    coverage = Coverage(len(sa) - len(common), len(sb) - len(common), len(common))
    label_a = la.take(pa.array(_positions(common, sa)))
    label_b = lb.take(pa.array(_positions(common, sb)))
    labels = pa.array(
        sorted(set(pc.unique(label_a).to_pylist()) | set(pc.unique(label_b).to_pylist())),
        pa.string(),
    )
    code_a = np.asarray(pc.index_in(label_a, value_set=labels), dtype=np.int64)
    code_b = np.asarray(pc.index_in(label_b, value_set=labels), dtype=np.int64)
    n = len(labels)
    confusion = np.bincount(code_a * n + code_b, minlength=n * n).reshape(n, n)
    same = code_a == code_b
    differ = pa.array(~same)
    flipped = pa.table(
        {
            "subject_id": common.filter(differ),
            "label_a": label_a.filter(differ),
            "label_b": label_b.filter(differ),
        }
    )
    agreed = int(same.sum())
    return DecisionComparison(
        version_a=version_a,
        version_b=version_b,
        coverage=coverage,
        agreed=agreed,
        agreement=_share(agreed, len(common)),
        labels=tuple(labels.to_pylist()),
        confusion=tuple(tuple(int(c) for c in row) for row in confusion),
        flipped=flipped,
    )


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write a table (e.g. ``DecisionComparison.flipped``): Parquet for a ``.parquet`` or
    ``.pq`` suffix, CSV with a header otherwise.

    Example:
        >>> write_table(report.flipped, "flipped.parquet")  # doctest: +SKIP
    """
    out = Path(path)
    if out.suffix.lower() in (".parquet", ".pq"):
        pq.write_table(table, out)
    else:
        pacsv.write_csv(table, out)
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _stderr(values: npt.NDArray[np.float64], population: int) -> float | None:
    n = values.size
    if n < 2:
        return None
    fpc = (population - n) / (population - 1) if population > 1 else 0.0
    return float(values.std(ddof=1) / math.sqrt(n) * math.sqrt(max(fpc, 0.0)))


def _ids(ids: IdsLike, name: str) -> pa.Array:
    arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if not isinstance(arr, pa.Array):
        arr = pa.array(arr if isinstance(arr, np.ndarray) else list(arr), pa.string())
    arr = arr.cast(pa.string())
    if arr.null_count:
        raise ValueError(f"{name} has null ids")
    if pc.count_distinct(arr).as_py() != len(arr):
        raise ValueError(f"{name} has duplicate ids: pass one row (the latest) per id")
    return arr


def _vectors(vectors: npt.ArrayLike, rows: int, name: str) -> npt.NDArray[Any]:
    arr = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors, np.float32)
    if arr.ndim != 2 or arr.shape[0] != rows:
        raise ValueError(f"{name} must be ({rows}, d), one row per id; got {arr.shape}")
    return arr


def _decision_columns(table: pa.Table, name: str) -> tuple[pa.Array, pa.Array]:
    missing = {"subject_id", "label"} - set(table.column_names)
    if missing:
        raise ValueError(f"decision table {name} lacks column(s) {sorted(missing)}")
    labels = table.column("label").combine_chunks().cast(pa.string())
    if labels.null_count:
        raise ValueError(f"decision table {name} has null labels")
    return _ids(table.column("subject_id"), f"{name}.subject_id"), labels


def _sorted_common(a: pa.Array, b: pa.Array) -> pa.Array:
    common = a.filter(pc.is_in(a, value_set=b))
    return common.take(pc.sort_indices(common))


def _positions(values: pa.Array, within: pa.Array) -> npt.NDArray[np.int64]:
    return np.asarray(pc.index_in(values, value_set=within), dtype=np.int64)


def _neighbours(
    vectors: npt.NDArray[Any],
    pos: npt.NDArray[np.int64],
    picked: npt.NDArray[np.int64],
    k: int,
    metric: str,
) -> npt.NDArray[np.int64]:
    """Exact neighbours of the picked common entities, as positions in the common list."""
    if pos.size and np.all(np.diff(pos) > 0):
        # Common entities already sit in id order in this version's rows: search in
        # place, masking the rest, and ties still break by id.
        allowed = None if pos.size == vectors.shape[0] else np.zeros(vectors.shape[0], bool)
        if allowed is not None:
            allowed[pos] = True
        rows, _ = exact_topk(
            vectors, vectors[pos[picked]], k, metric, exclude=pos[picked], allowed=allowed
        )
        to_common = np.full(vectors.shape[0], -1, np.int64)
        to_common[pos] = np.arange(pos.size)
        return to_common[rows]
    ordered = vectors[pos]
    rows, _ = exact_topk(ordered, ordered[picked], k, metric, exclude=picked)
    return rows
