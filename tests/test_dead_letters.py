"""Poison messages land in dead letters with their reason; the good ones around them do not."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.catchup import catch_up
from consumers.deadletters import list_dead_letters, redrive, show_dead_letter
from ledger.contract.wire import MARKER
from ledger.log.producer import Producer, content_hash
from ledger.store import Batch, Shard, open_views
from tests.helpers import encoded, envelope, send_raw

pytestmark = pytest.mark.kafka


def _embedding(version: str, entity: str, vector: np.ndarray) -> bytes:
    vec = np.asarray(vector, dtype="<f4")
    return encoded(
        "EmbeddingWritten",
        envelope(
            "emb",
            version,
            entity_id=entity,
            content_sha256=content_hash(entity),
            dimension=int(vec.size),
            vector=vec.tobytes(),
        ),
    )


def _key_of(raw: bytes) -> bytes:
    """The entity or subject id of ``raw`` as a record key (``b"k"`` when it does not decode)."""
    from ledger.contract.schemas import default_store
    from ledger.contract.wire import decode
    from ledger.errors import LedgerError

    try:
        _, record = decode(default_store(), raw)
    except LedgerError:
        return b"k"
    return str(record.get("entity_id") or record.get("subject_id")).encode()


def _poison(topics) -> dict[str, tuple[str, bytes, str]]:
    """kind -> (topic, raw bytes, expected error class)."""
    good = _embedding("v1", "x", np.ones(8))
    decision = encoded(
        "DecisionRecorded",
        envelope(
            "clf", "c1", subject_id="s", label="maybe", score=0.5, input_sha256=content_hash("s")
        ),
    )
    return {
        "garbage": (topics.embeddings, b"not an event at all", "CorruptMessage"),
        "truncated": (topics.embeddings, good[:-20], "CorruptMessage"),
        "unknown schema": (topics.embeddings, MARKER + b"\x00" * 8 + good[10:], "UnknownSchema"),
        "wrong dimension": (topics.embeddings, _embedding("v1", "y", np.ones(4)), "ContractError"),
        "nan": (topics.embeddings, _embedding("v1", "z", [np.nan] + [1.0] * 7), "ContractError"),
        "unregistered": (
            topics.embeddings,
            _embedding("v9", "w", np.ones(8)),
            "UnknownModelVersion",
        ),
        "unknown label": (topics.decisions, decision, "ContractError"),
        "wrong topic": (
            topics.embeddings,
            encoded(
                "DecisionRecorded",
                envelope(
                    "clf",
                    "c1",
                    subject_id="s",
                    label="yes",
                    score=0.5,
                    input_sha256=content_hash("s"),
                ),
            ),
            "ContractError",
        ),
    }


def test_every_poison_kind_is_dead_lettered_and_the_good_events_are_stored(
    bootstrap, topics, tmp_path
):
    with Producer(bootstrap=bootstrap, name="svc", topics=topics) as p:
        p.register_model_version("emb", "v1", kind="embedding", dimension=8, metric="angular")
        p.register_model_version("clf", "c1", kind="classifier", labels=["yes", "no"])
    poison = _poison(topics)
    messages = []
    for i, (topic, raw, _) in enumerate(poison.values()):
        # all on partition 0: the good events share the poison's partition
        good = _embedding("v1", f"good{i}", np.ones(8))
        messages.append((topics.embeddings, f"good{i}".encode(), good, 0))
        messages.append((topic, _key_of(raw), raw, 0))
    messages.append((topics.embeddings, b"last", _embedding("v1", "last", np.ones(8)), 0))
    send_raw(bootstrap, messages)

    stats = catch_up(bootstrap, topics, tmp_path)

    assert stats.dead_letters == len(poison)
    dead = list_dead_letters(tmp_path)
    assert sorted(d.error for d in dead) == sorted(e for _, _, e in poison.values())
    assert {d.raw for d in dead} == {raw for _, raw, _ in poison.values()}
    reasons = " | ".join(d.reason for d in dead)
    for words in (
        "not an Avro single-object frame",
        "does not decode",
        "unknown schema fingerprint",
        "field=dimension",
        "NaN",
        "version v9 is not registered",
        "field=label",
        "travels on the decisions topic",
    ):
        assert words in reasons
    con = open_views(tmp_path)
    try:
        good = {r[0] for r in con.execute("SELECT entity_id FROM embeddings").fetchall()}
        status = con.execute('SELECT topic, "partition", "offset" FROM dead_letters').fetchall()
    finally:
        con.close()
    assert good == {f"good{i}" for i in range(len(poison))} | {"last"}
    assert len(status) == len(poison)
    shown, record = show_dead_letter(tmp_path, dead[0].id)
    assert shown.raw == dead[0].raw


def test_redrive_stores_what_now_passes_exactly_once(bootstrap, topics, tmp_path):
    with Producer(bootstrap=bootstrap, name="svc", topics=topics) as p:
        p.register_model_version("emb", "v1", kind="embedding", dimension=8, metric="angular")
    send_raw(
        bootstrap,
        [
            (topics.embeddings, b"w", _embedding("v9", "w", np.ones(8))),
            (topics.embeddings, b"g", b"garbage"),
        ],
    )
    catch_up(bootstrap, topics, tmp_path)
    assert redrive(tmp_path, topics=topics).redriven == ()  # v9 still unknown

    with Producer(bootstrap=bootstrap, name="svc", topics=topics) as p:
        p.register_model_version("emb", "v9", kind="embedding", dimension=8, metric="angular")
    first = redrive(tmp_path, topics=topics, bootstrap=bootstrap)
    second = redrive(tmp_path, topics=topics, bootstrap=bootstrap)

    assert len(first.redriven) == 1 and first.redriven[0].startswith(f"{topics.embeddings}:")
    assert [reason for _, reason in first.failing][0].startswith("not an Avro")
    assert second.redriven == ()
    con = open_views(tmp_path)
    try:
        assert con.execute(
            "SELECT entity_id, model_version FROM embeddings WHERE model_version = 'v9'"
        ).fetchall() == [("w", "v9")]
        assert con.execute(
            "SELECT count(*) FILTER (redriven_at IS NULL), count(*) FROM dead_letters"
        ).fetchone() == (1, 2)
    finally:
        con.close()
    assert [d.error for d in list_dead_letters(tmp_path)] == ["CorruptMessage"]


def test_unregistered_version_is_looked_up_in_the_log_before_dead_lettering(
    bootstrap, topics, tmp_path
):
    # The registration sits on the models topic, the event on another partition. Here the
    # shard's models offset is already past the registration (as when another shard of
    # the group holds that partition), so only reading the models topic finds it.
    with Producer(bootstrap=bootstrap, name="svc", topics=topics) as p:
        p.register_model_version("emb", "v2", kind="embedding", dimension=8, metric="angular")
        p.write_embeddings("emb", "v2", ["a"], np.ones((1, 8)), content_sha256s=[content_hash("a")])
    Shard(tmp_path, "main").write(Batch({}, {(topics.models, 0): 1}))
    stats = catch_up(bootstrap, topics, tmp_path)
    assert (stats.events, stats.dead_letters) == (1, 0)


def test_a_conflicting_registration_is_dead_lettered_and_the_first_contract_holds(
    bootstrap, topics, tmp_path
):
    with Producer(bootstrap=bootstrap, name="svc", topics=topics) as producer:
        producer.register_model_version("emb", "v1", kind="embedding", dimension=4, metric="dot")
    conflicting = encoded(
        "ModelVersionRegistered",
        envelope(
            "emb",
            "v1",
            kind="embedding",
            dimension=8,
            metric="dot",
            artifact_uri="",
            artifact_sha256=content_hash(""),
            labels=[],
        ),
    )
    send_raw(bootstrap, [(topics.models, b"emb", conflicting)])
    send_raw(bootstrap, [(topics.embeddings, b"a", _embedding("v1", "a", np.ones(4)))])

    catch_up(bootstrap, topics, tmp_path)

    (dead,) = list_dead_letters(tmp_path)
    assert dead.topic == topics.models and "already registered" in dead.reason
    con = open_views(tmp_path)
    try:
        assert con.execute("SELECT dimension FROM model_versions").fetchall() == [(4,)]
        assert con.execute("SELECT entity_id FROM embeddings").fetchall() == [("a",)]
    finally:
        con.close()
