"""The mixed-state figure: how many live entities' latest served embedding (or decision) is not
from the serving version, i.e. how mixed a store fed directly by the services would be."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ledger.checks.check import Check
from ledger.store import Connection, rows

MIXED_EMBEDDINGS_SQL = """
    WITH served AS (
        SELECT entity_id, model_version FROM embeddings
        WHERE model = $model AND NOT coalesce(shadow, false)
        QUALIFY row_number() OVER (
            PARTITION BY entity_id ORDER BY "partition" DESC, "offset" DESC) = 1)
    SELECT s.model_version AS version, count(*) AS n
    FROM live_entities($model) l LEFT JOIN served s USING (entity_id)
    GROUP BY ALL ORDER BY ALL
"""


MIXED_DECISIONS_SQL = """
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


def mixed_state(
    con: Connection, model: str, serving_version: str, *, kind: str, sql: str
) -> MixedState:
    """The mixed-state figure of ``model`` from the views on ``con`` (the log as it is now).

    Example:
        >>> con = open_views(home)  # doctest: +SKIP
        >>> m = mixed_state(con, "text-embedder", "v1", kind="embedding",
        ...                 sql=MIXED_EMBEDDINGS_SQL)  # doctest: +SKIP
        >>> m.mixed, dict(m.by_version)  # doctest: +SKIP
        (52, {'v1': 135, 'v2': 52})
    """
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


def check_mixed(state: MixedState, noun: str) -> Check:
    """``fail_on_mixed``: the mixed-state figure as a check (passes at zero); ``noun`` names
    what is counted (vectors, decisions)."""
    whose = ", ".join(f"{v}: {n}" for v, n in state.by_version.items())
    return Check(
        state.model,
        "mixed",
        state.mixed == 0,
        f"{state.mixed} of {state.total} current "
        f"{noun} are not "
        f"{state.serving_version} ({whose or 'none'})",
        state.to_dict(),
    )
