"""The SQL of the read side: views over all shards, plus the lineage macros.

Pure text (no DuckDB import): :func:`ledger.store.open_views` runs it on a connection
where the shards are attached. Every view and macro is documented with an example
query in ``docs/sql.md``.

"Latest" of an entity or subject means the greatest ``(partition, offset)`` within its
topic: events are keyed by entity / subject, so all of one's events share a partition
and the offset is the log's order (event times come from producers' clocks).
"""

from __future__ import annotations

from collections.abc import Sequence

#: Tables whose rows are events, deduplicated across shards by event id.
EVENT_VIEWS = ("model_versions", "embeddings", "deletions", "decisions", "deployments")


def _union_by_event_id(table: str, sources: Sequence[str]) -> str:
    # Each shard holds an event at most once (its key); across shards the same event
    # appears twice only after a partition handover. An anti-join on the (narrow)
    # event-id column keeps the first shard's copy without sorting the wide rows.
    parts = [f"SELECT * FROM {sources[0]}.{table}"]
    for i, src in enumerate(sources[1:], start=1):
        earlier = " UNION ALL ".join(f"SELECT event_id FROM {s}.{table}" for s in sources[:i])
        parts.append(
            f"SELECT t.* FROM {src}.{table} t ANTI JOIN ({earlier}) seen "
            "ON t.event_id = seen.event_id"
        )
    return "\nUNION ALL\n".join(parts)


def _union_all(table: str, sources: Sequence[str]) -> str:
    return "\nUNION ALL\n".join(f"SELECT * FROM {s}.{table}" for s in sources)


def _at(sql: str, position: str | None) -> str:
    # Keep only rows before the position: offset < next_offset of their topic-partition;
    # a partition the position does not name contributes nothing.
    if position is None:
        return sql
    return (
        f"SELECT r.* FROM (\n{sql}\n) r SEMI JOIN {position} p ON r.topic = p.topic "
        'AND r."partition" = p."partition" AND r."offset" < p.next_offset'
    )


def view_statements(sources: Sequence[str], *, position: str | None = None) -> list[str]:
    """The statements that create the views and macros over ``sources`` (attached shards).

    With ``position`` (a table of ``topic, "partition", next_offset``) every view shows the
    log as it was at that position, so the same macros answer "as of" an artifact's
    ``log_offsets`` (see :func:`ledger.store.open_views`).

    Example:
        >>> view_statements(["shard_0"])[0].startswith("CREATE VIEW model_versions")
        True
    """
    # Shards store the event id as a UUID (older ones as text); the views show its text,
    # as the contract spells it.
    out = [
        f"CREATE VIEW {table} AS SELECT * REPLACE (event_id::VARCHAR AS event_id) FROM (\n"
        f"{_at(_union_by_event_id(table, sources), position)}\n)"
        for table in EVENT_VIEWS
    ]
    out.append(
        # A message is dead-lettered once per shard that read it; show it once, re-driven
        # if any shard re-drove it.
        "CREATE VIEW dead_letters AS SELECT * FROM (\n"
        f"{_at(_union_all('dead_letters', sources), position)}\n"
        ') QUALIFY row_number() OVER (PARTITION BY topic, "partition", "offset" '
        "ORDER BY redriven_at NULLS LAST, received_at) = 1"
    )
    offsets = (
        'SELECT topic, "partition", max(next_offset) AS next_offset '
        f"FROM (\n{_union_all('offsets', sources)}\n) GROUP BY ALL"
    )
    if position is not None:
        offsets = (
            'SELECT o.topic, o."partition", least(o.next_offset, p.next_offset) AS next_offset '
            f'FROM ({offsets}) o JOIN {position} p USING (topic, "partition")'
        )
    out.append(f"CREATE VIEW offsets AS {offsets}")
    out.extend(_LINEAGE)
    return out


