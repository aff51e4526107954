"""Compare two versions of one or more models on the data in the log (the read side of
``ledger compare`` and ``ledger promote``).

:func:`compare_versions` reads, from the views of :func:`ledger.store.open_views`, each
version's latest live embeddings (macro ``version_embeddings``) or latest decisions
(macro ``version_decisions``) and hands them to the pure figures of :mod:`ledger.ops.metrics`.
A model is compared by its registered kind: an embedding model gives neighbour overlap,
a classifier gives label agreement; both give coverage.

Gates over several models (``--model embedder --model classifier``): each gate is checked
against every model that measures its metric (``overlap`` on the embedder, ``agreement``
on the classifier, ``coverage_*`` on both), and fails when no model measures it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.artifacts.manifest import path_part
from ledger.contract.events import Topics
from ledger.errors import ContractError, UsageError
from ledger.ops.build import REPORTS_DIR
from ledger.ops.catchup import ensure_caught_up
from ledger.ops.gates import Gate, GateResult, evaluate_gates, parse_gates
from ledger.ops.kinds import Comparison, Progress, kind_named, no_progress
from ledger.ops.metrics import ComparisonSpec, write_table
from ledger.store import Connection, open_views
from ledger.store.queries import log_offsets, registered_version

DEFAULT_COMPARISON = ComparisonSpec()


@dataclass(frozen=True, slots=True)
class ModelGateResult:
    """A gate checked on one model (``model`` is None when no model measures the metric)."""

    model: str | None
    result: GateResult

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, **self.result.to_dict()}


@dataclass(frozen=True, slots=True, eq=False)
class VersionComparison:
    """Version A against version B for each model, at one log position."""

    version_a: str
    version_b: str
    models: Mapping[str, Comparison]
    log_offsets: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version_a": self.version_a,
            "version_b": self.version_b,
            "models": {m: {"model": m, **c.to_dict()} for m, c in self.models.items()},
            "log_offsets": dict(self.log_offsets),
        }


@dataclass(frozen=True, slots=True)
class GateOutcome:
    """Every gate on every model that measures it; ``passed`` only when all passed."""

    results: tuple[ModelGateResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.result.passed for r in self.results)

    @property
    def failed(self) -> tuple[ModelGateResult, ...]:
        return tuple(r for r in self.results if not r.result.passed)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "gates": [r.to_dict() for r in self.results]}

    def describe_failures(self) -> str:
        """One line naming each failed gate with its figure."""
        parts = []
        for r in self.failed:
            value = "not measured" if r.result.value is None else f"{r.result.value:.4f}"
            parts.append(f"{r.result.gate} on {r.model or 'no model'}: {value}")
        return "; ".join(parts)


def compare_versions(
    con: Connection,
    models: Sequence[str],
    version_a: str,
    version_b: str,
    spec: ComparisonSpec = DEFAULT_COMPARISON,
) -> VersionComparison:
    """Compare ``version_a`` with ``version_b`` of each model, from the views on ``con``.

    Raises :class:`~ledger.errors.UnknownModelVersion` when a version is not registered,
    and :class:`~ledger.errors.ContractError` when the two versions are of different kinds.

    Example:
        >>> with open_views(Path(".ledger")) as con:  # doctest: +SKIP
        ...     r = compare_versions(con, ["spam-filter"], "v2", "v1")
        >>> r.models["spam-filter"].agreement  # doctest: +SKIP
        0.93
    """
    if not models:
        raise UsageError("name at least one model", cli_hint="pass --model M")
    out: dict[str, Comparison] = {}
    for model in dict.fromkeys(models):
        kind_a, _, metric_a = registered_version(con, model, version_a)
        kind_b, _, metric_b = registered_version(con, model, version_b)
        if kind_a != kind_b:
            raise ContractError(
                f"{model} {version_a} is a {kind_a} and {version_b} a {kind_b}: not comparable",
                field="kind",
            )
        out[model] = kind_named(kind_a).compare(
            con, model, (version_a, version_b), (metric_a, metric_b), spec
        )
    return VersionComparison(version_a, version_b, out, log_offsets(con))


def check_gates(gates: str | Sequence[Gate], comparison: VersionComparison) -> GateOutcome:
    """Check each gate on every compared model that measures its metric.

    A gate no model measures fails (a check that could not run is not a pass).

    Example:
        >>> check_gates("agreement>=0.95", comparison).passed  # doctest: +SKIP
        False
    """
    parsed = parse_gates(gates) if isinstance(gates, str) else tuple(gates)
    results: list[ModelGateResult] = []
    for gate in parsed:
        measured = [(m, c) for m, c in comparison.models.items() if gate.metric in c.figures()]
        if not measured:
            results.append(ModelGateResult(None, GateResult(gate, None, False)))
        for model, c in measured:
            (result,) = evaluate_gates([gate], c).results
            results.append(ModelGateResult(model, result))
    return GateOutcome(tuple(results))


def default_report_dir(home: Path, version_a: str, version_b: str) -> Path:
    """``<home>/reports/<UTC stamp>-compare-<A>-vs-<B>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return home / REPORTS_DIR / f"{stamp}-compare-{version_a}-vs-{version_b}"


