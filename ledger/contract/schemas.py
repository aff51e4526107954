"""The event contract: the ``.avsc`` files, parsed, canonicalised and fingerprinted.

Each event type has one schema file, ``schemas/<EventType>.avsc`` (the version
producers write today). Earlier versions of a schema live in ``schemas/history/``
so that bytes written with them keep decoding: a message names its writer schema by
fingerprint, and is read into the current schema of the same name (Avro schema
resolution, fastavro's).

Canonical form and fingerprints are fastavro's (``to_parsing_canonical_form``,
``fingerprint(..., "CRC-64-AVRO")``), which follow the Avro spec and Java.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from ledger.errors import LedgerError

EVENT_TYPES = (
    "ModelVersionRegistered",
    "EmbeddingWritten",
    "EntityDeleted",
    "DecisionRecorded",
    "DeploymentChanged",
)


def schema_dir() -> Path:
    """The folder holding the ``.avsc`` files, in a source checkout or an installed wheel.

    Example:
        >>> (schema_dir() / "EmbeddingWritten.avsc").is_file()
        True
    """
    packaged = Path(str(resources.files("ledger"))) / "_schemas"
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parents[2] / "schemas"
    if source.is_dir():
        return source
    raise LedgerError(f"event schemas not found (looked in {packaged} and {source}); reinstall")


def _without_logical_types(node: Any) -> Any:
    # The codec works on the wire types (event_time as int micros, event_id as str):
    # converting to datetime/UUID objects and back costs more than the Avro itself on
    # the hot path. Logical types are not part of the canonical form, so the
    # fingerprint is unchanged.
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


@dataclass(frozen=True, slots=True)
class EventSchema:
    """One version of one event type's schema.

    Attributes:
        name: the event type, e.g. ``"EmbeddingWritten"``.
        source: the schema as written in its ``.avsc`` file.
        parsed: the fastavro-parsed wire schema (logical types as their base types).
        canonical: the Avro parsing canonical form.
        fingerprint: CRC-64-AVRO of the canonical form, 8 bytes little-endian as on the wire.
    """

    name: str
    source: Mapping[str, Any]
    parsed: Any
    canonical: str
    fingerprint: bytes

    @classmethod
    def from_json(cls, schema: Mapping[str, Any]) -> EventSchema:
        """Parse one schema (the JSON object of an ``.avsc`` file)."""
        canonical = to_parsing_canonical_form(parse_schema(dict(schema)))
        return cls(
            name=str(schema["name"]).rsplit(".", 1)[-1],
            source=schema,
            parsed=parse_schema(_without_logical_types(dict(schema))),
            canonical=canonical,
            fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
        )


class SchemaStore:
    """The current schema of every event type, and every known writer schema by fingerprint.

    Example:
        >>> store = SchemaStore.load()
        >>> store.current["EntityDeleted"].name
        'EntityDeleted'
    """

    def __init__(self, current: Iterable[EventSchema], writers: Iterable[EventSchema] = ()) -> None:
        self.current: dict[str, EventSchema] = {s.name: s for s in current}
        self.by_fingerprint: dict[bytes, EventSchema] = {}
        for schema in [*writers, *self.current.values()]:
            self.add_writer(schema)

    def add_writer(self, schema: EventSchema) -> None:
        """Accept bytes written with ``schema`` (an older or newer version of a current type)."""
        if schema.name not in self.current:
            raise LedgerError(f"schema {schema.name} is not an event type of this ledger")
        self.by_fingerprint[schema.fingerprint] = schema

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaStore:
        """Load ``<dir>/*.avsc`` as the current schemas and ``<dir>/history/*.avsc`` as writers."""
        root = directory or schema_dir()
        current = [EventSchema.from_json(_read(root / f"{name}.avsc")) for name in EVENT_TYPES]
        history = sorted((root / "history").glob("*.avsc"))
        return cls(current, [EventSchema.from_json(_read(p)) for p in history])


def _read(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LedgerError(f"cannot read schema {path.name}: {exc}") from exc
    return data


_default_store: SchemaStore | None = None


def default_store() -> SchemaStore:
    """The process-wide store loaded from :func:`schema_dir` (loaded once)."""
    global _default_store
    if _default_store is None:
        _default_store = SchemaStore.load()
    return _default_store
