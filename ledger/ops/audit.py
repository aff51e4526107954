"""The auditor's questions, answered from the views (offline: no broker needed).

- :func:`lineage`: every event about an entity or subject, across models and versions,
  with the version of its model that was serving at that moment;
- :func:`versions`: a model's registered versions, their counts and serving windows;
- :func:`openlineage_events`: OpenLineage ``RunEvent`` s for every deployment and
  rollback (``DeploymentChanged``), for lineage tools such as Marquez.

Everything builds on the views and macros of :mod:`ledger.store.views` (``serving_version``,
``version_counts``, ``serving_history``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pyarrow as pa

import ledger
from ledger.contract.events import Topics
from ledger.errors import UnknownModelVersion
from ledger.store import Connection, arrow, rows

#: One row per event about ``$id`` (an entity of embeddings / deletions, a subject of
#: decisions), in log order per topic, with the version of its model serving at its time.
LINEAGE_SQL = """
    SELECT event_time, event, model, model_version,
           serving_version(model, event_time) AS serving_version,
           detail, producer, topic, "partition", "offset", event_id
    FROM (
        SELECT 'EmbeddingWritten' AS event, model, model_version, event_time,
               'content ' || left(content_sha256, 12) AS detail, producer, topic,
               "partition", "offset", event_id
        FROM embeddings WHERE entity_id = $id
        UNION ALL
        SELECT 'EntityDeleted', model, model_version, event_time, NULL, producer, topic,
               "partition", "offset", event_id
        FROM deletions WHERE entity_id = $id
        UNION ALL
        SELECT 'DecisionRecorded', model, model_version, event_time,
               label || ' (score ' || round(score, 3) || ')', producer, topic,
               "partition", "offset", event_id
        FROM decisions WHERE subject_id = $id)
    WHERE $model IS NULL OR model = $model
    ORDER BY event_time, topic, "partition", "offset"
"""

_VERSIONS_SQL = """
    SELECT c.model_version AS version, c.kind, c.serving, c.current_vectors,
           c.current_decisions, c.embedding_events, c.decision_events,
           list({'from': h.served_from, 'until': h.served_until, 'reason': h.reason}
                ORDER BY h."offset") FILTER (WHERE h.served_from IS NOT NULL) AS windows
    FROM version_counts c
    LEFT JOIN serving_history h ON h.model = c.model AND h.model_version = c.model_version
    WHERE c.model = $model
    GROUP BY ALL
    ORDER BY c.model_version
"""

_DEPLOYMENTS_SQL = """
    SELECT event_id, model, model_version, from_version, served_from, reason, actor,
           map_entries(summary) AS summary
    FROM serving_history ORDER BY "offset"
"""

OPENLINEAGE_SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
PRODUCER_URI = f"https://github.com/lineage-ledger/lineage-ledger/tree/v{ledger.__version__}"
#: Namespace of the runIds: uuid5(RUN_NAMESPACE, DeploymentChanged event id).
RUN_NAMESPACE = uuid.UUID("6c1e5a3e-1b7e-5a0e-9f3c-6c0ad1e5d9b2")
_FACET_SCHEMA = "https://github.com/lineage-ledger/lineage-ledger/blob/main/docs/events.md"


def known_models(con: Connection) -> list[str]:
    """Every model with a registered version."""
    found = rows(con, "SELECT DISTINCT model FROM model_versions ORDER BY model")
    return [str(r[0]) for r in found]


def _require_model(con: Connection, model: str) -> None:
    models = known_models(con)
    if model not in models:
        raise UnknownModelVersion(
            f"unknown model {model!r}; registered: {', '.join(models) or 'none'}",
            field="model",
            got=model,
        )


def lineage(con: Connection, entity_id: str, *, model: str | None = None) -> pa.Table:
    """Every event about ``entity_id`` (optionally of one ``model``), oldest first.

    Example:
        >>> lineage(con, "doc-000001").column("event").to_pylist()  # doctest: +SKIP
        ['EmbeddingWritten', 'DecisionRecorded', 'EmbeddingWritten', ...]
    """
    if model is not None:
        _require_model(con, model)
    return arrow(con, LINEAGE_SQL, id=entity_id, model=model)


def versions(con: Connection, model: str, *, version: str | None = None) -> list[dict[str, Any]]:
    """A model's registered versions: counts (see ``version_counts``) and serving windows.

    Raises :class:`UnknownModelVersion` for a model or version that was never registered.

    Example:
        >>> [v["version"] for v in versions(con, "text-embedder")]  # doctest: +SKIP
        ['v1', 'v2']
    """
    _require_model(con, model)
    found: list[dict[str, Any]] = arrow(con, _VERSIONS_SQL, model=model).to_pylist()
    if version is not None:
        found = [r for r in found if r["version"] == version]
        if not found:
            raise UnknownModelVersion(
                f"model {model!r} has no version {version!r}", field="model_version", got=version
            )
    for row in found:
        row["windows"] = row["windows"] or []
    return found


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def openlineage_events(
    con: Any, *, topics: Topics, kafka_namespace: str, artifacts_namespace: str = "file"
) -> list[dict[str, Any]]:
    """One OpenLineage ``RunEvent`` (eventType ``COMPLETE``) per ``DeploymentChanged``.

    The job is ``<model>.rollback`` for a change made by ``ledger rollback`` (it names the
    artifact it built) and ``<model>.deployment`` otherwise; inputs are the topics the
    state was rebuilt from, the output is the artifact. ``run.runId`` is derived from the
    event id, so exporting twice gives the same runs.

    Example:
        >>> ns = "kafka://kafka:9092"  # doctest: +SKIP
        >>> e = openlineage_events(con, topics=Topics(), kafka_namespace=ns)  # doctest: +SKIP
        >>> e[0]["eventType"], e[0]["job"]["name"]  # doctest: +SKIP
        ('COMPLETE', 'text-embedder.deployment')
    """
    out = []
    kinds = dict(rows(con, "SELECT DISTINCT model, kind FROM model_versions"))
    for row in arrow(con, _DEPLOYMENTS_SQL).to_pylist():
        summary: Mapping[str, str] = {e["key"]: e["value"] for e in row["summary"] or []}
        artifact = summary.get("artifact")
        source = topics.decisions if kinds.get(row["model"]) == "classifier" else topics.embeddings
        inputs = [{"namespace": kafka_namespace, "name": n} for n in (topics.models, source)]
        outputs = [{"namespace": artifacts_namespace, "name": artifact}] if artifact else []
        out.append(
            {
                "eventType": "COMPLETE",
                "eventTime": _iso(row["served_from"]),
                "producer": PRODUCER_URI,
                "schemaURL": OPENLINEAGE_SCHEMA_URL,
                "run": {
                    "runId": str(uuid.uuid5(RUN_NAMESPACE, row["event_id"])),
                    "facets": {
                        "ledger_deployment": {
                            "_producer": PRODUCER_URI,
                            "_schemaURL": _FACET_SCHEMA,
                            "eventId": row["event_id"],
                            "model": row["model"],
                            "toVersion": row["model_version"],
                            "fromVersion": row["from_version"],
                            "reason": row["reason"],
                            "actor": row["actor"],
                            "summary": dict(summary),
                        }
                    },
                },
                "job": {
                    "namespace": f"lineage-ledger/{topics.prefix}",
                    "name": f"{row['model']}.{'rollback' if artifact else 'deployment'}",
                },
                "inputs": inputs,
                "outputs": outputs,
            }
        )
    return out
