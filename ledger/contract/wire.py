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

import numpy as np
import numpy.typing as npt
import pyarrow as pa
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


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: A varint's high groups, cached: an event time's change only every 16 ms (2**14 µs).
_high_groups = lru_cache(maxsize=1024)(_encode_varint)
#: Varints below 2**14 (two bytes at most), cached.
_low_varint = lru_cache(maxsize=4096)(_encode_varint)


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


# -- the batch decode ---------------------------------------------------------------------
# The events of a poll mostly share one writer schema of primitive fields, so they are
# decoded field by field for all rows at once (numpy over the joined bodies) instead of
# one fastavro call and one dict per record. Anything this path is not sure of (a
# varint that may not fit, a length past the end, trailing bytes, a boolean byte other
# than 0/1, text that is not UTF-8) is left to :func:`decode`, one row at a time, which
# gives it fastavro's value or its CorruptMessage. Tests check both paths agree.

#: Avro wire kinds this path reads, and the longest varint it accepts for the integer ones
#: (9 bytes hold 63 bits: a longer one is left to fastavro).
_VARINT_BYTES = {"long": 9, "int": 5}
_BULK_KINDS = frozenset({"string", "bytes", "long", "int", "boolean", "double"})
_PAD = 16  # zero bytes after the joined bodies, so reads past a row's end stay in bounds


@dataclass(frozen=True, slots=True)
class _BulkPlan:
    name: str
    writer: tuple[tuple[str, str], ...]  # (field, kind) in writer order
    reader: tuple[tuple[str, str, Any], ...]  # (field, kind, default) in reader order
    keep: frozenset[str]  # writer fields the reader has


_bulk_plans: dict[bytes, _BulkPlan | None] = {}


def _kind(field: Mapping[str, Any]) -> str | None:
    kind = field["type"]
    if isinstance(kind, dict) and set(kind) == {"type"}:  # {"type": "string"} of a uuid
        kind = kind["type"]
    return kind if isinstance(kind, str) and kind in _BULK_KINDS else None


def _bulk_plan(store: SchemaStore, fingerprint: bytes) -> _BulkPlan | None:
    if fingerprint not in _bulk_plans:
        writer = store.by_fingerprint.get(fingerprint)
        plan = None
        if writer is not None:
            reader = store.current[writer.name]
            wfields = [(f["name"], _kind(f)) for f in writer.parsed["fields"]]
            rfields = [(f["name"], _kind(f), f.get("default")) for f in reader.parsed["fields"]]
            wkinds = dict(wfields)
            usable = all(k is not None for _, k in wfields) and all(
                k is not None and (wkinds[n] == k if n in wkinds else d is not None)
                for n, k, d in rfields
            )
            if usable:
                plan = _BulkPlan(
                    writer.name,
                    tuple((n, str(k)) for n, k in wfields),
                    tuple((n, str(k), d) for n, k, d in rfields),
                    frozenset(n for n, _ in wfields) & {n for n, _, _ in rfields},
                )
        _bulk_plans[fingerprint] = plan
    return _bulk_plans[fingerprint]


@dataclass(frozen=True, slots=True)
class Columns:
    """Records of one writer schema, decoded for a whole batch into the current schema.

    ``columns`` has one entry per field of the current schema, one value per row:
    strings as ``pa.StringArray``, bytes as ``pa.BinaryArray``, numbers and booleans as
    numpy arrays (``event_time`` int64 microseconds, as :func:`decode` gives it). Rows
    where ``ok`` is False were not decoded here (their values are meaningless): pass
    them to :func:`decode`.
    """

    name: str
    ok: npt.NDArray[np.bool_]
    columns: dict[str, Any]


def _varint(
    buf: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64], bad: npt.NDArray[np.bool_], most: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Zigzag varints at ``pos`` (rows already ``bad`` are read, and ignored); the values
    and the positions after them. A varint longer than ``most`` bytes marks its row bad."""
    b = buf[pos].astype(np.uint64)
    value = b & np.uint64(0x7F)
    more = b >= 0x80
    size = np.ones(len(pos), np.int64)
    for k in range(1, most):
        if not more.any():
            break
        b = buf[pos + k].astype(np.uint64)
        value |= np.where(more, (b & np.uint64(0x7F)) << np.uint64(7 * k), np.uint64(0))
        size += more
        more &= b >= 0x80
    bad |= more  # longer than ``most`` bytes: fastavro decides
    signed = (value >> np.uint64(1)).astype(np.int64) ^ -(value & np.uint64(1)).astype(np.int64)
    return signed, pos + size


def _spans(
    buf: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64], end: npt.NDArray[np.int64], bad: Any
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Length-prefixed strings / bytes at ``pos``: (starts, lengths, positions after)."""
    length, start = _varint(buf, pos, bad, _VARINT_BYTES["long"])
    bad |= (length < 0) | (start + length > end)
    length = np.where(bad, 0, length)
    return start, length, np.minimum(start + length, end)


