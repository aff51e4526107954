"""Checks that what serves (or is about to serve) is exactly what the log says it should be.

Each check returns a :class:`Check` with its figures, so operators see *why* it failed:

- ``checksum``: every artifact file has the sha256 its manifest records (and the manifest
  is the one the serving pointer pinned at switch time);
- ``count``: items in the index = the manifest's count = live entities with a V embedding
  in the views *at the manifest's log position*;
- ``purity``: the manifest is of the serving model version, and every item is the latest V
  vector of a live entity at that position (all items; see :mod:`ledger.index_checks`);
- ``recall``: recall@k of the Annoy index against exact numpy search, on sampled items;
- ``decisions`` (``purity`` and ``coverage`` of a classifier's table): only V decisions,
  each subject's latest, every subject with a V decision;
- ``lag``: the materialiser has every event of the log (stored offset = true end).

And one figure that is not a check unless asked (``fail_on_mixed``): the *mixed state*,
how many live entities' latest served (non-shadow) embedding is not from the serving
version, i.e. how mixed a vector DB fed directly by the services would be.

The rollback runs :func:`verify_artifact_for` before every switch; ``ledger verify`` runs
:func:`verify` on what serves now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.decision_table import read_decision_table
from ledger.errors import ArtifactError, ServingError
from ledger.events import Topics
from ledger.index import open_artifact
from ledger.index_checks import IndexFacts, compare_items, measure_recall, read_facts
from ledger.manifest import Manifest, load_manifest, verify_artifact
from ledger.plan import DECISIONS_SQL, DecisionPlan, ModelPlan, log_offsets
from ledger.serving import current, serving_search_k
from ledger.store import Connection, arrow, open_views, registered, rows

DEFAULT_RECALL_THRESHOLD = 0.9
DEFAULT_SAMPLE = 200
DEFAULT_K = 10


@dataclass(frozen=True, slots=True)
class Check:
    """One verification result."""

    model: str
    name: str
    passed: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "check": self.name,
            "passed": self.passed,
            "detail": self.detail,
            "figures": self.figures,
        }


def _few(ids: Sequence[str], n: int = 3) -> str:
    return ", ".join(ids[:n]) + (", ..." if len(ids) > n else "")


# -- the checks ---------------------------------------------------------------------------


def check_checksum(model: str, folder: Path, *, pinned: str | None = None) -> Check:
    """Every file of the artifact has the sha256 its manifest recorded (and, given
    ``pinned``, the manifest is the one the serving pointer pinned)."""
    bad = verify_artifact(folder)
    manifest_checksum = load_manifest(folder).checksum
    if pinned is not None and pinned != manifest_checksum:
        bad = ["manifest.json (not the one pinned at switch)", *bad]
    return Check(
        model,
        "checksum",
        not bad,
        "all files match the manifest (sha256)" if not bad else f"mismatched: {', '.join(bad)}",
        {"mismatched": bad, "checksum": manifest_checksum},
    )


def check_count(model: str, facts: IndexFacts, view_items: int) -> Check:
    """The manifest's item count = the items in the index = the view's count at the position."""
    m = facts.manifest
    figures = {
        "manifest_items": m.items,
        "index_items": facts.index_items,
        "id_map_rows": facts.id_map.num_rows,
        "view_items": view_items,
    }
    ok = m.items == facts.index_items == facts.id_map.num_rows == view_items
    return Check(
        model,
        "count",
        ok,
        f"manifest says {m.items} items, the index holds {facts.index_items}, the view has "
        f"{view_items} live {m.version} embeddings at the manifest's log position",
        figures,
    )


def check_purity(con: Connection, model: str, version: str, facts: IndexFacts) -> tuple[Check, int]:
    """Every item is the latest ``version`` vector of a live entity; also the view's count."""
    m = facts.manifest
    p = compare_items(con, facts, model, version)
    version_ok = (m.model, m.version, m.kind) == (model, version, "index")
    impure = len(p.not_in_view) + len(p.differs) + (0 if version_ok else facts.id_map.num_rows)
    figures = {
        "items": facts.id_map.num_rows,
        "manifest_version": m.version,
        "not_in_view": len(p.not_in_view),
        "vector_differs": len(p.differs),
        "differing_vectors_by_version": p.differs_by_version,
        "missing": len(p.missing),
    }
    if impure == 0 and not p.missing:
        detail = f"all {facts.id_map.num_rows} items are their entity's latest {version} vector"
    else:
        parts = []
        if not version_ok:
            parts.append(f"manifest is {m.model} {m.version}, not {model} {version}")
        if p.differs:
            whose = ", ".join(f"{v}: {n}" for v, n in p.differs_by_version.items())
            parts.append(
                f"{len(p.differs)} items hold a vector that is not their latest {version} "
                f"vector (whose events: {whose}; e.g. {_few(p.differs)})"
            )
        if p.not_in_view:
            parts.append(
                f"{len(p.not_in_view)} items are not live {version} entities "
                f"(e.g. {_few(p.not_in_view)})"
            )
        if p.missing:
            parts.append(
                f"{len(p.missing)} live {version} entities are missing (e.g. {_few(p.missing)})"
            )
        detail = "; ".join(parts)
    return Check(model, "purity", impure == 0 and not p.missing, detail, figures), p.view_items


