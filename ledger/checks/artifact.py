"""The checks of one artifact against the log at its position: checksum, count, purity,
recall@k (embeddings), and decision purity and coverage (classifiers)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ledger.artifacts.decision_table import read_decision_table
from ledger.artifacts.index_reader import open_artifact
from ledger.artifacts.manifest import (
    MANIFEST,
    Manifest,
    load_manifest,
    sha256_file,
    verify_artifact,
)
from ledger.checks.check import Check, few
from ledger.checks.index_facts import IndexFacts, compare_items, measure_recall, read_facts
from ledger.checks.recall import RecallSpec
from ledger.errors import ArtifactError
from ledger.store import Connection, arrow, registered, rows
from ledger.store.queries import DECISIONS_SQL


def check_checksum(
    model: str, folder: Path, *, pinned: str | None = None, pinned_manifest: str | None = None
) -> Check:
    """Every file of the artifact has the sha256 its manifest recorded (and, given
    ``pinned`` / ``pinned_manifest``, the manifest is the one the serving pointer pinned)."""
    bad = verify_artifact(folder)
    manifest_checksum = load_manifest(folder).checksum
    edited = pinned_manifest is not None and sha256_file(folder / MANIFEST) != pinned_manifest
    if (pinned is not None and pinned != manifest_checksum) or edited:
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
                f"vector (whose events: {whose}; e.g. {few(p.differs)})"
            )
        if p.not_in_view:
            parts.append(
                f"{len(p.not_in_view)} items are not live {version} entities "
                f"(e.g. {few(p.not_in_view)})"
            )
        if p.missing:
            parts.append(
                f"{len(p.missing)} live {version} entities are missing (e.g. {few(p.missing)})"
            )
        detail = "; ".join(parts)
    return Check(model, "purity", impure == 0 and not p.missing, detail, figures), p.view_items


def check_recall(
    model: str,
    facts: IndexFacts,
    reader: Any,
    recall: RecallSpec,
) -> Check:
    """recall@k of the index against exact search on sampled item queries >= threshold.

    Annoy is queried as serving queries it. With ``SearchK.calibrate()`` the check finds
    the smallest search_k (doubling from Annoy's default) that reaches the threshold, and
    ``figures["search_k"]`` is what serving must use.
    """
    threshold, k, sample, search_k = recall.threshold, recall.k, recall.sample, recall.search_k
    if search_k.mode == "calibrate":
        r = measure_recall(facts, reader, k=k, sample=sample, calibrate_to=threshold)
    else:
        r = measure_recall(facts, reader, k=k, sample=sample, search_k=search_k.annoy_value())
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
            f"{len(outdated)} not the latest (e.g. {few(missing + outdated)})",
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
    recall: RecallSpec,
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
            check_recall(model, facts, reader, recall),
        ]


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
        f"store {next(iter(short.values()))[1]}); materialise the log up to it first",
        {"behind": {k: {"artifact": a, "store": s} for k, (a, s) in short.items()}},
    )
