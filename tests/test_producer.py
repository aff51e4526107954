"""The producer against the real broker: what is sent comes back equal; bad input sends nothing."""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from ledger import (
    BrokerError,
    ContractError,
    EmbeddedBroker,
    Producer,
    Topics,
    UnknownModelVersion,
    content_hash,
    load_registry,
)
from ledger.contract.schemas import default_store
from ledger.contract.wire import decode
from ledger.log.broker import free_port
from ledger.log.reading import read_to_end
from ledger.log.topics import init_topics

pytestmark = pytest.mark.kafka

DIM = 8
SHA = content_hash("content")


def _read(bootstrap: str, topics: Topics) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(topic, key, event type, record) of every message in the ledger's topics."""
    out = []
    for m in read_to_end(bootstrap, list(topics.all)):
        name, record = decode(default_store(), m.value)
        out.append((m.topic, m.key.decode(), name, record))
    return out


@pytest.fixture
def producer(bootstrap: str, topics: Topics) -> Iterator[Producer]:
    with Producer(bootstrap=bootstrap, name="test-svc", topics=topics) as p:
        p.register_model_version("emb", "v1", kind="embedding", dimension=DIM, metric="angular")
        p.register_model_version("clf", "v1", kind="classifier", labels=["ham", "spam"])
        yield p


def test_each_event_type_comes_back_from_the_broker_equal_to_what_was_sent(
    bootstrap: str, topics: Topics, producer: Producer
) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((3, DIM)).astype(np.float32)
    hashes = [content_hash(f"doc {i}") for i in range(3)]
    batch_ids = producer.write_embeddings(
        "emb", "v1", ["a", "b", "c"], vectors, content_sha256s=hashes
    )
    single_id = producer.write_embedding("emb", "v1", "d", vectors[0].tolist(), content_sha256=SHA)
    deleted_id = producer.delete_entity("emb", "v1", "a")
    decision_id = producer.record_decision(
        "clf", "v1", "user-1", "spam", score=0.75, input_sha256=SHA
    )
    deployment = producer.record_deployment(
        "emb", to_version="v1", from_version=None, reason="first", actor="me", summary={"n": 4}
    )
    producer.flush()

    got = _read(bootstrap, topics)
    by_id = {rec["event_id"]: (topic, key, name, rec) for topic, key, name, rec in got}
    assert len(by_id) == len(got) == 2 + 3 + 1 + 1 + 1 + 1
    envelope = {"producer": "test-svc", "model": "emb", "model_version": "v1"}

    registrations = [rec for _, _, name, rec in got if name == "ModelVersionRegistered"]
    assert [
        (r["model"], r["kind"], r["dimension"], r["metric"], r["labels"]) for r in registrations
    ] == [
        ("emb", "embedding", DIM, "angular", []),
        ("clf", "classifier", None, None, ["ham", "spam"]),
    ]
    for i, (event_id, entity) in enumerate(zip(batch_ids, "abc", strict=True)):
        topic, key, name, rec = by_id[event_id]
        assert (topic, key, name) == (topics.embeddings, entity, "EmbeddingWritten")
        assert {k: rec[k] for k in envelope} == envelope
        assert (rec["entity_id"], rec["content_sha256"], rec["dimension"]) == (
            entity,
            hashes[i],
            DIM,
        )
        assert rec["vector"] == vectors[i].astype("<f4").tobytes()
    assert by_id[single_id][3]["vector"] == vectors[0].astype("<f4").tobytes()
    assert by_id[deleted_id][:3] == (topics.embeddings, "a", "EntityDeleted")
    assert by_id[deleted_id][3]["entity_id"] == "a"
    topic, key, name, rec = by_id[decision_id]
    assert (topic, key, name) == (topics.decisions, "user-1", "DecisionRecorded")
    assert (rec["model"], rec["label"], rec["score"], rec["input_sha256"]) == (
        "clf",
        "spam",
        0.75,
        SHA,
    )
    topic, key, name, rec = by_id[deployment.event_id]
    assert (topic, key, name) == (topics.models, "emb", "DeploymentChanged")
    assert rec == deployment.to_record()
    assert rec["summary"] == {"n": "4"}


