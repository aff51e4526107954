"""The transport seam's contract, run against both clients (kafka-python and librdkafka).

Every test takes ``client`` and sets ``LEDGER_KAFKA_CLIENT`` for itself, so the default
test run proves both implementations of :mod:`ledger.log.clients` behave alike on the
run's broker: the same records and attributes, the high watermark as the true end, pause
and seek, a group's assignment inside ``poll`` and its committed offsets, the same topic
ids (log marks written by one client are read by the other), and the producer's waits.
"""

from __future__ import annotations

import time
import uuid

import pytest

from consumers.catchup import catch_up
from ledger.errors import UsageError
from ledger.log import clients
from ledger.log.clients import (
    CLIENTS,
    ConsumerSettings,
    MessageTooLarge,
    Partition,
    client_in_use,
    open_consumer,
    open_producer,
)
from ledger.log.reading import read_to_end
from ledger.log.timeouts import BrokerTimeouts
from ledger.store import open_views
from tests.helpers import produce_embeddings

pytestmark = pytest.mark.kafka

FAST = BrokerTimeouts(connect=3.0, flush=5.0)


@pytest.fixture(params=CLIENTS)
def client(request, monkeypatch) -> str:
    monkeypatch.setenv(clients.ENV_CLIENT, request.param)
    assert client_in_use().name == request.param
    return str(request.param)


def _produce(bootstrap: str, topic: str, n: int) -> None:
    producer = open_producer(bootstrap, FAST)
    try:
        producer.send_many(topic, [b"k%d" % i for i in range(n)], [b"v%d" % i for i in range(n)])
        deadline = time.monotonic() + 10
        while producer.pending() and time.monotonic() < deadline:
            producer.wait(0.25)
        assert (producer.pending(), producer.take_failures()) == (0, [])
    finally:
        producer.close(graceful=True)


