"""What a rollback (or promotion) of a model to a version must do, computed from the views.

Definitions (DESIGN.md, "What a rollback must produce"), for model M and target V:

- an entity is *live* when its latest event (write or deletion, any version of M) is a
  write; order is log order: greatest ``(partition, offset)`` — an entity is keyed, so all
  its events share a partition;
- *items*: live entities with a V embedding; each is indexed with its latest V vector;
- *gap*: live entities with no V embedding (they must be embedded with V);
- *stale*: items whose latest embedding of any version has a different content hash than
  their latest V embedding (the content changed after V saw it);
- decisions: each subject's latest V decision is kept; *re-decide* are subjects whose
  decisions all came from other versions;
- *blast radius*: decisions made by the outgoing version (the latest version other than V
  that served M) while it was serving, that disagree with V's decision for the subject
  (shadow decisions were never acted on and do not count).

All of it is set-based SQL over the views of :func:`ledger.store.open_views`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ledger.errors import ContractError
from ledger.store import Connection, arrow, rows
from ledger.store.queries import outgoing_version, registered_version, serving_version

# The SQL below builds on the views and macros of ledger.store.views (documented in docs/sql.md):
# live_entities, latest_embeddings, version_embeddings, version_decisions, serving_now,
# serving_history.

# One row: the counts, and only the ids a plan lists (gap, stale), each in entity-id order.
_EMBEDDING_SETS = """
    WITH any_w AS (SELECT entity_id, content_sha256 FROM latest_embeddings($model)),
    v_w AS (SELECT entity_id, content_sha256 FROM version_embeddings($model, $version)),
    sets AS (
        SELECT live.entity_id,
               v_w.entity_id IS NOT NULL AS has_version,
               v_w.entity_id IS NOT NULL AND any_w.content_sha256 <> v_w.content_sha256
                   AS is_stale
        FROM live_entities($model) live
        JOIN any_w USING (entity_id)
        LEFT JOIN v_w USING (entity_id))
    SELECT count(*) AS live,
           count(*) FILTER (WHERE has_version) AS items,
           coalesce(list(entity_id ORDER BY entity_id) FILTER (WHERE NOT has_version), [])
               AS gap,
           coalesce(list(entity_id ORDER BY entity_id) FILTER (WHERE is_stale), []) AS stale
    FROM sets
"""


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


@dataclass(frozen=True, slots=True, eq=False)
class EmbeddingPlan:
    """The index side of a rollback of one embedding model."""

    model: str
    to_version: str
    serving_version: str | None
    dimension: int
    metric: str
    live: int
    items: int
    gap: tuple[str, ...]
    stale: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kind": "embedding",
            "to_version": self.to_version,
            "serving_version": self.serving_version,
            "live": self.live,
            "with_version": self.items,
            "items_to_index": self.items,
            "gap": len(self.gap),
            "stale": len(self.stale),
        }


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


ModelPlan = EmbeddingPlan | DecisionPlan


def plan_model(con: Connection, model: str, version: str) -> ModelPlan:
    """Plan the rollback of one model to ``version`` from the views on ``con``."""
    kind, dimension, metric = registered_version(con, model, version)
    serving = serving_version(con, model)
    if kind == "embedding":
        ((live, items, gap, stale),) = rows(con, _EMBEDDING_SETS, model=model, version=version)
        if dimension is None or metric is None:
            raise ContractError(f"{model} {version} is registered without dimension/metric")
        return EmbeddingPlan(
            model=model,
            to_version=version,
            serving_version=serving,
            dimension=int(dimension),
            metric=str(metric),
            live=int(live),
            items=int(items),
            gap=tuple(gap),
            stale=tuple(stale),
        )
    outgoing = outgoing_version(con, model, version)
    subjects = rows(
        con, "SELECT count(DISTINCT subject_id) FROM decisions WHERE model = $model", model=model
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
        serving_version=serving,
        outgoing_version=outgoing,
        subjects=int(subjects[0][0]),
        keep=int(keep[0][0]),
        redecide=redecide,
        blast_radius=blast,
    )
