"""The classifier kind: a decision table of each subject's latest target-version decision.

Its plan: decisions to *keep* are each subject's latest V decision; *re-decide* are the
subjects whose decisions all came from other versions; the *blast radius* are decisions
made by the outgoing version (the latest version other than V that served) while it was
serving, that disagree with V's decision for the subject (shadow decisions were never acted
on and do not count).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pyarrow as pa

from ledger.artifacts.decision_table import build_decision_table
from ledger.checks.artifact import check_decisions
from ledger.checks.check import Check
from ledger.checks.mixed import MIXED_DECISIONS_SQL, MixedState, mixed_state
from ledger.checks.recall import RecallSpec
from ledger.contract.events import Topics
from ledger.log.producer import Producer
from ledger.ops.kinds.base import BuildContext, Hooks, ModelPlan
from ledger.ops.kinds.embedding import sample_ids
from ledger.ops.metrics import ComparisonSpec, DecisionComparison, compare_decisions
from ledger.store import Connection, arrow, rows
from ledger.store.queries import DECISIONS_SQL, outgoing_version, serving_version

_REDECIDE_SQL = """
    SELECT subject_id FROM decisions WHERE model = $model
    GROUP BY subject_id HAVING bool_and(model_version <> $version)
    ORDER BY subject_id
"""

_BLAST_RADIUS_SQL = """
    SELECT d.subject_id, d.label AS outgoing_label, target.label AS target_label,
           d.score, d.event_time AS decided_at, d.producer AS decided_by, d.event_id
    FROM decisions d
    JOIN serving_history w
      ON w.model = d.model AND w.model_version = d.model_version
     AND d.event_time >= w.served_from AND (w.served_until IS NULL OR d.event_time < w.served_until)
    JOIN version_decisions($model, $version) target ON target.subject_id = d.subject_id
    WHERE d.model = $model AND d.model_version = $outgoing AND d.label <> target.label
      AND NOT d.shadow  -- a shadow decision was never acted on
    ORDER BY d.subject_id, d.event_time