def _strings(
    joined: bytes,
    buf: npt.NDArray[np.uint8],
    starts: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    bad: npt.NDArray[np.bool_],
    *,
    text: bool,
) -> pa.Array:
    """The values at ``starts`` as one Arrow string (``text``) or binary array; a row whose
    text is not UTF-8 is marked ``bad`` (and left empty)."""
    offsets = np.zeros(len(starts) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > 64 * len(starts):  # long values (vectors): slices joined
        view = memoryview(joined)
        data: Any = b"".join(
            [view[s : s + n] for s, n in zip(starts.tolist(), lengths.tolist(), strict=True)]
        )
    else:  # short ones: one gather
        data = buf[np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])]
    arr = pa.Array.from_buffers(
        pa.string() if text else pa.binary(),
        len(starts),
        [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)],
    )
    if text:
        try:
            arr.validate(full=True)
        except pa.ArrowInvalid:  # not UTF-8 somewhere: find the rows, leave them to decode()
            for i in np.flatnonzero(~bad):
                try:
                    joined[starts[i] : starts[i] + lengths[i]].decode("utf-8")
                except UnicodeDecodeError:
                    bad[i] = True
            return _strings(joined, buf, starts, np.where(bad, 0, lengths), bad, text=True)
    return arr


def decode_batch(store: SchemaStore, fingerprint: bytes, values: Sequence[bytes]) -> Columns | None:
    """Decode framed messages that all carry ``fingerprint`` into columns of the current
    schema of their type; ``None`` when the schema has fields this path does not read
    (unions, maps, arrays: use :func:`decode` for those).

    Example:
        >>> from ledger.contract.schemas import default_store
        >>> s = default_store().current["EntityDeleted"]
        >>> env = {"event_time": 7, "producer": "p", "model": "m", "model_version": "v1"}
        >>> rows = encode_batch(s, env, {"event_id": ["e1", "e2"], "entity_id": ["a", "b"]})
        >>> cols = decode_batch(default_store(), s.fingerprint, rows)
        >>> cols.ok.tolist(), cols.columns["entity_id"].to_pylist()
        ([True, True], ['a', 'b'])
    """
    plan = _bulk_plan(store, fingerprint)
    if plan is None:
        return None
    n = len(values)
    if n == 0:
        return None
    joined = b"".join(values)
    buf = np.frombuffer(joined + bytes(_PAD), np.uint8)
    sizes = np.fromiter(map(len, values), np.int64, n)
    end = np.cumsum(sizes)
    pos = end - sizes + HEADER_SIZE
    bad = sizes < HEADER_SIZE  # the caller checked marker and fingerprint
    pos = np.minimum(pos, end)
    out: dict[str, Any] = {}
    for name, kind in plan.writer:
        if kind in ("string", "bytes"):
            start, length, pos = _spans(buf, pos, end, bad)
            if name in plan.keep:
                out[name] = (start, length, kind == "string")
        elif kind in _VARINT_BYTES:
            value, pos = _varint(buf, pos, bad, _VARINT_BYTES[kind])
            if kind == "int":
                bad |= (value < -(2**31)) | (value >= 2**31)
            out[name] = value
        elif kind == "boolean":
            byte = buf[pos]
            bad |= byte > 1
            out[name] = byte == 1
            pos = pos + 1
        else:  # double
            raw = buf[pos[:, None] + np.arange(8)]
            out[name] = raw.view("<f8").reshape(n)
            pos = pos + 8
        bad |= pos > end
        pos = np.minimum(pos, end)
    bad |= pos != end  # trailing bytes
    columns: dict[str, Any] = {}
    for name, kind, default in plan.reader:
        if name not in plan.keep:
            columns[name] = _default_column(kind, default, n)
        elif isinstance(out[name], tuple):
            start, length, text = out[name]
            columns[name] = _strings(joined, buf, start, length, bad, text=text)
        else:
            columns[name] = out[name]
    return Columns(plan.name, ~bad, columns)


def _default_column(kind: str, default: Any, n: int) -> Any:
    if kind in ("string", "bytes"):
        return pa.array([default] * n, pa.string() if kind == "string" else pa.binary())
    dtype = {"boolean": np.bool_, "double": np.float64}.get(kind, np.int64)
    return np.full(n, default, dtype)
