"""The tables of a shard file: their DDL, and the Arrow schema each batch is built to."""

from __future__ import annotations

import pyarrow as pa

from ledger.store.positions import MARKS_DDL

#: Event tables, in the order a batch writes them (registrations first).
EVENT_TABLES = ("model_versions", "deployments", "embeddings", "deletions", "decisions")

# The event id is a UUID (the contract's canonical lowercase text, so the type is exact):
# 16 bytes against 36 for the text. It has no key index: a batch's stored ids are found by
# an anti-join (ledger.store.shards). Shards created with ``VARCHAR PRIMARY KEY`` keep it.
_ENVELOPE = """
    event_id UUID,
    event_time TIMESTAMPTZ,
    producer VARCHAR,
    model VARCHAR,
    model_version VARCHAR,"""
_SOURCE = """
    topic VARCHAR,
    "partition" INTEGER,
    "offset" BIGINT"""

DDL = f"""
CREATE TABLE IF NOT EXISTS offsets (
    topic VARCHAR, "partition" INTEGER, next_offset BIGINT, PRIMARY KEY (topic, "partition"));
CREATE TABLE IF NOT EXISTS model_versions ({_ENVELOPE}
    kind VARCHAR, dimension INTEGER, metric VARCHAR, artifact_uri VARCHAR,
    artifact_sha256 VARCHAR, labels VARCHAR[],{_SOURCE});
CREATE TABLE IF NOT EXISTS embeddings ({_ENVELOPE}
    entity_id VARCHAR, content_sha256 VARCHAR, dimension INTEGER, vector FLOAT[],{_SOURCE});
CREATE TABLE IF NOT EXISTS deletions ({_ENVELOPE}
    entity_id VARCHAR,{_SOURCE});
CREATE TABLE IF NOT EXISTS decisions ({_ENVELOPE}
    subject_id VARCHAR, label VARCHAR, score DOUBLE, input_sha256 VARCHAR,{_SOURCE});
CREATE TABLE IF NOT EXISTS deployments ({_ENVELOPE}
    from_version VARCHAR, reason VARCHAR, actor VARCHAR, summary MAP(VARCHAR, VARCHAR),{_SOURCE});
-- Shadow mode (schema 2 of EmbeddingWritten / DecisionRecorded): last, so shards created
-- before it gain the column in the same place.
ALTER TABLE embeddings ADD COLUMN IF NOT EXISTS shadow BOOLEAN DEFAULT false;
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS shadow BOOLEAN DEFAULT false;
CREATE TABLE IF NOT EXISTS dead_letters (
    topic VARCHAR, "partition" INTEGER, "offset" BIGINT, raw BLOB, reason VARCHAR,
    error VARCHAR, received_at TIMESTAMPTZ, redriven_at TIMESTAMPTZ);
"""
DDL += MARKS_DDL

#: Arrow types of the event tables' columns, in table order (a batch is built to match).
_ENV_TYPES: list[tuple[str, pa.DataType]] = [
    ("event_id", pa.string()),
    ("event_time", pa.timestamp("us", tz="UTC")),
    ("producer", pa.string()),
    ("model", pa.string()),
    ("model_version", pa.string()),
]
_SRC_TYPES: list[tuple[str, pa.DataType]] = [
    ("topic", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
]
ARROW_SCHEMAS: dict[str, pa.Schema] = {
    "model_versions": pa.schema(
        _ENV_TYPES
        + [
            ("kind", pa.string()),
            ("dimension", pa.int32()),
            ("metric", pa.string()),
            ("artifact_uri", pa.string()),
            ("artifact_sha256", pa.string()),
            ("labels", pa.list_(pa.string())),
        ]
        + _SRC_TYPES
    ),
    "embeddings": pa.schema(
        _ENV_TYPES
        + [
            ("entity_id", pa.string()),
            ("content_sha256", pa.string()),
            ("dimension", pa.int32()),
            ("vector", pa.list_(pa.float32())),
        ]
        + _SRC_TYPES
        + [("shadow", pa.bool_())]
    ),
    "deletions": pa.schema(_ENV_TYPES + [("entity_id", pa.string())] + _SRC_TYPES),
    "decisions": pa.schema(
        _ENV_TYPES
        + [
            ("subject_id", pa.string()),
            ("label", pa.string()),
            ("score", pa.float64()),
            ("input_sha256", pa.string()),
        ]
        + _SRC_TYPES
        + [("shadow", pa.bool_())]
    ),
    "deployments": pa.schema(
        _ENV_TYPES
        + [
            ("from_version", pa.string()),
            ("reason", pa.string()),
            ("actor", pa.string()),
            ("summary", pa.map_(pa.string(), pa.string())),
        ]
        + _SRC_TYPES
    ),
    "dead_letters": pa.schema(
        [
            ("topic", pa.string()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("raw", pa.binary()),
            ("reason", pa.string()),
            ("error", pa.string()),
            ("received_at", pa.timestamp("us", tz="UTC")),
            ("redriven_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
}


#: Columns that are not an event's content: where it was read from.
SOURCE_COLUMNS = frozenset({"topic", "partition", "offset"})


def empty_table(name: str) -> pa.Table:
    """An empty Arrow table with the columns of table ``name``."""
    return ARROW_SCHEMAS[name].empty_table()