"""


def top_blast_subjects(blast_radius: pa.Table, n: int = 10) -> list[tuple[str, int]]:
    """The subjects with the most blast-radius decisions, most first (ties by subject id).

    Example:
        >>> t = pa.table({"subject_id": ["b", "a", "b"]})
        >>> top_blast_subjects(t)
        [('b', 2), ('a', 1)]
    """
    if blast_radius.num_rows == 0:
        return []
    counts = blast_radius.group_by("subject_id").aggregate([("subject_id", "count")])
    pairs = zip(
        counts.column("subject_id").to_pylist(),
        counts.column("subject_id_count").to_pylist(),
        strict=True,
    )
    return sorted(((str(s), int(c)) for s, c in pairs), key=lambda x: (-x[1], x[0]))[:n]


@dataclass(frozen=True, slots=True, eq=False)
class DecisionPlan:
    """The decision side of a rollback of one classifier."""

    model: str
    to_version: str
    serving_version: str | None
    outgoing_version: str | None
    subjects: int
    keep: int
    redecide: tuple[str, ...]
    blast_radius: pa.Table = field(repr=False)

    @property
    def kind(self) -> ClassifierKind:
        return CLASSIFIER

    @property
    def index_items(self) -> int:
        return 0

    @property
    def needs_fill(self) -> bool:
        return bool(self.redecide)

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kind": "classifier",
            "to_version": self.to_version,
            "serving_version": self.serving_version,
            "outgoing_version": self.outgoing_version,
            "subjects": self.subjects,
            "decisions_to_keep": self.keep,
            "redecide": len(self.redecide),
            "blast_radius": self.blast_radius.num_rows,
        }

    def console_lines(self) -> list[str]:
        out = [
            f"  {self.model} (classifier; serving {self.serving_version or 'nothing'}, "
            f"outgoing {self.outgoing_version or '-'})",
            f"    subjects                 {self.subjects:>9}",
            f"    decisions to keep        {self.keep:>9}",
            f"    re-decide                {len(self.redecide):>9}  {sample_ids(self.redecide)}",
            f"    blast radius             {self.blast_radius.num_rows:>9}  "
            f"decisions by {self.outgoing_version or '-'} while serving that "
            f"{self.to_version} decides differently",
        ]
        for row in self.blast_radius.slice(0, 3).to_pylist():
            out.append(
                f"      {row['subject_id']}: {row['outgoing_label']} -> "
                f"{row['target_label']} at {row['decided_at']:%Y-%m-%d %H:%M:%S} "
                f"by {row['decided_by']}"
            )
        return out

    def runbook_lines(self, top: int) -> list[str]:
        v, outgoing = self.to_version, self.outgoing_version or "-"
        out = [
            f"### {self.model} (classifier; outgoing version {outgoing})",
            "",
            "| figure | count |",
            "|---|---:|",
            f"| subjects | {self.subjects} |",
            f"| decisions kept (latest {v} decision) | {self.keep} |",
            f"| re-decide (no {v} decision) | {len(self.redecide)} |",
            f"| blast radius (decisions by {outgoing} while serving that {v} "
            f"decides differently) | {self.blast_radius.num_rows} |",
            "",
        ]
        top_rows = top_blast_subjects(self.blast_radius, top)
        if top_rows:
            out += [
                "Top subjects in the blast radius:",
                "",
                "| subject | decisions |",
                "|---|---:|",
            ]
            out += [f"| {s} | {c} |" for s, c in top_rows]
            out.append("")
        if self.redecide:
            out += [
                f"Without `--classifier`, the {len(self.redecide)} re-decide subjects have no row "
                f"in the {v} decision table.",
                "",
            ]
        return out


class ClassifierKind:
    """A classifier: a decision table artifact, checked for purity and coverage."""

    name = "classifier"
    artifact = "decisions"
    counted = "decisions"
    latest = "subjects' latest decision"

    def data_topic(self, topics: Topics) -> str:
        return topics.decisions

    def plan(
        self, con: Connection, model: str, version: str, registered: tuple[int | None, str | None]
    ) -> DecisionPlan:
        outgoing = outgoing_version(con, model, version)
        subjects = rows(
            con,
            "SELECT count(DISTINCT subject_id) FROM decisions WHERE model = $model",
            model=model,
        )
        keep = rows(
            con,
            "SELECT count(DISTINCT subject_id) FROM decisions "
            "WHERE model = $model AND model_version = $version",
            model=model,
            version=version,
        )
        redecide = tuple(r[0] for r in rows(con, _REDECIDE_SQL, model=model, version=version))
        blast = arrow(con, _BLAST_RADIUS_SQL, model=model, version=version, outgoing=outgoing or "")
        return DecisionPlan(
            model=model,
            to_version=version,
            serving_version=serving_version(con, model),
            outgoing_version=outgoing,
            subjects=int(subjects[0][0]),
            keep=int(keep[0][0]),
            redecide=redecide,
            blast_radius=blast,
        )

    def eta(self, plan: ModelPlan, rates: Mapping[str, float]) -> float:
        return 0.0  # a decision table is one sorted query and one Parquet file

    def fill(self, producer: Producer, plan: ModelPlan, hooks: Hooks, *, batch: int) -> int:
        p = _own(plan)
        if hooks.classifier is None:
            return 0
        todo = list(p.redecide)
        for i in range(0, len(todo), batch):
            ids = todo[i : i + batch]
            for subject, (label, score, sha) in zip(ids, hooks.classifier(ids), strict=True):
                producer.record_decision(
                    p.model, p.to_version, subject, label, score=score, input_sha256=sha
                )
        return len(todo)

    def build(self, con: Connection, plan: ModelPlan, at: BuildContext) -> Path:
        table = arrow(con, DECISIONS_SQL, model=plan.model, version=plan.to_version)
        manifest = build_decision_table(
            at.root,
            model=plan.model,
            version=plan.to_version,
            table=table,
            log_offsets=at.log_offsets,
        )
        return at.root / str(manifest.relative_path)

    def checks(
        self,
        con: Connection,
        model: str,
        version: str,
        folder: Path,
        recall: RecallSpec,
    ) -> list[Check]:
        return check_decisions(con, model, version, folder)

    def reports(self, plan: ModelPlan) -> dict[str, pa.Table]:
        p = _own(plan)
        return {
            "redecide": pa.table({"subject_id": pa.array(p.redecide, pa.string())}),
            "blast_radius": p.blast_radius,
        }

    def mixed_state(self, con: Connection, model: str, serving_version: str) -> MixedState:
        return mixed_state(con, model, serving_version, kind=self.name, sql=MIXED_DECISIONS_SQL)

    def compare(
        self,
        con: Connection,
        model: str,
        versions: tuple[str, str],
        metrics: tuple[str | None, str | None],
        spec: ComparisonSpec,
    ) -> DecisionComparison:
        version_a, version_b = versions
        a = arrow(con, DECISIONS_SQL, model=model, version=version_a)
        b = arrow(con, DECISIONS_SQL, model=model, version=version_b)
        return compare_decisions(a, b, version_a=version_a, version_b=version_b)


def _own(plan: ModelPlan) -> DecisionPlan:
    # A kind is only ever handed its own plans (``plan.kind`` is how callers reach it).
    return cast(DecisionPlan, plan)


CLASSIFIER = ClassifierKind()