_LINEAGE = [
    # Which version of each model served from when to when (from DeploymentChanged, in
    # log order: the models topic has one partition).
    """CREATE VIEW serving_history AS
SELECT model, model_version, from_version,
       event_time AS served_from,
       lead(event_time) OVER w AS served_until,
       reason, actor, summary, event_id, "partition", "offset"
FROM deployments
WINDOW w AS (PARTITION BY model ORDER BY "partition", "offset")""",
    # The version serving now, per model.
    """CREATE VIEW serving_now AS
SELECT model, model_version, served_from FROM serving_history WHERE served_until IS NULL""",
    # Which version served model m at time t (NULL before the first deployment).
    """CREATE MACRO serving_version(m, t) AS (
    SELECT max_by(model_version, "offset") FROM serving_history
    WHERE model = m AND served_from <= t AND (served_until IS NULL OR t < served_until))""",
    # Each entity's latest event of model m (any version), write or deletion.
    """CREATE MACRO entity_state(m) AS TABLE
SELECT entity_id, model_version, deleted, event_time, "partition", "offset" FROM (
    SELECT entity_id, model_version, false AS deleted, event_time, "partition", "offset"
    FROM embeddings WHERE model = m
    UNION ALL
    SELECT entity_id, model_version, true AS deleted, event_time, "partition", "offset"
    FROM deletions WHERE model = m)
QUALIFY row_number() OVER (PARTITION BY entity_id ORDER BY "partition" DESC, "offset" DESC) = 1""",
    # The entities of model m that are live (latest event is not a deletion).
    """CREATE MACRO live_entities(m) AS TABLE
SELECT entity_id, model_version AS current_version, event_time, "partition", "offset"
FROM entity_state(m) WHERE NOT deleted""",
    # The latest v embedding of every live entity of model m.
    """CREATE MACRO version_embeddings(m, v) AS TABLE
SELECT e.* FROM embeddings e SEMI JOIN live_entities(m) l ON e.entity_id = l.entity_id
WHERE e.model = m AND e.model_version = v
QUALIFY row_number() OVER (
    PARTITION BY e.entity_id ORDER BY e."partition" DESC, e."offset" DESC) = 1""",
    # Each entity's latest embedding of model m, any version (also of entities deleted since).
    """CREATE MACRO latest_embeddings(m) AS TABLE
SELECT * FROM embeddings WHERE model = m
QUALIFY row_number() OVER (PARTITION BY entity_id ORDER BY "partition" DESC, "offset" DESC) = 1""",
    # The latest decision of each subject made by version v of model m.
    """CREATE MACRO version_decisions(m, v) AS TABLE
SELECT * FROM decisions WHERE model = m AND model_version = v
QUALIFY row_number() OVER (PARTITION BY subject_id ORDER BY "partition" DESC, "offset" DESC) = 1""",
    # Each subject's latest decision of model m, any version.
    """CREATE MACRO latest_decisions(m) AS TABLE
SELECT * FROM decisions WHERE model = m
QUALIFY row_number() OVER (PARTITION BY subject_id ORDER BY "partition" DESC, "offset" DESC) = 1""",
    # Per model and version: how much of the current state each version produced. A model
    # whose live entities' current vectors come from two versions is in a mixed state.
    """CREATE VIEW version_counts AS
WITH models AS (SELECT DISTINCT model FROM model_versions),
current_vectors AS (
    SELECT m.model, l.current_version AS model_version FROM models m, live_entities(m.model) l),
current_decisions AS (
    SELECT m.model, d.model_version FROM models m, latest_decisions(m.model) d),
n_vectors AS (SELECT model, model_version, count(*) AS n FROM current_vectors GROUP BY ALL),
n_decisions AS (SELECT model, model_version, count(*) AS n FROM current_decisions GROUP BY ALL),
n_embedding_events AS (SELECT model, model_version, count(*) AS n FROM embeddings GROUP BY ALL),
n_decision_events AS (SELECT model, model_version, count(*) AS n FROM decisions GROUP BY ALL)
SELECT mv.model, mv.model_version, mv.kind,
       coalesce(v.n, 0) AS current_vectors,
       coalesce(d.n, 0) AS current_decisions,
       coalesce(ee.n, 0) AS embedding_events,
       coalesce(de.n, 0) AS decision_events,
       coalesce(s.model_version = mv.model_version, false) AS serving
FROM (SELECT DISTINCT model, model_version, kind FROM model_versions) mv
LEFT JOIN n_vectors v USING (model, model_version)
LEFT JOIN n_decisions d USING (model, model_version)
LEFT JOIN n_embedding_events ee USING (model, model_version)
LEFT JOIN n_decision_events de USING (model, model_version)
LEFT JOIN serving_now s USING (model)
ORDER BY mv.model, mv.model_version""",
]