def test_registering_the_same_contract_again_is_idempotent_and_a_different_one_is_refused(
    bootstrap: str, topics: Topics, producer: Producer
) -> None:
    producer.register_model_version("emb", "v1", kind="embedding", dimension=DIM, metric="angular")
    with pytest.raises(ContractError, match="already registered with a different contract"):
        producer.register_model_version(
            "emb", "v1", kind="embedding", dimension=16, metric="angular"
        )
    # A second producer finds registrations in the log (the log is the registry).
    with Producer(bootstrap=bootstrap, name="other", topics=topics) as other:
        other.write_embedding("emb", "v1", "x", np.ones(DIM), content_sha256=SHA)
    names = [name for _, _, name, _ in _read(bootstrap, topics)]
    assert names.count("ModelVersionRegistered") == 3
    assert names.count("EmbeddingWritten") == 1


_GOOD = np.ones((2, DIM), dtype=np.float32)
_NAN = _GOOD.copy()
_NAN[1, 3] = np.nan
_INF = _GOOD.copy()
_INF[0, 0] = np.inf

BAD_CALLS: list[Any] = [
    pytest.param(
        lambda p: p.write_embedding("emb", "v1", "a", np.ones(DIM + 1), content_sha256=SHA),
        ContractError,
        "dimension",
        id="wrong-dimension",
    ),
    pytest.param(
        lambda p: p.write_embeddings("emb", "v1", ["a", "b"], _NAN, content_sha256s=[SHA, SHA]),
        ContractError,
        "vector",
        id="nan-in-second-row-of-batch",
    ),
    pytest.param(
        lambda p: p.write_embeddings("emb", "v1", ["a", "b"], _INF, content_sha256s=[SHA, SHA]),
        ContractError,
        "vector",
        id="inf",
    ),
    pytest.param(
        lambda p: p.write_embeddings("emb", "v1", ["a", ""], _GOOD, content_sha256s=[SHA, SHA]),
        ContractError,
        "entity_id",
        id="empty-entity-id-in-batch",
    ),
    pytest.param(
        lambda p: p.record_decision("clf", "v1", " ", "ham", score=0.5, input_sha256=SHA),
        ContractError,
        "subject_id",
        id="blank-subject-id",
    ),
    pytest.param(
        lambda p: p.delete_entity("emb", "v1", ""),
        ContractError,
        "entity_id",
        id="empty-id-on-delete",
    ),
    pytest.param(
        lambda p: p.write_embedding("emb", "v9", "a", np.ones(DIM), content_sha256=SHA),
        UnknownModelVersion,
        "model_version",
        id="unknown-model-version",
    ),
    pytest.param(
        lambda p: p.record_decision("clf", "v2", "u", "ham", score=0.5, input_sha256=SHA),
        UnknownModelVersion,
        "model_version",
        id="unknown-classifier-version",
    ),
    pytest.param(
        lambda p: p.record_decision("clf", "v1", "u", "maybe", score=0.5, input_sha256=SHA),
        ContractError,
        "label",
        id="label-not-in-labels",
    ),
    pytest.param(
        lambda p: p.record_decision("clf", "v1", "u", "ham", score=float("nan"), input_sha256=SHA),
        ContractError,
        "score",
        id="nan-score",
    ),
    pytest.param(
        lambda p: p.write_embedding("emb", "v1", "a", ["x"] * DIM, content_sha256=SHA),
        ContractError,
        "vector",
        id="non-numeric-vector",
    ),
    pytest.param(
        lambda p: p.write_embedding("emb", "v1", "a", [[1.0] * DIM, [1.0]], content_sha256=SHA),
        ContractError,
        "vector",
        id="ragged-vector",
    ),
    pytest.param(
        lambda p: p.write_embedding("emb", "v1", "a", np.ones(DIM, bool), content_sha256=SHA),
        ContractError,
        "vector",
        id="bool-vector",
    ),
    pytest.param(
        lambda p: p.write_embedding("clf", "v1", "a", np.ones(DIM), content_sha256=SHA),
        ContractError,
        "kind",
        id="embedding-for-a-classifier",
    ),
    pytest.param(
        lambda p: p.write_embedding("emb", "v1", "a", np.ones(DIM), content_sha256="abc"),
        ContractError,
        "content_sha256",
        id="bad-content-hash",
    ),
    pytest.param(
        lambda p: p.write_embeddings(
            "emb", "v1", ["a", "b"], _GOOD, content_sha256s=[SHA, SHA.upper()]
        ),
        ContractError,
        "content_sha256",
        id="uppercase-hash-in-batch",
    ),
    pytest.param(
        lambda p: p.write_embeddings("emb", "v1", ["a", 7], _GOOD, content_sha256s=[SHA, SHA]),
        ContractError,
        "entity_id",
        id="non-string-entity-id-in-batch",
    ),
    pytest.param(
        lambda p: p.write_embeddings("emb", "v1", ["a"], _GOOD, content_sha256s=[SHA]),
        ContractError,
        "entity_ids",
        id="count-mismatch",
    ),
    # Found by an adversarial run: each of these escaped as a non-ledger error, or was sent.
    pytest.param(
        lambda p: p.write_embedding("emb", "v1", "a\ud800", np.ones(DIM), content_sha256=SHA),
        ContractError,
        "entity_id",
        id="lone-surrogate-in-id",
    ),
    pytest.param(
        lambda p: p.write_embeddings(
            "emb", "v1", ["a", "b\udcff"], _GOOD, content_sha256s=[SHA, SHA]
        ),
        ContractError,
        "entity_id",
        id="lone-surrogate-in-batch-id",
    ),
    pytest.param(
        lambda p: p.record_decision("clf", "v1", "\ud800", "ham", score=0.5, input_sha256=SHA),
        ContractError,
        "subject_id",
        id="lone-surrogate-in-subject-id",
    ),
    pytest.param(
        lambda p: p.write_embeddings("emb", "v1", None, _GOOD, content_sha256s=[SHA, SHA]),
        ContractError,
        "entity_ids",
        id="entity-ids-none",
    ),
    pytest.param(
        lambda p: p.write_embeddings(
            "emb", "v1", (e for e in "ab"), _GOOD, content_sha256s=[SHA, SHA]
        ),
        ContractError,
        "entity_ids",
        id="entity-ids-generator",
    ),
    pytest.param(
        lambda p: p.write_embeddings("emb", "v1", "ab", _GOOD, content_sha256s=[SHA, SHA]),
        ContractError,
        "entity_ids",
        id="entity-ids-plain-string",
    ),
    pytest.param(
        lambda p: p.register_model_version(
            "emb", "v2", kind="embedding", dimension=2**31, metric="angular"
        ),
        ContractError,
        "dimension",
        id="dimension-beyond-avro-int",
    ),
    pytest.param(
        lambda p: p.register_model_version("clf", "v2", kind="classifier", labels="ab"),
        ContractError,
        "labels",
        id="labels-plain-string",
    ),
    pytest.param(
        lambda p: p.write_embedding("emb", "v1", "a", _GOOD, content_sha256=SHA),
        ContractError,
        "vector",
        id="two-rows-to-write-embedding",
    ),
    pytest.param(
        lambda p: p.write_embedding(
            "emb", "v1", "a", np.ones(DIM), content_sha256=SHA, shadow="no"
        ),
        ContractError,
        "shadow",
        id="shadow-not-a-bool",
    ),
    pytest.param(
        lambda p: p.record_decision(
            "clf", "v1", "u", "ham", score=0.5, input_sha256=SHA, shadow="no"
        ),
        ContractError,
        "shadow",
        id="decision-shadow-not-a-bool",
    ),
    pytest.param(
        lambda p: p.write_embedding(
            "emb", "v1", "x" * 20_000_000, np.ones(DIM), content_sha256=SHA
        ),
        ContractError,
        "event",
        id="id-too-large-for-a-message",
    ),
    pytest.param(
        lambda p: p.write_embeddings(
            "emb", "v1", ["a", "x" * 20_000_000], _GOOD, content_sha256s=[SHA, SHA]
        ),
        ContractError,
        "event",
        id="batch-with-one-id-too-large",
    ),
]


