"""The embedding kind: an Annoy index of each live entity's latest target-version vector.

Its plan: *items* are live entities with a V embedding (each indexed with its latest V
vector); the *gap* are live entities with no V embedding (they must be embedded with V);
*stale* are items whose latest embedding of any version has a different content hash than
their latest V embedding (the content changed after V saw it). An entity is *live* when its
latest event (write or deletion, any version) is a write, in log order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ledger.artifacts.index_build import DEFAULT_TREES, build_index_streamed
from ledger.checks.artifact import check_index
from ledger.checks.check import Check
from ledger.checks.mixed import MIXED_EMBEDDINGS_SQL, MixedState, mixed_state
from ledger.checks.recall import RecallSpec
from ledger.contract.events import Topics
from ledger.errors import ContractError
from ledger.log.producer import Producer
from ledger.ops.kinds.base import BuildContext, Hooks, ModelPlan
from ledger.ops.metrics import ComparisonSpec, EmbeddingComparison, compare_embeddings
from ledger.ops.rates import record_rate
from ledger.store import Connection, arrow, record_batches, rows, vector_matrix
from ledger.store.queries import ITEM_KEYS_SQL, ITEMS_SQL, VERSION_VECTORS_SQL, serving_version

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


def sample_ids(ids: tuple[str, ...], n: int = 5) -> str:
    """A few ids for a console line, with how many more there are."""
    more = f", ... (+{len(ids) - n})" if len(ids) > n else ""
    return ", ".join(ids[:n]) + more if ids else "-"


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

    @property
    def kind(self) -> EmbeddingKind:
        return EMBEDDING

    @property
    def index_items(self) -> int:
        return self.items

    @property
    def needs_fill(self) -> bool:
        return bool(self.gap or self.stale)

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

    def console_lines(self) -> list[str]:
        v = self.to_version
        return [
            f"  {self.model} (embedding, {self.dimension}-d {self.metric}; serving "
            f"{self.serving_version or 'nothing'})",
            f"    live entities            {self.live:>9}",
            f"    with a {v} embedding{' ' * max(0, 9 - len(v))}{self.items:>9}  -> items to index",
            f"    gap (no {v} embedding){' ' * max(0, 7 - len(v))}"
            f"{len(self.gap):>9}  {sample_ids(self.gap)}",
            f"    stale (content changed)  {len(self.stale):>9}  {sample_ids(self.stale)}",
        ]

    def runbook_lines(self, top: int) -> list[str]:
        v = self.to_version
        out = [
            f"### {self.model} (embedding model, {self.dimension}-d {self.metric})",
            "",
            "| figure | count |",
            "|---|---:|",
            f"| live entities | {self.live} |",
            f"| items to index (live, with a {v} embedding) | {self.items} |",
            f"| gap (live, no {v} embedding) | {len(self.gap)} |",
            f"| stale (content changed after {v} embedded it) | {len(self.stale)} |",
            "",
        ]
        if self.needs_fill:
            out += [
                f"Without `--embedder`, the {len(self.gap)} gap entities are left out of the index "
                f"and the {len(self.stale)} stale ones are served with their old {v} vectors. "
                f"Lists: `{self.model}.gap.csv`, `{self.model}.stale.csv` in the rollback's report "
                "folder.",
                "",
            ]
        return out


class EmbeddingKind:
    """An embedding model: an Annoy index artifact, recall-checked against exact search."""

    name = "embedding"
    artifact = "index"
    counted = "vectors"
    latest = "live entities' latest vector"

    def data_topic(self, topics: Topics) -> str:
        return topics.embeddings

    def plan(
        self, con: Connection, model: str, version: str, registered: tuple[int | None, str | None]
    ) -> EmbeddingPlan:
        dimension, metric = registered
        if dimension is None or metric is None:
            raise ContractError(f"{model} {version} is registered without dimension/metric")
        ((live, items, gap, stale),) = rows(con, _EMBEDDING_SETS, model=model, version=version)
        return EmbeddingPlan(
            model=model,
            to_version=version,
            serving_version=serving_version(con, model),
            dimension=int(dimension),
            metric=str(metric),
            live=int(live),
            items=int(items),
            gap=tuple(gap),
            stale=tuple(stale),
        )

    def eta(self, plan: ModelPlan, rates: Mapping[str, float]) -> float:
        p = _own(plan)
        return p.items / rates["load"] + p.items * p.dimension * DEFAULT_TREES / rates["build"]

    def fill(self, producer: Producer, plan: ModelPlan, hooks: Hooks, *, batch: int) -> int:
        p = _own(plan)
        if hooks.embedder is None:
            return 0
        todo = sorted(set(p.gap) | set(p.stale))
        for i in range(0, len(todo), batch):
            ids = todo[i : i + batch]
            vectors, hashes = hooks.embedder(ids)
            producer.write_embeddings(p.model, p.to_version, ids, vectors, content_sha256s=hashes)
        return len(todo)

    def build(self, con: Connection, plan: ModelPlan, at: BuildContext) -> Path:
        """Stream the version's vectors out of the store into the build (DESIGN decision 11):
        only the ids and row keys are held, the vectors one batch at a time."""
        p = _own(plan)
        started = time.perf_counter()
        at.progress("load", 0, p.items)
        keys = arrow(con, ITEM_KEYS_SQL, model=p.model, version=p.to_version)
        items = keys.num_rows

        def batches() -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
            for b in record_batches(con, VERSION_VECTORS_SQL, model=p.model, version=p.to_version):
                yield b.column("row_key").to_numpy(), vector_matrix(b, p.dimension)
            # Every input file is written: the load ends here and the Annoy build starts.
            nonlocal started
            at.progress("load", items, items)
            record_rate(at.home, "load", items, time.perf_counter() - started, items=items)
            started = time.perf_counter()
            at.progress("build", 0, items)

        manifest = build_index_streamed(
            at.root,
            model=p.model,
            version=p.to_version,
            entity_ids=keys.column("entity_id").to_pylist(),
            row_keys=keys.column("row_key").to_numpy(),
            batches=batches(),
            dimension=p.dimension,
            metric=p.metric,
            log_offsets=at.log_offsets,
        )
        at.progress("build", items, items)
        work = items * p.dimension * manifest.trees
        record_rate(at.home, "build", work, time.perf_counter() - started, items=items)
        return at.root / str(manifest.relative_path)

    def checks(
        self,
        con: Connection,
        model: str,
        version: str,
        folder: Path,
        recall: RecallSpec,
    ) -> list[Check]:
        return check_index(con, model, version, folder, recall)

    def reports(self, plan: ModelPlan) -> dict[str, pa.Table]:
        p = _own(plan)
        return {
            "gap": pa.table({"entity_id": pa.array(p.gap, pa.string())}),
            "stale": pa.table({"entity_id": pa.array(p.stale, pa.string())}),
        }

    def mixed_state(self, con: Connection, model: str, serving_version: str) -> MixedState:
        return mixed_state(con, model, serving_version, kind=self.name, sql=MIXED_EMBEDDINGS_SQL)

    def compare(
        self,
        con: Connection,
        model: str,
        versions: tuple[str, str],
        metrics: tuple[str | None, str | None],
        spec: ComparisonSpec,
    ) -> EmbeddingComparison:
        version_a, version_b = versions
        a = arrow(con, ITEMS_SQL, model=model, version=version_a)
        b = arrow(con, ITEMS_SQL, model=model, version=version_b)
        metric_a = metrics[0] or "angular"
        return compare_embeddings(
            a.column("entity_id"),
            vector_matrix(a),
            b.column("entity_id"),
            vector_matrix(b),
            metric=metric_a,
            metric_b=metrics[1] or metric_a,
            k=spec.k,
            sample=spec.sample,
            seed=spec.seed,
            version_a=version_a,
            version_b=version_b,
        )


def _own(plan: ModelPlan) -> EmbeddingPlan:
    # A kind is only ever handed its own plans (``plan.kind`` is how callers reach it).
    return cast(EmbeddingPlan, plan)


EMBEDDING = EmbeddingKind()