def _read(consumer, wanted: int, timeout: float = 15.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < wanted and time.monotonic() < deadline:
        for records in consumer.poll(0.2, 500).values():
            got.extend(records)
    return got


def test_both_clients_read_the_same_records_with_the_same_attributes(
    bootstrap, make_topics, client
):
    topics = make_topics(3)
    _produce(bootstrap, topics.embeddings, 300)
    records = list(read_to_end(bootstrap, [topics.embeddings]))
    assert sorted(r.value for r in records) == sorted(b"v%d" % i for i in range(300))
    assert {r.key for r in records} == {b"k%d" % i for i in range(300)}
    assert {r.topic for r in records} == {topics.embeddings}
    for p in range(3):
        offsets = [r.offset for r in records if r.partition == p]
        assert offsets == list(range(len(offsets)))  # each partition in offset order, from 0


def test_the_high_watermark_is_the_true_end_and_list_offsets_at_most_that(
    bootstrap, make_topics, client
):
    topics = make_topics(1)
    _produce(bootstrap, topics.embeddings, 250)
    consumer = open_consumer(bootstrap, ConsumerSettings(fetch_wait_ms=20))
    try:
        tp = Partition(topics.embeddings, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        assert consumer.highwater(tp) is None  # no fetch answered yet
        assert len(_read(consumer, 250)) == 250
        assert consumer.highwater(tp) == consumer.position(tp) == 250
        assert consumer.end_offsets([tp])[tp] <= 250  # under-reports on Tansu
        assert consumer.beginning_offsets([tp]) == {tp: 0}
    finally:
        consumer.close()


def test_a_paused_partition_is_not_read_and_reads_from_where_it_was_sought(
    bootstrap, make_topics, client
):
    topics = make_topics(2)
    _produce(bootstrap, topics.embeddings, 200)
    consumer = open_consumer(bootstrap, ConsumerSettings(strict=True, fetch_wait_ms=20))
    try:
        first, second = Partition(topics.embeddings, 0), Partition(topics.embeddings, 1)
        consumer.assign([first, second])
        consumer.pause([first])
        consumer.seek(first, 7)
        consumer.seek(second, 3)
        ends = consumer.end_offsets([first, second])
        got = _read(consumer, 1, timeout=5)
        time.sleep(0.5)
        got += _read(consumer, 10**6, timeout=1)
        assert {r.partition for r in got} == {1}
        assert got[0].offset == 3 and consumer.position(second) == consumer.highwater(second)
        consumer.resume([first])
        resumed = [r for r in _read(consumer, 1) if r.partition == 0]
        assert resumed[0].offset == 7 and ends[first] >= 1
    finally:
        consumer.close()


def _join(consumer, topic: str) -> list[Partition]:
    """Subscribe, pausing what the group assigns inside poll (as the materialiser does,
    so nothing is read before it is positioned); the partitions assigned."""
    assigned: list[list[Partition]] = []

    def paused(tps: list[Partition]) -> None:  # no blocking call here: kafka-python forbids it
        consumer.pause(tps)
        assigned.append(tps)

    consumer.subscribe([topic], on_assigned=paused, on_revoked=print)
    deadline = time.monotonic() + 30
    # On Apache Kafka a group that joins before the new topic's metadata reached the
    # coordinator is first given nothing, then rebalanced: wait for the assignment that has it.
    while not (assigned and assigned[-1]) and time.monotonic() < deadline:
        assert consumer.poll(0.2, 500) == {}  # paused: nothing is read
    return sorted(assigned[-1]) if assigned else []


def test_a_group_assigns_inside_poll_and_a_new_member_resumes_at_the_commit(
    bootstrap, make_topics, client
):
    topics = make_topics(2)
    _produce(bootstrap, topics.embeddings, 100)
    settings = ConsumerSettings(group=f"g{uuid.uuid4().hex[:8]}", strict=True, fetch_wait_ms=20)
    both = [Partition(topics.embeddings, p) for p in (0, 1)]
    consumer = open_consumer(bootstrap, settings)
    try:
        assert _join(consumer, topics.embeddings) == both
        assert consumer.assignment() == set(both)
        # strict: no committed offset yet, so every partition starts at 0
        assert {consumer.position(tp) for tp in both} == {0}
        consumer.commit({both[0]: 5, both[1]: 9})
        consumer.poll(0.5, 1)  # lets the asynchronous commit go out
    finally:
        consumer.close()
    again = open_consumer(bootstrap, settings)
    try:
        assert _join(again, topics.embeddings) == both
        assert {tp: again.position(tp) for tp in both} == {both[0]: 5, both[1]: 9}
        again.resume(both)
        got = _read(again, 100 - 5 - 9)
        assert len(got) == 86
        assert {p: min(r.offset for r in got if r.partition == p) for p in (0, 1)} == {0: 5, 1: 9}
    finally:
        again.close()


def test_both_clients_report_the_same_topic_id(bootstrap, make_topics, monkeypatch):
    topics = make_topics(1)
    ids = {}
    for name in CLIENTS:
        monkeypatch.setenv(clients.ENV_CLIENT, name)
        consumer = open_consumer(bootstrap)
        try:
            assert consumer.partitions_for_topic(topics.embeddings) == {0}
            assert consumer.partitions_for_topic(f"{topics.prefix}.nothing") is None
            ids[name] = consumer.topic_id(topics.embeddings)
        finally:
            consumer.close()
    assert len(set(ids.values())) == 1, ids  # None on both where the broker has no ids


def test_a_shard_written_with_one_client_resumes_with_the_other(
    bootstrap, topics, tmp_path, monkeypatch
):
    # The log marks (offset, record hash, topic id) one client stored must match what the
    # other reads again, or every switch of client would stop with a false LogGapError.
    monkeypatch.setenv(clients.ENV_CLIENT, "kafka-python")
    produce_embeddings(bootstrap, topics, 50)
    first = catch_up(bootstrap, topics, tmp_path, timeout=60)
    monkeypatch.setenv(clients.ENV_CLIENT, "librdkafka")
    produce_embeddings(bootstrap, topics, 30, start=50, version="v2")
    second = catch_up(bootstrap, topics, tmp_path, timeout=60)
    monkeypatch.setenv(clients.ENV_CLIENT, "kafka-python")
    produce_embeddings(bootstrap, topics, 20, start=80, version="v3")
    third = catch_up(bootstrap, topics, tmp_path, timeout=60)
    assert (first.events, second.events, third.events) == (51, 31, 21)
    with open_views(tmp_path) as con:
        assert con.execute("SELECT count(DISTINCT entity_id) FROM embeddings").fetchone() == (100,)


def test_a_record_over_the_size_limit_is_refused_by_the_client(bootstrap, topics, client):
    producer = open_producer(bootstrap, FAST, max_request_size=2048)
    try:
        assert producer.max_event_bytes == 2048
        with pytest.raises(MessageTooLarge):
            producer.send(topics.embeddings, b"k", b"x" * 4096)
    finally:
        producer.close(graceful=False)


def test_an_unknown_client_name_is_refused_with_the_names_to_use(monkeypatch):
    monkeypatch.setenv(clients.ENV_CLIENT, "kcat")
    with pytest.raises(UsageError, match="kafka-python, librdkafka"):
        open_consumer("127.0.0.1:1")


def test_librdkafka_asked_for_and_not_installed_says_what_to_install(monkeypatch):
    monkeypatch.setenv(clients.ENV_CLIENT, "librdkafka")
    monkeypatch.setattr(clients, "_librdkafka_installed", lambda: False)
    with pytest.raises(UsageError, match=r"pip install 'lineage-ledger\[fast\]'"):
        client_in_use()
    monkeypatch.delenv(clients.ENV_CLIENT)
    assert client_in_use().name == "kafka-python"  # not asked for: the design's client