def write_flipped(comparison: VersionComparison, folder: Path) -> list[Path]:
    """Each classifier's flipped subjects as ``<model>.flipped.parquet`` and ``.csv``.

    Example:
        >>> write_flipped(comparison, Path("out"))  # doctest: +SKIP
        [PosixPath('out/spam-filter.flipped.parquet'), PosixPath('out/spam-filter.flipped.csv')]
    """
    written: list[Path] = []
    for model, c in comparison.models.items():
        for name, table in c.tables().items():
            folder.mkdir(parents=True, exist_ok=True)
            for suffix in ("parquet", "csv"):
                path = folder / f"{path_part(model)}.{name}.{suffix}"
                written.append(write_table(table, path))
    return written


@dataclass(frozen=True, slots=True, eq=False)
class CompareReport:
    """A comparison on the log's data, its gates (None: no gate spec) and the files written."""

    comparison: VersionComparison
    gates: GateOutcome | None
    files: tuple[Path, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.comparison.to_dict(),
            "flipped_files": [str(p) for p in self.files],
            "gates": self.gates.to_dict() if self.gates is not None else None,
        }


def compare_log(
    bootstrap: str,
    topics: Topics,
    home: Path,
    models: Sequence[str],
    version_a: str,
    version_b: str,
    *,
    gate: str | None = None,
    spec: ComparisonSpec = DEFAULT_COMPARISON,
    out: Path | None = None,
    progress: Progress = no_progress,
) -> CompareReport:
    """``ledger compare``: catch up, compare, write the flipped subjects, check the gates.

    1. Parse the gate spec first: a typo must not cost a catch-up.
    2. Catch the views up to the true end of the log, so the figures cover every event
       written before the comparison started.
    3. Compare (:func:`compare_versions`) and write each classifier's flipped subjects to
       ``out`` (default :func:`default_report_dir`).

    Example:
        >>> r = compare_log(bs, Topics(), Path(".ledger"), ["spam-filter"], "v1", "v2",
        ...                 gate="agreement>=0.95")  # doctest: +SKIP
        >>> r.gates.passed  # doctest: +SKIP
        False
    """
    gates = parse_gates(gate) if gate is not None else None
    ensure_caught_up(bootstrap, topics, home, progress=progress)
    with open_views(home) as con:
        comparison = compare_versions(con, models, version_a, version_b, spec)
    files = write_flipped(comparison, out or default_report_dir(home, version_a, version_b))
    outcome = check_gates(gates, comparison) if gates is not None else None
    return CompareReport(comparison, outcome, tuple(files))
