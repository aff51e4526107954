"""Avro single-object encoding: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint + Avro body.

A message names its own writer schema, so no registry service is needed and old
schema versions keep decoding (the body is resolved into the current schema).
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from ledger.errors import CorruptMessage, UnknownSchema
from ledger.schemas import EventSchema, SchemaStore

MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8


def encode(schema: EventSchema, record: dict[str, Any]) -> bytes:
    """Frame one record written with ``schema``.

    Example:
        >>> from ledger.schemas import default_store
        >>> s = default_store().current["EntityDeleted"]
        >>> data = encode(s, {"event_id": "e", "event_time": 0, "producer": "p",
        ...                   "model": "m", "model_version": "v1", "entity_id": "a"})
        >>> data[:2] == MARKER and data[2:10] == s.fingerprint
        True
    """
    buf = BytesIO()
    buf.write(MARKER)
    buf.write(schema.fingerprint)
    schemaless_writer(buf, schema.parsed, record)
    return buf.getvalue()


def decode(store: SchemaStore, data: bytes) -> tuple[str, dict[str, Any]]:
    """Read one framed message into the current schema of its type.

    Returns:
        ``(event_type, record)``; logical types stay as wire values
        (``event_time`` int microseconds, ``event_id`` str).

    Raises:
        CorruptMessage: not a single-object frame, or the body does not decode.
        UnknownSchema: the frame's fingerprint matches no known schema.
    """
    if len(data) < HEADER_SIZE or data[:2] != MARKER:
        raise CorruptMessage(
            f"not an Avro single-object frame (starts {bytes(data[:4]).hex() or 'empty'}, "
            f"{len(data)} bytes); expected marker c301 and an 8-byte fingerprint"
        )
    fp = bytes(data[2:HEADER_SIZE])
    writer = store.by_fingerprint.get(fp)
    if writer is None:
        raise UnknownSchema(fp)
    reader = store.current[writer.name]
    body = BytesIO(data[HEADER_SIZE:])
    try:
        record = schemaless_reader(body, writer.parsed, None if writer is reader else reader.parsed)
    except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, ...
        raise CorruptMessage(
            f"{writer.name} body does not decode: {type(exc).__name__}: {exc}"
        ) from exc
    if body.tell() != len(data) - HEADER_SIZE:
        raise CorruptMessage(
            f"{writer.name} body has {len(data) - HEADER_SIZE - body.tell()} trailing bytes"
        )
    if not isinstance(record, dict):
        raise CorruptMessage(f"{writer.name} body is not a record")
    return writer.name, record
