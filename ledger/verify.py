"""Checks that an artifact is exactly what the log says the version would produce.

Each check returns a :class:`Check` with its figures, so operators see *why* it failed.
The rollback runs them before every switch; ``ledger verify`` runs them on what serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ledger.decision_table import read_decision_table
from ledger.index import open_artifact
from ledger.manifest import load_manifest, verify_artifact
from ledger.plan import DECISIONS_SQL, ITEMS_SQL, DecisionPlan, EmbeddingPlan, ModelPlan, arrow


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


def check_checksum(model: str, folder: Path) -> Check:
    """Every file of the artifact has the sha256 its manifest recorded."""
    bad = verify_artifact(folder)
    return Check(
        model,
        "checksum",
        not bad,
        "all files match the manifest" if not bad else f"mismatched: {', '.join(bad)}",
        {"mismatched": bad},
    )


def check_index(con: Any, plan: EmbeddingPlan, folder: Path) -> list[Check]:
    """Purity and count of an index artifact against the views (same log position)."""
    manifest = load_manifest(folder)
    expected = arrow(con, ITEMS_SQL, model=plan.model, version=plan.to_version)
    checks = [
        Check(
            plan.model,
            "count",
            manifest.items == expected.num_rows,
            f"index holds {manifest.items} items, the view has {expected.num_rows} live "
            f"{plan.to_version} embeddings",
            {"index_items": manifest.items, "view_items": expected.num_rows},
        )
    ]
    version_ok = (manifest.model, manifest.version) == (plan.model, plan.to_version)
    with open_artifact(folder) as index:
        ids = index.item_ids
        want = dict(
            zip(expected.column("entity_id").to_pylist(), range(expected.num_rows), strict=True)
        )
        vectors = (
            expected.column("vector")
            .combine_chunks()
            .flatten()
            .to_numpy(zero_copy_only=False)
            .reshape(expected.num_rows, -1)
        )
        foreign = [e for e in ids if e not in want]
        differing = [
            e
            for e in ids
            if e in want
            and not np.array_equal(np.asarray(index.get_vector(e), dtype="<f4"), vectors[want[e]])
        ]
    impure = len(foreign) + len(differing) + (0 if version_ok else len(ids))
    checks.append(
        Check(
            plan.model,
            "purity",
            impure == 0,
            f"every item is the entity's latest {plan.to_version} vector"
            if impure == 0
            else f"{impure} items are not {plan.to_version} vectors of live entities "
            f"(e.g. {(foreign + differing)[:3]}); "
            f"manifest says {manifest.model} {manifest.version}",
            {
                "items": len(ids),
                "not_in_view": len(foreign),
                "vector_differs": len(differing),
                "manifest_version": manifest.version,
            },
        )
    )
    return checks


def check_decisions(con: Any, plan: DecisionPlan, folder: Path) -> list[Check]:
    """The decision table holds exactly each subject's latest V decision."""
    table = read_decision_table(folder)
    expected = arrow(con, DECISIONS_SQL, model=plan.model, version=plan.to_version)
    con.register("_artifact_decisions", table)
    try:
        foreign = con.execute(
            "SELECT count(*) FROM _artifact_decisions a LEFT JOIN decisions d USING (event_id) "
            "WHERE d.event_id IS NULL OR d.model <> $model OR d.model_version <> $version",
            {"model": plan.model, "version": plan.to_version},
        ).fetchall()[0][0]
    finally:
        con.unregister("_artifact_decisions")
    same = (
        table.select(["subject_id", "event_id"]).equals(expected.select(["subject_id", "event_id"]))
        if table.num_rows == expected.num_rows
        else False
    )
    return [
        Check(
            plan.model,
            "purity",
            foreign == 0,
            f"{foreign} decisions are not {plan.to_version} decisions of {plan.model}"
            if foreign
            else f"every decision is a {plan.to_version} decision",
            {"foreign": foreign, "rows": table.num_rows},
        ),
        Check(
            plan.model,
            "coverage",
            same,
            f"one latest decision per subject with a {plan.to_version} decision"
            if same
            else f"table has {table.num_rows} rows, the view's latest {plan.to_version} decisions "
            f"are {expected.num_rows}",
            {"rows": table.num_rows, "view_rows": expected.num_rows},
        ),
    ]


def verify_artifact_for(con: Any, plan: ModelPlan, folder: Path) -> list[Check]:
    """All checks of one model's artifact against the views on ``con``."""
    checks = [check_checksum(plan.model, folder)]
    if not checks[0].passed:
        return checks
    if isinstance(plan, EmbeddingPlan):
        return checks + check_index(con, plan, folder)
    return checks + check_decisions(con, plan, folder)