@pytest.mark.parametrize(("call", "error", "field"), BAD_CALLS)
def test_bad_input_raises_its_error_and_sends_nothing(
    bootstrap: str,
    topics: Topics,
    producer: Producer,
    call: Callable[[Producer], object],
    error: type[ContractError],
    field: str,
) -> None:
    with pytest.raises(error) as info:
        call(producer)
    assert info.value.field == field
    assert info.value.hint, "a refusal says what to do"
    assert "\n" not in str(info.value)
    producer.flush()

    names = [name for _, _, name, _ in _read(bootstrap, topics)]
    assert names == ["ModelVersionRegistered", "ModelVersionRegistered"]


def test_event_ids_in_a_forked_child_are_not_the_parents() -> None:
    import os

    from ledger.contract.events import new_event_id

    new_event_id()  # the pool now holds ids the parent will hand out next
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its next ids and leave at once
        os.write(write, "\n".join(new_event_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = set(os.read(read, 4096).decode().split("\n"))
    os.close(read)
    parent = {new_event_id() for _ in range(5)}
    assert len(child) == 5 and not child & parent


def test_a_conflicting_registration_is_refused_and_the_first_contract_stays(bootstrap, topics):
    from ledger import ContractError, Registry
    from ledger.contract.rules import ModelVersion

    registry = Registry([ModelVersion("emb", "v1", "embedding", 4, "angular", ())])
    registry.add(ModelVersion("emb", "v1", "embedding", 4, "angular", ()))  # same: a no-op
    with pytest.raises(ContractError, match="already registered"):
        registry.add(ModelVersion("emb", "v1", "embedding", 8, "angular", ()))
    assert registry.get("emb", "v1").dimension == 4


def test_garbage_on_the_models_topic_does_not_stop_producers(bootstrap, topics):
    from kafka import KafkaProducer

    raw = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    raw.send(topics.models, key=b"emb", value=b"not an event")
    raw.send(topics.models, key=b"emb", value=None)
    raw.flush()
    raw.close()
    with Producer(bootstrap=bootstrap, name="svc", topics=topics) as producer:
        producer.register_model_version("emb", "v1", kind="embedding", dimension=4, metric="dot")
        producer.write_embedding("emb", "v1", "a", np.ones(4), content_sha256=content_hash("a"))
    assert load_registry(bootstrap, topics).get("emb", "v1").dimension == 4


def test_an_empty_batch_sends_nothing_and_returns_no_ids(bootstrap, topics):
    with Producer(bootstrap=bootstrap, name="svc", topics=topics) as producer:
        producer.register_model_version("emb", "v1", kind="embedding", dimension=4, metric="dot")
        assert (
            producer.write_embeddings("emb", "v1", [], np.empty((0, 4)), content_sha256s=[]) == []
        )
    assert list(read_to_end(bootstrap, [topics.embeddings])) == []


def test_a_models_topic_with_several_partitions_is_refused(bootstrap):
    import uuid

    from kafka.admin import NewTopic

    from ledger import BrokerError
    from ledger.log.topics import admin_client

    topics = Topics(f"t{uuid.uuid4().hex[:12]}")
    admin = admin_client(bootstrap)
    admin.create_topics(
        [
            NewTopic(topics.models, 3, 1),
            NewTopic(topics.embeddings, 1, 1),
            NewTopic(topics.decisions, 1, 1),
        ]
    )
    admin.close()
    with Producer(bootstrap=bootstrap, name="svc", topics=topics) as producer:
        with pytest.raises(BrokerError, match="has 3 partitions; the ledger needs exactly 1"):
            producer.register_model_version(
                "emb", "v1", kind="embedding", dimension=4, metric="dot"
            )


def test_a_numpy_float_score_is_recorded_as_that_float(bootstrap, topics, producer):
    producer.record_decision("clf", "v1", "u", "spam", score=np.float32(0.5), input_sha256=SHA)
    producer.flush()
    decisions = [rec for _, _, name, rec in _read(bootstrap, topics) if name == "DecisionRecorded"]
    assert [(d["subject_id"], d["label"], d["score"]) for d in decisions] == [("u", "spam", 0.5)]


# -- a broker that is not there, or goes away ---------------------------------------------

UNREACHABLE_HINT = "(start one, or check the bootstrap address / LEDGER_BOOTSTRAP)"


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, so the test can stop it."""
    broker = EmbeddedBroker()
    broker.start()
    yield broker
    broker.stop()


def _sender_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "kafka" in t.name.lower() and t.is_alive()]


def test_a_producer_for_a_closed_port_fails_within_its_connect_timeout() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(BrokerError) as info:
        Producer(bootstrap=bootstrap, connect_timeout=2)
    assert time.monotonic() - started < 10
    assert str(info.value) == f"cannot reach a Kafka broker at {bootstrap} {UNREACHABLE_HINT}"


def test_reading_the_registry_with_the_broker_down_is_a_broker_error(own_broker) -> None:
    topics = Topics(f"t{uuid.uuid4().hex[:12]}")
    init_topics(own_broker.bootstrap, topics)
    producer = Producer(
        bootstrap=own_broker.bootstrap, topics=topics, connect_timeout=2, flush_timeout=2
    )
    producer.register_model_version("emb", "v1", kind="embedding", dimension=4, metric="dot")
    own_broker.stop()

    started = time.monotonic()
    with pytest.raises(BrokerError) as info:  # v2 is not known yet: the log is read again
        producer.write_embedding("emb", "v2", "a", np.ones(4), content_sha256=SHA)
    assert time.monotonic() - started < 10
    assert str(info.value) == (
        f"cannot reach a Kafka broker at {own_broker.bootstrap} {UNREACHABLE_HINT}"
    )
    producer.close()  # nothing was sent: closes at once


def test_flush_with_the_broker_down_says_how_many_events_were_not_acknowledged(
    own_broker,
) -> None:
    topics = Topics(f"t{uuid.uuid4().hex[:12]}")
    init_topics(own_broker.bootstrap, topics)
    before = _sender_threads()
    producer = Producer(
        bootstrap=own_broker.bootstrap, topics=topics, connect_timeout=2, flush_timeout=2
    )
    producer.register_model_version("emb", "v1", kind="embedding", dimension=4, metric="dot")
    own_broker.stop()
    for i in range(30):
        producer.write_embedding("emb", "v1", f"e{i}", np.ones(4), content_sha256=SHA)

    started = time.monotonic()
    with pytest.raises(BrokerError) as info:
        producer.flush()
    assert time.monotonic() - started < 10
    assert str(info.value) == (
        f"30 events were not acknowledged by {own_broker.bootstrap} within 2s; they may be "
        "missing from the log (check that the broker is up, or allow more time with "
        "flush_timeout; then write them again)"
    )

    started = time.monotonic()
    with pytest.raises(BrokerError, match="^30 events were not acknowledged"):
        producer.close()
    assert time.monotonic() - started < 10
    assert _sender_threads() == before  # the client's thread is gone, not left retrying
    gc.collect()  # those sockets are collected here, under this test's filter