def check_recall(
    model: str,
    facts: IndexFacts,
    reader: Any,
    *,
    threshold: float = DEFAULT_RECALL_THRESHOLD,
    sample: int = DEFAULT_SAMPLE,
    k: int = DEFAULT_K,
    search_k: int | None = -1,
) -> Check:
    """recall@k of the index against exact search on ``sample`` item queries >= threshold.

    Annoy is queried with ``search_k`` as serving queries it (-1: Annoy's default). With
    ``None`` the check calibrates: the smallest search_k (doubling from Annoy's default) that
    reaches the threshold passes, and ``figures["search_k"]`` is what serving must use.
    """
    if search_k is None:
        r = measure_recall(facts, reader, k=k, sample=sample, calibrate_to=threshold)
    else:
        r = measure_recall(facts, reader, k=k, sample=sample, search_k=search_k)
    figures = {
        "recall": r.recall,
        "k": r.k,
        "queries": r.queries,
        "threshold": threshold,
        "search_k": r.search_k,
    }
    if r.recall is None:
        return Check(model, "recall", True, "too few items to measure recall", figures)
    ok = r.recall >= threshold
    return Check(
        model,
        "recall",
        ok,
        f"recall@{r.k} {r.recall:.3f} {'>=' if ok else '<'} {threshold} over {r.queries} "
        f"sampled queries (exact numpy search as truth; search_k {r.search_k})",
        figures,
    )


_DECISION_CHECK_SQL = """
    SELECT count(*) FILTER (WHERE d.event_id IS NULL OR d.model <> $model
                            OR d.model_version <> $version OR d.label <> a.label
                            OR d.subject_id <> a.subject_id) AS foreign,
           count(*) FILTER (WHERE d.event_id IS NOT NULL AND d.model = $model
                            AND d.model_version <> $version) AS other_version
    FROM _artifact_decisions a LEFT JOIN decisions d USING (event_id)
"""


