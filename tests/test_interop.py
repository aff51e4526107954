"""Interop with the official Apache ``avro`` library, both directions.

avro-python's ``canonical_form`` keeps ``{"type":"string"}`` for logical-typed primitives
(against the spec's [PRIMITIVES] rule), so its ``fingerprint()`` of our ``.avsc`` files
differs from fastavro's and Java's. Parsing OUR canonical form with avro gives the spec's
fingerprint; the bodies are written and read from the ``.avsc`` files themselves.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import avro.io
import avro.schema
import pytest
from samples import SAMPLES

from ledger.contract.schemas import EVENT_TYPES, default_store, schema_dir
from ledger.contract.wire import HEADER_SIZE, MARKER, decode, encode

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _avsc(name: str) -> avro.schema.Schema:
    return avro.schema.parse((schema_dir() / f"{name}.avsc").read_text())


def _to_avro(record: dict[str, Any]) -> dict[str, Any]:
    # avro-python works on logical values: timestamp-micros is a datetime.
    return {**record, "event_time": _EPOCH + timedelta(microseconds=record["event_time"])}


def _from_avro(record: dict[str, Any]) -> dict[str, Any]:
    delta = record["event_time"] - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return {**record, "event_time": micros}


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_avro_fingerprint_of_our_canonical_form_equals_ours(name: str) -> None:
    ours = default_store().current[name]
    assert avro.schema.parse(ours.canonical).fingerprint("CRC-64-AVRO") == ours.fingerprint


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_event_framed_by_apache_avro_decodes_in_ledger(name: str) -> None:
    fp = avro.schema.parse(default_store().current[name].canonical).fingerprint("CRC-64-AVRO")
    body = io.BytesIO()
    avro.io.DatumWriter(_avsc(name)).write(_to_avro(SAMPLES[name]), avro.io.BinaryEncoder(body))
    framed = b"\xc3\x01" + fp + body.getvalue()

    assert decode(default_store(), framed) == (name, SAMPLES[name])
    # An independent encoder produced the committed golden bytes, byte for byte.
    assert framed == encode(default_store().current[name], SAMPLES[name])


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_event_encoded_by_ledger_decodes_in_apache_avro(name: str) -> None:
    data = encode(default_store().current[name], SAMPLES[name])
    fp = avro.schema.parse(default_store().current[name].canonical).fingerprint("CRC-64-AVRO")
    assert data[:2] == MARKER and data[2:HEADER_SIZE] == fp

    body = io.BytesIO(data[HEADER_SIZE:])
    record = avro.io.DatumReader(_avsc(name)).read(avro.io.BinaryDecoder(body))

    assert body.tell() == len(data) - HEADER_SIZE
    assert _from_avro(record) == SAMPLES[name]
