"""The batch decode (``wire.decode_batch``) against the one-by-one decode: same values for
every row it decodes, and every row it is not sure of left to ``decode``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from samples import HISTORY, SAMPLES

from ledger.contract.schemas import EventSchema, default_store, schema_dir
from ledger.contract.wire import decode, decode_batch, encode

#: The many events: decoded a batch at a time (the others go one by one).
BULK = ("EmbeddingWritten", "EntityDeleted", "DecisionRecorded")


def _value(column: Any, row: int) -> Any:
    return column[row].as_py() if hasattr(column, "to_pylist") else column[row].item()


def _agrees(values: list[bytes], fingerprint: bytes) -> list[bool]:
    """decode_batch's ``ok`` per row, after checking each ok row against decode()."""
    store = default_store()
    cols = decode_batch(store, fingerprint, values)
    assert cols is not None
    for row, ok in enumerate(cols.ok.tolist()):
        if ok:
            name, record = decode(store, values[row])
            assert name == cols.name
            assert {k: _value(c, row) for k, c in cols.columns.items()} == record
    return [bool(x) for x in cols.ok]


def _variants(name: str) -> list[dict[str, Any]]:
    base = dict(SAMPLES[name])
    big = dict(base)
    big.update(event_id="é" * 70, event_time=2**62 - 1, producer="p" * 300, model="ünï")
    small = {**base, "event_time": -(2**62), "model_version": ""}
    out = [base, big, small]
    if name == "EmbeddingWritten":
        out.append({**base, "dimension": 3, "vector": np.arange(3, dtype="<f4").tobytes()})
        out.append({**base, "entity_id": "b" * 20_000, "shadow": True})
    if name == "DecisionRecorded":
        out.append({**base, "score": -1e300, "label": "x" * 65})
    return out


@pytest.mark.parametrize("name", BULK)
def test_decode_batch_gives_the_values_decode_gives_for_every_row(name: str) -> None:
    schema = default_store().current[name]
    values = [encode(schema, r) for r in _variants(name)]
    assert all(_agrees(values, schema.fingerprint))


@pytest.mark.parametrize("key", sorted(HISTORY))
def test_decode_batch_reads_old_schema_bytes_into_the_current_schema(key: str) -> None:
    record, defaults = HISTORY[key]
    source = json.loads((schema_dir() / "history" / f"{key}.avsc").read_text())
    schema = EventSchema.from_json(source)
    values = [encode(schema, record), encode(schema, record)]
    assert _agrees(values, schema.fingerprint) == [True, True]
    cols = decode_batch(default_store(), schema.fingerprint, values)
    assert cols is not None
    assert {k: _value(cols.columns[k], 1) for k in defaults} == defaults


def test_rows_decode_batch_is_not_sure_of_are_left_to_decode_and_the_others_kept() -> None:
    schema = default_store().current["EmbeddingWritten"]
    good = encode(schema, SAMPLES["EmbeddingWritten"])
    time_max = encode(schema, {**SAMPLES["EmbeddingWritten"], "event_time": 2**63 - 1})
    utf8 = bytearray(good)
    utf8[good.index(SAMPLES["EmbeddingWritten"]["entity_id"].encode())] = 0xFF
    values = [
        good,
        good + b"\x00",  # trailing byte
        good[:-9],  # truncated inside the vector
        good[:-1] + b"\x02",  # a boolean byte that is neither 0 nor 1
        time_max,  # a 10-byte varint: fastavro decides
        bytes(utf8),  # entity_id not UTF-8
        good[:12],  # cut inside the envelope
        good,
    ]
    assert _agrees(values, schema.fingerprint) == [True, *([False] * 6), True]


def test_schemas_with_unions_or_maps_are_not_decoded_in_a_batch() -> None:
    store = default_store()
    for name in ("DeploymentChanged", "ModelVersionRegistered"):
        schema = store.current[name]
        assert decode_batch(store, schema.fingerprint, [encode(schema, SAMPLES[name])]) is None