def check_decisions(con: Connection, model: str, version: str, folder: Path) -> list[Check]:
    """The decision table holds only ``version`` decisions: each subject's latest, and every
    subject that has one (views at the table's log position)."""
    table = read_decision_table(folder)
    expected = arrow(con, DECISIONS_SQL, model=model, version=version)
    with registered(con, "_artifact_decisions", table):
        ((foreign, other_version),) = rows(con, _DECISION_CHECK_SQL, model=model, version=version)
    manifest = load_manifest(folder)
    version_ok = (manifest.model, manifest.version, manifest.kind) == (model, version, "decisions")
    want = dict(
        zip(
            expected.column("subject_id").to_pylist(),
            expected.column("event_id").to_pylist(),
            strict=True,
        )
    )
    have = dict(
        zip(
            table.column("subject_id").to_pylist(),
            table.column("event_id").to_pylist(),
            strict=False,
        )
    )
    missing = sorted(set(want) - set(have))
    outdated = sorted(s for s in set(want) & set(have) if want[s] != have[s])
    covered = not missing and not outdated and table.num_rows == len(have)  # one row each
    pure = foreign == 0 and version_ok
    return [
        Check(
            model,
            "purity",
            pure,
            f"all {table.num_rows} decisions are {version} decisions of {model}"
            if pure
            else f"{foreign} decisions are not {version} decisions of {model} "
            f"({other_version} from another version); manifest says "
            f"{manifest.model} {manifest.version}",
            {"rows": table.num_rows, "foreign": foreign, "other_version": other_version},
        ),
        Check(
            model,
            "coverage",
            covered,
            f"each of the {len(want)} subjects with a {version} decision has its latest one"
            if covered
            else f"table has {table.num_rows} rows for {len(have)} subjects, the view has "
            f"{len(want)} subjects with a {version} decision; {len(missing)} missing, "
            f"{len(outdated)} not the latest (e.g. {_few(missing + outdated)})",
            {
                "rows": table.num_rows,
                "view_subjects": len(want),
                "missing": len(missing),
                "not_latest": len(outdated),
            },
        ),
    ]


def check_index(
    con: Any,
    model: str,
    version: str,
    folder: Path,
    *,
    recall_threshold: float = DEFAULT_RECALL_THRESHOLD,
    sample: int = DEFAULT_SAMPLE,
    k: int = DEFAULT_K,
    search_k: int | None = -1,
) -> list[Check]:
    """Count, purity and recall of an index artifact (views on ``con`` at its position)."""
    try:
        reader = open_artifact(folder)
    except ArtifactError as exc:
        return [Check(model, "count", False, f"the index does not open: {exc}", {})]
    with reader:
        facts = read_facts(folder, reader)
        purity, view_items = check_purity(con, model, version, facts)
        return [
            check_count(model, facts, view_items),
            purity,
            check_recall(
                model,
                facts,
                reader,
                threshold=recall_threshold,
                sample=sample,
                k=k,
                search_k=search_k,
            ),
        ]


def verify_artifact_for(
    con: Any,
    plan: ModelPlan,
    folder: Path,
    *,
    recall_threshold: float = DEFAULT_RECALL_THRESHOLD,
    sample: int = DEFAULT_SAMPLE,
    search_k: int | None = None,
) -> list[Check]:
    """All checks of one model's freshly built artifact against the views on ``con`` (the
    rollback's: they are at the artifact's log position). ``search_k=None`` calibrates the
    serving search_k in the recall check."""
    return _artifact_checks(
        con,
        plan.model,
        plan.to_version,
        folder,
        isinstance(plan, DecisionPlan),
        recall_threshold=recall_threshold,
        sample=sample,
        search_k=search_k,
    )


def _artifact_checks(
    con: Any,
    model: str,
    version: str,
    folder: Path,
    decisions: bool,
    *,
    pinned: str | None = None,
    recall_threshold: float,
    sample: int,
    search_k: int | None,
) -> list[Check]:
    checks = [check_checksum(model, folder, pinned=pinned)]
    if not checks[0].passed:
        return checks  # the files are not what was built: nothing else about them is known
    if decisions:
        return checks + check_decisions(con, model, version, folder)
    return checks + check_index(
        con,
        model,
        version,
        folder,
        recall_threshold=recall_threshold,
        sample=sample,
        search_k=search_k,
    )


def check_lag(partitions: Sequence[Any]) -> Check:
    """The materialiser holds every event: stored offset = true end on every partition.

    ``partitions`` are :class:`consumers.lag.PartitionLag` rows.
    """
    behind = [p for p in partitions if p.lag != 0]
    total = sum(p.lag for p in partitions)
    figures = {
        "partitions": len(partitions),
        "lagging_partitions": len(behind),
        "events_behind": total,
        "pending_dead_letters": sum(p.dead_letters for p in partitions),
    }
    if not behind:
        detail = f"0 events behind on {len(partitions)} partitions"
    else:
        worst = ", ".join(f"{p.topic}:{p.partition} {p.lag}" for p in behind[:3])
        lost = any(p.lag < 0 for p in behind)
        detail = (
            f"{total} events behind on {len(behind)} partitions ({worst})"
            + ("; negative lag: the broker lost events the store holds" if lost else "")
            + "; run `ledger consume` until caught up"
        )
    return Check("*", "lag", not behind, detail, figures)


