"""Queries over the views that several stages ask: the log position the views cover, the
registered and serving versions of a model, and the rows of a version's artifacts."""

from __future__ import annotations

from ledger.errors import UnknownModelVersion
from ledger.store._db import Connection, rows

#: The index items of (model, version): live entities' latest V vectors, in entity-id order.
ITEMS_SQL = """
    SELECT entity_id, event_id, content_sha256, vector FROM version_embeddings($model, $version)
    ORDER BY entity_id
"""


#: The ids of the index items of (model, version), in entity-id order, each with the row
#: key of its vector (see ``VERSION_VECTORS_SQL``): ITEMS_SQL without the wide columns. A
#: row key is where the event sits in the log, as one int64: partition * 2**47 + offset
#: (Kafka partitions are few; offsets stay below 2**47).
ITEM_KEYS_SQL = """
    SELECT entity_id, "partition"::BIGINT * 140737488355328 + "offset" AS row_key
    FROM version_embeddings($model, $version)
    ORDER BY entity_id
"""

#: Every stored vector of (model, version), in storage order, with its row key: no sort and
#: no window, so DuckDB streams it. Older vectors of an entity are among them; the row keys
#: of ITEM_KEYS_SQL say which rows are the items.
VERSION_VECTORS_SQL = """
    SELECT "partition"::BIGINT * 140737488355328 + "offset" AS row_key, vector FROM embeddings
    WHERE model = $model AND model_version = $version
"""


#: The decision table of (model, version): each subject's latest V decision, in subject order.
DECISIONS_SQL = """
    SELECT subject_id, label, score, event_id, event_time, producer
    FROM version_decisions($model, $version)
    ORDER BY subject_id
"""


def latest_deployment(con: Connection, model: str) -> tuple[str, str | None] | None:
    """``(version, artifact)`` of the log's latest deployment of ``model`` (the artifact
    when the event's summary names one), or None if the log records none."""
    found = rows(
        con,
        "SELECT model_version, summary['artifact'] FROM serving_history "
        "WHERE model = $model AND served_until IS NULL",
        model=model,
    )
    return (str(found[0][0]), found[0][1]) if found else None


def log_offsets(con: Connection) -> dict[str, int]:
    """The log position the views cover: ``{"topic:partition": next offset}``."""
    found = rows(con, 'SELECT topic, "partition", next_offset FROM offsets ORDER BY ALL')
    return {f"{topic}:{partition}": int(offset) for topic, partition, offset in found}


def registered_version(
    con: Connection, model: str, version: str
) -> tuple[str, int | None, str | None]:
    """``(kind, dimension, metric)`` of a registered version, or UnknownModelVersion."""
    found = rows(
        con,
        "SELECT kind, dimension, metric FROM model_versions "
        'WHERE model = $model AND model_version = $version ORDER BY "partition", "offset" LIMIT 1',
        model=model,
        version=version,
    )
    if not found:
        known = [
            r[0]
            for r in rows(
                con,
                "SELECT DISTINCT model_version FROM model_versions WHERE model = $model ORDER BY 1",
                model=model,
            )
        ]
        hint = (
            f"known versions: {', '.join(known)}"
            if known
            else f"model {model} has no registered versions"
        )
        raise UnknownModelVersion(
            f"model {model} version {version} is not registered ({hint})",
            field="model_version",
            expected="a registered version",
            got=f"{model}/{version}",
        )
    kind, dimension, metric = found[0]
    return str(kind), dimension, metric


def serving_version(con: Connection, model: str) -> str | None:
    """The version of ``model`` serving now according to the log's deployments (``serving_now``)."""
    found = rows(con, "SELECT model_version FROM serving_now WHERE model = $model", model=model)
    return str(found[0][0]) if found else None


def outgoing_version(con: Connection, model: str, target: str) -> str | None:
    """The latest version other than ``target`` that served ``model`` (None if none did)."""
    found = rows(
        con,
        "SELECT model_version FROM serving_history WHERE model = $model "
        'AND model_version <> $version ORDER BY "partition" DESC, "offset" DESC LIMIT 1',
        model=model,
        version=target,
    )
    return str(found[0][0]) if found else None
