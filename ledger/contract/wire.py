"""Avro single-object encoding: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint + Avro body.

A message names its own writer schema, so no registry service is needed and old
schema versions keep decoding (the body is resolved into the current schema).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from itertools import repeat
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from ledger.contract.schemas import EventSchema, SchemaStore
from ledger.errors import CorruptMessage, UnknownSchema

MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8


def encode(schema: EventSchema, record: dict[str, Any]) -> bytes:
    """Frame one record written with ``schema``.

    Example:
        >>> from ledger.contract.schemas import default_store
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


# -- the batch fast path ------------------------------------------------------------------
# Avro binary of a record is the concatenation of its fields' encodings, so the fields a
# batch shares (producer, model, version, time, dimension) are encoded once and each row
# only encodes what varies. For primitive fields only; tests check it against fastavro.


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: A varint's high groups, cached: an event time's change only every 16 ms (2**14 µs).
_high_groups = lru_cache(maxsize=1024)(_varint)
#: Varints below 2**14 (two bytes at most), cached.
_low_varint = lru_cache(maxsize=4096)(_varint)


def _long(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)  # zigzag
    if n < 0x4000:
        return _low_varint(n)
    # The low two 7-bit groups (with continuation bits), then the rest as a varint.
    return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80)) + _high_groups(n >> 14)


@lru_cache(maxsize=4096)
def _small_long(n: int) -> bytes:
    return _long(n)


def _bytes(b: bytes) -> bytes:
    return _small_long(len(b)) + b


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return _small_long(len(b)) + b


def _double(x: float) -> bytes:
    return struct.pack("<d", x)


def _boolean(x: bool) -> bytes:
    return b"\x01" if x else b"\x00"


_PRIMITIVE: dict[str, Callable[[Any], bytes]] = {
    "string": _string,
    "bytes": _bytes,
    "int": _long,
    "long": _long,
    "double": _double,
    "boolean": _boolean,
}


_Plan = list[tuple[str, Callable[[Any], bytes]]]
_plans: dict[bytes, _Plan | None] = {}


def _plan(schema: EventSchema) -> _Plan | None:
    """Each field's encoder, or None when a field is not a primitive (then fastavro encodes)."""
    if schema.fingerprint not in _plans:
        plan: _Plan = []
        for field in schema.parsed["fields"]:
            kind = field["type"]
            if isinstance(kind, dict) and set(kind) == {"type"}:  # {"type": "string"} of a uuid
                kind = kind["type"]
            enc = _PRIMITIVE.get(kind) if isinstance(kind, str) else None
            if enc is None:
                _plans[schema.fingerprint] = None
                return None
            plan.append((field["name"], enc))
        _plans[schema.fingerprint] = plan
    return _plans[schema.fingerprint]


#: Constant strings (producer, model, version) repeat from call to call.
_constant_string = lru_cache(maxsize=4096)(_string)


@dataclass(frozen=True, slots=True)
class RowTemplate:
    """One schema with some fields fixed: the fixed ones are encoded once, rows add the rest.

    Build it with :func:`row_template`; :func:`encode_batch` is the one-shot form.

    Example:
        >>> from ledger.contract.schemas import default_store
        >>> s = default_store().current["EntityDeleted"]
        >>> env = {"event_time": 0, "producer": "p", "model": "m", "model_version": "v1"}
        >>> t = row_template(s, env)
        >>> t.encode({"event_id": ["e1"], "entity_id": ["a"]})[0] == encode(
        ...     s, {**env, "event_id": "e1", "entity_id": "a"})
        True
    """

    #: constant chunks (bytes) and (field, encoder) pairs for the varying fields, in order
    parts: tuple[bytes | tuple[str, Callable[[Any], bytes]], ...]

    def encode_one(self, row: Mapping[str, Any]) -> bytes:
        """Frame one record from the varying fields in ``row``."""
        return b"".join([p if isinstance(p, bytes) else p[1](row[p[0]]) for p in self.parts])

    def encode(self, columns: Mapping[str, Sequence[Any]]) -> list[bytes]:
        """Frame one record per row of ``columns`` (each a sequence, one value per row)."""
        n = len(next(iter(columns.values())))
        pieces: list[Iterable[bytes]] = []
        for p in self.parts:
            if isinstance(p, bytes):
                pieces.append(repeat(p, n))
            else:
                pieces.extend(_column(p[1], columns[p[0]], n))
        return [b"".join(row) for row in zip(*pieces, strict=True)]


def _column(enc: Callable[[Any], bytes], values: Sequence[Any], n: int) -> list[Iterable[bytes]]:
    """One column's encodings for :meth:`RowTemplate.encode`: strings and bytes of one
    length (ids, hashes, vectors) as one shared length prefix and the values as they are,
    so that no row copies a value into a prefixed one first."""
    if enc is _string or enc is _bytes:
        raw = [v.encode("utf-8") for v in values] if enc is _string else list(values)
        sizes = set(map(len, raw))
        if len(sizes) == 1:
            return [repeat(_small_long(sizes.pop()), n), raw]
        return [[_small_long(len(b)) + b for b in raw]]
    return [[enc(v) for v in values]]


def row_template(schema: EventSchema, constant: Mapping[str, Any]) -> RowTemplate | None:
    """The template of ``schema`` with ``constant`` fixed; None if a field is not primitive."""
    plan = _plan(schema)
    if plan is None:
        return None
    # Runs of constant fields become one chunk; the header joins the first run.
    parts: list[bytes | tuple[str, Callable[[Any], bytes]]] = []
    chunk = MARKER + schema.fingerprint
    for name, enc in plan:
        if name in constant:
            chunk += (_constant_string if enc is _string else enc)(constant[name])
            continue
        if chunk:
            parts.append(chunk)
            chunk = b""
        parts.append((name, enc))
    if chunk:
        parts.append(chunk)
    return RowTemplate(tuple(parts))


def encode_batch(
    schema: EventSchema, constant: Mapping[str, Any], columns: Mapping[str, Sequence[Any]]
) -> list[bytes]:
    """Frame ``n`` records that share the ``constant`` fields; ``columns`` give the rest, per row.

    Same bytes as :func:`encode` of each record, several times faster for primitive-only
    schemas (others fall back to :func:`encode` per record). Values are not validated
    here: the producer's contract checks come first.

    Example:
        >>> from ledger.contract.schemas import default_store
        >>> s = default_store().current["EntityDeleted"]
        >>> env = {"event_time": 0, "producer": "p", "model": "m", "model_version": "v1"}
        >>> rows = encode_batch(s, env, {"event_id": ["e1", "e2"], "entity_id": ["a", "b"]})
        >>> rows[1] == encode(s, {**env, "event_id": "e2", "entity_id": "b"})
        True
    """
    template = row_template(schema, constant)
    if template is not None:
        return template.encode(columns)
    n = len(next(iter(columns.values())))
    return [
        encode(schema, {**constant, **{k: col[i] for k, col in columns.items()}}) for i in range(n)
    ]


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