# -- the mixed state ----------------------------------------------------------------------

_MIXED_EMBEDDINGS_SQL = """
    WITH served AS (
        SELECT entity_id, model_version FROM embeddings
        WHERE model = $model AND NOT coalesce(shadow, false)
        QUALIFY row_number() OVER (
            PARTITION BY entity_id ORDER BY "partition" DESC, "offset" DESC) = 1)
    SELECT s.model_version AS version, count(*) AS n
    FROM live_entities($model) l LEFT JOIN served s USING (entity_id)
    GROUP BY ALL ORDER BY ALL
"""

_MIXED_DECISIONS_SQL = """
    SELECT model_version AS version, count(*) AS n FROM (
        SELECT model_version FROM decisions
        WHERE model = $model AND NOT coalesce(shadow, false)
        QUALIFY row_number() OVER (
            PARTITION BY subject_id ORDER BY "partition" DESC, "offset" DESC) = 1)
    GROUP BY ALL ORDER BY ALL
"""


@dataclass(frozen=True, slots=True)
class MixedState:
    """How mixed a store fed directly by the services would be, for one model.

    For an embedding model: per version, the live entities whose latest non-shadow
    embedding is from that version (``None``: only shadow embeddings). For a classifier:
    per version, the subjects whose latest non-shadow decision is from it. ``mixed`` counts
    those not from the serving version.
    """

    model: str
    kind: str  # "embedding" | "classifier"
    serving_version: str
    total: int
    mixed: int
    by_version: Mapping[str, int]
    shadow_only: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kind": self.kind,
            "serving_version": self.serving_version,
            "total": self.total,
            "mixed": self.mixed,
            "by_version": dict(self.by_version),
            "shadow_only": self.shadow_only,
        }


def mixed_state(con: Connection, model: str, serving_version: str, *, kind: str) -> MixedState:
    """The mixed-state figure of ``model`` from the views on ``con`` (the log as it is now).

    Example:
        >>> con = open_views(home)  # doctest: +SKIP
        >>> m = mixed_state(con, "text-embedder", "v1", kind="embedding")  # doctest: +SKIP
        >>> m.mixed, dict(m.by_version)  # doctest: +SKIP
        (52, {'v1': 135, 'v2': 52})
    """
    sql = _MIXED_EMBEDDINGS_SQL if kind == "embedding" else _MIXED_DECISIONS_SQL
    found = rows(con, sql, model=model)
    by_version = {str(v): int(n) for v, n in found if v is not None}
    shadow_only = sum(int(n) for v, n in found if v is None)
    served = sum(by_version.values())
    return MixedState(
        model,
        kind,
        serving_version,
        served + shadow_only,
        served - by_version.get(serving_version, 0),
        by_version,
        shadow_only,
    )


def check_mixed(state: MixedState) -> Check:
    """``--fail-on-mixed``: the mixed-state figure as a check (passes at zero)."""
    whose = ", ".join(f"{v}: {n}" for v, n in state.by_version.items())
    return Check(
        state.model,
        "mixed",
        state.mixed == 0,
        f"{state.mixed} of {state.total} current "
        f"{'vectors' if state.kind == 'embedding' else 'decisions'} are not "
        f"{state.serving_version} ({whose or 'none'})",
        state.to_dict(),
    )


# -- verify what serves ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class VerifyReport:
    """What ``ledger verify`` found: every check with its figures, and the mixed state."""

    checks: tuple[Check, ...]
    mixed: tuple[MixedState, ...]
    serving: Mapping[str, Mapping[str, str]]  # model -> version, artifact, kind

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def summary(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "serving": {m: dict(s) for m, s in self.serving.items()},
            "checks": [c.to_dict() for c in self.checks],
            "mixed": [m.to_dict() for m in self.mixed],
        }


