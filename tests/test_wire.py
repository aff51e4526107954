"""The wire format: golden bytes, committed fingerprints, schema evolution, and bad frames."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from samples import HISTORY, SAMPLES

from ledger.contract.events import Topics, new_event_id, new_event_ids
from ledger.contract.schemas import EVENT_TYPES, EventSchema, SchemaStore, default_store, schema_dir
from ledger.contract.wire import HEADER_SIZE, MARKER, decode, encode, encode_batch, row_template
from ledger.errors import CorruptMessage, UnknownSchema, WireError
from ledger.log.reading import read_to_end

GOLDEN = Path(__file__).parent / "golden"


def test_schema_dir_of_a_source_checkout_is_the_top_level_schemas_folder() -> None:
    repo_schemas = Path(__file__).resolve().parent.parent / "schemas"
    assert schema_dir().resolve() == repo_schemas
    assert {p.stem for p in schema_dir().glob("*.avsc")} == set(EVENT_TYPES)


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_fingerprint_equals_the_committed_value(name: str) -> None:
    committed = json.loads((GOLDEN / "fingerprints.json").read_text())[name]
    actual = default_store().current[name].fingerprint.hex()
    assert actual == committed, (
        f"schemas/{name}.avsc changed its fingerprint ({committed} -> {actual}): copy the old "
        f"schema to schemas/history/ first (history/{name}.<n>.avsc) so old messages keep "
        "decoding, then update tests/golden/fingerprints.json"
    )


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_encode_reproduces_the_golden_bytes(name: str) -> None:
    golden = (GOLDEN / f"{name}.bin").read_bytes()
    assert encode(default_store().current[name], SAMPLES[name]) == golden


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_decode_reads_the_golden_bytes(name: str) -> None:
    golden = (GOLDEN / f"{name}.bin").read_bytes()
    assert golden[:2] == MARKER
    assert decode(default_store(), golden) == (name, SAMPLES[name])


def test_every_event_type_has_a_golden_file() -> None:
    assert {p.stem for p in GOLDEN.glob("*.bin")} == set(EVENT_TYPES)


# -- schema history: bytes written before a field was added -----------------------------


@pytest.mark.parametrize("key", sorted(HISTORY))
def test_history_schema_fingerprint_equals_the_committed_value(key: str) -> None:
    committed = json.loads((GOLDEN / "history" / "fingerprints.json").read_text())[key]
    old = EventSchema.from_json(json.loads((schema_dir() / "history" / f"{key}.avsc").read_text()))
    assert old.fingerprint.hex() == committed
    assert old.fingerprint in default_store().by_fingerprint


@pytest.mark.parametrize("key", sorted(HISTORY))
def test_golden_bytes_of_an_old_schema_decode_into_the_current_one_with_defaults(
    key: str,
) -> None:
    record, defaults = HISTORY[key]
    golden = (GOLDEN / "history" / f"{key}.bin").read_bytes()
    old = EventSchema.from_json(json.loads((schema_dir() / "history" / f"{key}.avsc").read_text()))
    assert encode(old, record) == golden  # the committed bytes are what that schema wrote
    assert decode(default_store(), golden) == (key.split(".")[0], {**record, **defaults})


def test_every_history_schema_has_golden_bytes() -> None:
    assert {p.stem for p in (schema_dir() / "history").glob("*.avsc")} == set(HISTORY)
    assert {p.stem for p in (GOLDEN / "history").glob("*.bin")} == set(HISTORY)


# -- evolution ------------------------------------------------------------------------


def _evolved_schemas(tmp_path: Path, *, keep_history: bool) -> Path:
    """A schema folder where EntityDeleted gained a field with a default (version 2)."""
    root = tmp_path / "schemas"
    (root / "history").mkdir(parents=True)
    for name in EVENT_TYPES:
        shutil.copy(schema_dir() / f"{name}.avsc", root / f"{name}.avsc")
    old = json.loads((root / "EntityDeleted.avsc").read_text())
    if keep_history:
        (root / "history" / "EntityDeleted.1.avsc").write_text(json.dumps(old))
    new = {
        **old,
        "fields": [*old["fields"], {"name": "cause", "type": "string", "default": "gdpr"}],
    }
    (root / "EntityDeleted.avsc").write_text(json.dumps(new))
    return root


def _old_entity_deleted() -> EventSchema:
    return EventSchema.from_json(json.loads((schema_dir() / "EntityDeleted.avsc").read_text()))


def test_bytes_written_with_an_old_schema_decode_into_the_new_one_with_the_default(
    tmp_path: Path,
) -> None:
    store = SchemaStore.load(_evolved_schemas(tmp_path, keep_history=True))
    old = _old_entity_deleted()
    assert store.current["EntityDeleted"].fingerprint != old.fingerprint

    name, record = decode(store, encode(old, SAMPLES["EntityDeleted"]))

    assert name == "EntityDeleted"
    assert record == {**SAMPLES["EntityDeleted"], "cause": "gdpr"}


def test_bytes_written_with_the_new_schema_round_trip(tmp_path: Path) -> None:
    store = SchemaStore.load(_evolved_schemas(tmp_path, keep_history=True))
    record = {**SAMPLES["EntityDeleted"], "cause": "user request"}
    assert decode(store, encode(store.current["EntityDeleted"], record)) == (
        "EntityDeleted",
        record,
    )


def test_old_bytes_without_the_old_schema_in_history_raise_unknown_schema(tmp_path: Path) -> None:
    store = SchemaStore.load(_evolved_schemas(tmp_path, keep_history=False))
    old = _old_entity_deleted()
    with pytest.raises(UnknownSchema) as info:
        decode(store, encode(old, SAMPLES["EntityDeleted"]))
    assert info.value.fingerprint == old.fingerprint
    assert old.fingerprint.hex() in str(info.value)


# -- bad frames -----------------------------------------------------------------------

_GOOD = (GOLDEN / "EmbeddingWritten.bin").read_bytes()


def test_unknown_fingerprint_raises_unknown_schema_naming_it() -> None:
    data = MARKER + bytes(range(8)) + _GOOD[HEADER_SIZE:]
    with pytest.raises(UnknownSchema, match="0001020304050607"):
        decode(default_store(), data)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        pytest.param(b"", "not an Avro single-object frame", id="empty"),
        pytest.param(
            _GOOD[: HEADER_SIZE - 1], "not an Avro single-object frame", id="short-header"
        ),
        pytest.param(b"\xc3\x02" + _GOOD[2:], "not an Avro single-object frame", id="bad-marker"),
        pytest.param(b'{"json": 1}', "not an Avro single-object frame", id="json"),
        pytest.param(_GOOD[:-7], "does not decode", id="truncated-body"),
        pytest.param(_GOOD + b"\x00\x01", "2 trailing bytes", id="trailing-bytes"),
    ],
)
def test_broken_frames_raise_corrupt_message_saying_what_is_wrong(data: bytes, says: str) -> None:
    with pytest.raises(CorruptMessage, match=says) as info:
        decode(default_store(), data)
    assert isinstance(info.value, WireError) and says in info.value.reason


def test_invalid_utf8_in_a_string_field_is_corrupt_not_a_crash() -> None:
    record: dict[str, Any] = dict(SAMPLES["EntityDeleted"])
    good = encode(default_store().current["EntityDeleted"], record)
    bad = good[:-1] + b"\xff"  # last byte is inside entity_id ("doc-1")
    with pytest.raises(CorruptMessage, match="EntityDeleted body does not decode"):
        decode(default_store(), bad)


# -- the batch fast path --------------------------------------------------------------


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_encode_batch_gives_the_same_bytes_as_encode(name: str) -> None:
    schema = default_store().current[name]
    rows = [
        dict(SAMPLES[name]),
        {**SAMPLES[name], "event_id": "00000000-0000-4000-8000-0000000000ff", "event_time": -5},
    ]
    varying = ("event_id", "event_time")
    constant = {k: v for k, v in SAMPLES[name].items() if k not in varying}
    columns = {k: [r[k] for r in rows] for k in varying}
    assert encode_batch(schema, constant, columns) == [encode(schema, r) for r in rows]
    one = {k: [v] for k, v in SAMPLES[name].items() if k != "producer"}
    assert encode_batch(schema, {"producer": "golden-test"}, one) == [
        (GOLDEN / f"{name}.bin").read_bytes()
    ]


def test_row_template_encodes_unicode_big_numbers_and_long_strings_like_fastavro() -> None:
    schema = default_store().current["EmbeddingWritten"]
    template = row_template(
        schema, {"producer": "prodüction", "model": "m", "dimension": 1, "shadow": False}
    )
    assert template is not None  # EmbeddingWritten is primitive-only: the fast path
    values = {
        "event_id": ["é" * 70, "x"],
        "event_time": [2**62, -(2**62)],
        "model_version": ["v" * 300, "ünïcode"],
        "entity_id": ["a", "b" * 20_000],
        "content_sha256": ["c" * 64, ""],
        "vector": [b"\x00" * 4, b"\xff" * 200],
    }
    expected = [
        encode(
            schema,
            {
                "producer": "prodüction",
                "model": "m",
                "dimension": 1,
                "shadow": False,
                **{k: v[i] for k, v in values.items()},
            },
        )
        for i in range(2)
    ]
    assert template.encode(values) == expected
    assert [template.encode_one({k: v[i] for k, v in values.items()}) for i in range(2)] == expected


def test_batch_event_ids_are_distinct_uuid4_strings() -> None:
    ids = [*new_event_ids(1000), new_event_id()]
    assert len(set(ids)) == len(ids)
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)


@pytest.mark.kafka
def test_old_schema_bytes_round_trip_through_the_broker_into_the_new_schema(
    bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    store = SchemaStore.load(_evolved_schemas(tmp_path, keep_history=True))
    new = store.current["EntityDeleted"]
    old_record = SAMPLES["EntityDeleted"]
    new_record = {**old_record, "event_id": "00000000-0000-4000-8000-0000000000aa", "cause": "x"}
    kafka = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        kafka.send(topics.embeddings, key=b"doc-1", value=encode(_old_entity_deleted(), old_record))
        kafka.send(topics.embeddings, key=b"doc-1", value=encode(new, new_record))
        kafka.flush()
    finally:
        kafka.close()

    got = [decode(store, m.value) for m in read_to_end(bootstrap, [topics.embeddings])]

    assert got == [
        ("EntityDeleted", {**old_record, "cause": "gdpr"}),
        ("EntityDeleted", new_record),
    ]
