"""Events from another producer that break the contract quietly: each is a dead letter
with its reason, and the pipeline goes on."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.catchup import catch_up
from consumers.deadletters import list_dead_letters, redrive
from ledger.contract.events import new_event_id
from ledger.log.producer import Producer, content_hash
from ledger.store import open_views
from tests.helpers import encoded, envelope, send_raw

pytestmark = pytest.mark.kafka

INT64_MAX = 2**63 - 1


def _embedding(entity: str, **envelope_fields) -> bytes:
    record = envelope(
        "emb",
        "v1",
        entity_id=entity,
        content_sha256=content_hash(entity),
        dimension=8,
        vector=np.ones(8, "<f4").tobytes(),
    )
    return encoded("EmbeddingWritten", {**record, **envelope_fields})


def _decision(subject: str, **fields) -> bytes:
    record = envelope(
        "clf", "c1", subject_id=subject, label="yes", score=0.5, input_sha256=content_hash(subject)
    )
    return encoded("DecisionRecorded", {**record, **fields})


def _registered(bootstrap, topics) -> None:
    with Producer(bootstrap=bootstrap, name="svc", topics=topics) as p:
        p.register_model_version("emb", "v1", kind="embedding", dimension=8, metric="angular")
        p.register_model_version("clf", "c1", kind="classifier", labels=["yes", "no"])


def _entities(home) -> set[str]:
    con = open_views(home)
    try:
        rows = con.execute("SELECT entity_id, event_time FROM embeddings").fetchall()
    finally:
        con.close()
    return {entity for entity, _ in rows}  # every event_time became a datetime


def test_bad_ids_hashes_and_times_are_dead_letters_with_their_reason(bootstrap, topics, tmp_path):
    _registered(bootstrap, topics)
    bad = {
        "blank entity id": (topics.embeddings, b"  ", _embedding("  ")),
        "content hash": (
            topics.embeddings,
            b"h",
            _embedding("h", content_sha256="ABC" + "0" * 61),
        ),
        "event id": (topics.embeddings, b"i", _embedding("i", event_id="not-a-uuid")),
        "int64 max time": (topics.embeddings, b"t", _embedding("t", event_time=INT64_MAX)),
        "before 1970": (topics.embeddings, b"u", _embedding("u", event_time=-1)),
        "blank subject id": (topics.decisions, b"", _decision("")),
        "input hash": (topics.decisions, b"s", _decision("s", input_sha256="x" * 64)),
    }
    messages = []
    for i, (topic, key, raw) in enumerate(bad.values()):
        messages.append((topics.embeddings, f"good{i}".encode(), _embedding(f"good{i}"), 0))
        messages.append((topic, key, raw, 0))
    send_raw(bootstrap, messages)

    stats = catch_up(bootstrap, topics, tmp_path)

    assert stats.dead_letters == len(bad)
    reasons = sorted(d.reason for d in list_dead_letters(tmp_path))
    for words in (
        "entity_id must be a non-empty string",
        "content_sha256 must be 64 lowercase hex characters",
        "event_id must be a lowercase UUID",
        f"event_time must be microseconds since 1970-01-01 UTC, before year 10000 "
        f"(time.time_ns() // 1000); is the producer's clock set?; field=event_time; "
        f"expected=1970..9999 in microseconds; got={INT64_MAX}",
        "got=-1",
        "subject_id must be a non-empty string",
        "input_sha256 must be 64 lowercase hex characters",
    ):
        assert any(words in r for r in reasons), (words, reasons)
    assert _entities(tmp_path) == {f"good{i}" for i in range(len(bad))}


def test_a_different_event_reusing_an_event_id_is_a_dead_letter_naming_both_offsets(
    bootstrap, make_topics, tmp_path
):
    topics = make_topics(1)
    _registered(bootstrap, topics)
    taken = new_event_id()
    first = _embedding("a", event_id=taken)
    send_raw(
        bootstrap,
        [
            (topics.embeddings, b"a", first),  # offset 0
            (topics.embeddings, b"a", first),  # 1: the same bytes again, a retry: no-op
            (topics.embeddings, b"b", _embedding("b", event_id=taken)),  # 2: same transaction
        ],
    )
    catch_up(bootstrap, topics, tmp_path)
    send_raw(bootstrap, [(topics.embeddings, b"c", _embedding("c", event_id=taken))])  # 3
    catch_up(bootstrap, topics, tmp_path)  # another transaction: against the stored rows

    dead = list_dead_letters(tmp_path)
    assert [d.offset for d in dead] == [2, 3]
    for d in dead:
        assert f"event id {taken} at {topics.embeddings}:0:{d.offset} is already" in d.reason
        assert f"another event, with other content, at {topics.embeddings}:0:0" in d.reason
    assert _entities(tmp_path) == {"a"}
    report = redrive(tmp_path, topics=topics, bootstrap=bootstrap)
    assert report.redriven == () and len(report.failing) == 2  # the id stays taken


def test_an_event_keyed_by_another_id_is_a_dead_letter_and_is_never_redriven(
    bootstrap, topics, tmp_path
):
    _registered(bootstrap, topics)
    deletion = encoded("EntityDeleted", envelope("emb", "v1", entity_id="e1"))
    send_raw(
        bootstrap,
        [
            (topics.embeddings, b"e1", _embedding("e1")),
            (topics.embeddings, b"someone-else", deletion),  # lands on another partition
        ],
    )
    catch_up(bootstrap, topics, tmp_path)

    (dead,) = list_dead_letters(tmp_path)
    assert dead.error == "MisroutedEvent"
    assert "the record key is not the event's entity_id" in dead.reason
    assert "got=b'someone-else'" in dead.reason
    report = redrive(tmp_path, topics=topics, bootstrap=bootstrap)
    assert (report.redriven, [i for i, _ in report.failing]) == ((), [dead.id])
    con = open_views(tmp_path)
    try:
        assert con.execute("SELECT count(*) FROM deletions").fetchone() == (0,)
    finally:
        con.close()