def check_position(model: str, manifest: Manifest, stored: Mapping[str, int]) -> Check:
    """The store holds every event the artifact covers (else count and purity cannot be
    checked against it)."""
    short = {
        k: (v, stored.get(k, 0)) for k, v in manifest.log_offsets.items() if stored.get(k, 0) < v
    }
    return Check(
        model,
        "position",
        not short,
        f"the store covers the artifact's log position ({len(manifest.log_offsets)} partitions)"
        if not short
        else f"the store is behind the artifact on {len(short)} partitions "
        f"(e.g. {next(iter(short))}: artifact {next(iter(short.values()))[0]}, "
        f"store {next(iter(short.values()))[1]}); run `ledger consume`",
        {"behind": {k: {"artifact": a, "store": s} for k, (a, s) in short.items()}},
    )


def verify(
    bootstrap: str | None,
    topics: Topics,
    home: Path,
    model: str | Sequence[str],
    *,
    recall_threshold: float = DEFAULT_RECALL_THRESHOLD,
    sample: int = DEFAULT_SAMPLE,
    search_k: int | None = None,
    fail_on_mixed: bool = False,
) -> VerifyReport:
    """Verify what serves ``model`` (one name or several) now; see the module docstring.

    ``recall_threshold``, ``sample`` and ``search_k`` configure the recall check (``search_k``
    as serving passes it to Annoy; None: the one the rollback calibrated and recorded in the
    serving pointer; -1: Annoy's default, trees x k, which is low for millions of items).
    ``bootstrap`` is needed for the lag check (``None`` leaves it out: for offline use).
    Raises :class:`ServingError` when a model has no serving pointer (nothing to verify).

    Example:
        >>> report = verify(bs, Topics(), Path(".ledger"), "text-embedder")  # doctest: +SKIP
        >>> report.passed, [c.name for c in report.checks]  # doctest: +SKIP
        (True, ['checksum', 'position', 'count', 'purity', 'recall', 'lag'])
    """
    from consumers.lag import lag  # the consumer side depends on the library, not back

    models = [model] if isinstance(model, str) else list(dict.fromkeys(model))
    pointers = {}
    for m in models:
        pointer = current(home, m)
        if pointer is None:
            raise ServingError(f"model {m!r} has no serving pointer: nothing serves to verify")
        pointers[m] = pointer
    checks: list[Check] = []
    mixed: list[MixedState] = []
    serving: dict[str, dict[str, str]] = {}
    with open_views(home) as con:
        stored = log_offsets(con)
    for m, pointer in pointers.items():
        folder = pointer.artifact_path(home)
        try:
            manifest = load_manifest(folder)
        except ArtifactError as exc:
            checks.append(Check(m, "checksum", False, f"the serving artifact is unreadable: {exc}"))
            continue
        kind = "classifier" if manifest.kind == "decisions" else "embedding"
        serving[m] = {"version": pointer.version, "artifact": pointer.artifact, "kind": kind}
        position = check_position(m, manifest, stored)
        with open_views(home, at=manifest.log_offsets) as con:
            found = _artifact_checks(
                con,
                m,
                pointer.version,
                folder,
                kind == "classifier",
                pinned=pointer.checksum,
                recall_threshold=recall_threshold,
                sample=sample,
                search_k=serving_search_k(pointer) if search_k is None else search_k,
            )
        if not position.passed:
            found = [c for c in found if c.name == "checksum"]  # the rest would mislead
        checks.extend(found[:1] + [position] + found[1:])
        with open_views(home) as con:
            state = mixed_state(con, m, pointer.version, kind=kind)
        mixed.append(state)
        if fail_on_mixed:
            checks.append(check_mixed(state))
    if bootstrap is not None:
        checks.append(check_lag(lag(bootstrap, topics, home)))
    return VerifyReport(tuple(checks), tuple(mixed), serving)
