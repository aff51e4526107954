"""What only a real Apache Kafka can show: a durable log across broker restarts, the
idempotent producer, true end offsets, and consumer-group handover on Kafka 4.

Each test takes the ``apache_kafka`` fixture, so it runs in the Apache Kafka part of CI
(``LEDGER_TEST_BROKER=kafka``) and is skipped, with the reason, on the embedded broker.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer
from scenario import CLASSIFIER, EMBEDDER, play_incident
from test_processes import _Assignments, _consume, _produce, _stop, _wait_split

from consumers.catchup import catch_up
from consumers.lag import true_ends, wait_caught_up
from ledger.cli import cli
from ledger.contract.events import Topics
from ledger.contract.schemas import default_store
from ledger.contract.wire import decode
from ledger.errors import BrokerError
from ledger.log.broker import EmbeddedBroker
from ledger.log.producer import Producer
from ledger.log.reading import read_to_end
from ledger.log.topics import init_topics, partitions_of
from ledger.ops.rollback import rollback
from ledger.store import open_views
from ledger.store.positions import peek_positions

pytestmark = pytest.mark.kafka

MODELS = [EMBEDDER, CLASSIFIER]


class _Load:
    """A producer thread writing embeddings (``_produce``) until stopped; keeps what each
    write returned (event id -> entity, vector) and the error that ended it, if any."""

    def __init__(self, bootstrap: str, topics: Topics, *, chunk: int = 500, pause: float = 0.05):
        self.expected: dict[str, tuple[str, bytes]] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(bootstrap, topics, chunk, pause), daemon=True
        )
        self._thread.start()

    def _run(self, bootstrap: str, topics: Topics, chunk: int, pause: float) -> None:
        try:
            _produce(
                bootstrap,
                topics,
                0,
                2_000_000,
                chunk=chunk,
                pause=pause,
                out=self.expected,
                stop=self._stop,
            )
        except BaseException as exc:  # reported by stop(): the test fails on it
            self.error = exc

    def wait_for(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.expected) < n:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, f"{len(self.expected)} of {n} events written"
            time.sleep(0.05)

    def stop(self) -> dict[str, tuple[str, bytes]]:
        """Stop writing; what was written (raises what ended the thread, if anything)."""
        self._stop.set()
        self._thread.join(timeout=180)
        assert not self._thread.is_alive()
        assert self.error is None, repr(self.error)
        return self.expected


def _stored(home: Path) -> int:
    # Read-only, as a reader: this process must not open the materialiser's file for writing.
    path = home / "shards" / "main.duckdb"
    found = peek_positions(path, timeout=10) if path.exists() else None
    return sum(p.next_offset for p in (found or {}).values())


def _exactly_once(bootstrap: str, topics: Topics, home: Path, expected: dict) -> None:
    """The views hold every expected event once, with its content, and every offset of
    every embeddings partition once."""
    con = open_views(home)
    try:
        rows = con.execute("SELECT event_id, entity_id, vector FROM embeddings").fetchall()
        offsets = dict(
            con.execute(
                'SELECT "partition", list("offset" ORDER BY "offset") FROM embeddings GROUP BY ALL'
            ).fetchall()
        )
    finally:
        con.close()
    assert len(rows) == len({r[0] for r in rows}) == len(expected)
    for eid, ent, vec in rows:
        assert expected[eid] == (ent, np.asarray(vec, dtype="<f4").tobytes())
    ends = true_ends(bootstrap, (topics.embeddings,))
    for (_, partition), end in ends.items():
        assert offsets.get(partition, []) == list(range(end))


def _artifact_files(home: Path, artifact: str) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in (home / artifact).iterdir() if p.name != "manifest.json"
    }


def test_broker_restart_mid_stream_loses_and_duplicates_nothing(
    apache_kafka, make_topics, tmp_path
):
    bootstrap = apache_kafka.bootstrap
    # 1. A log that a rollback is built from before the restart, and again after it.
    frozen = make_topics(4)
    with Producer(bootstrap=bootstrap, name="search-api", topics=frozen) as producer:
        play_incident(producer)
    before = rollback(bootstrap, frozen, tmp_path / "before", MODELS, to="v1", dry_run=False)

    # 2. Producers and `ledger consume` running while the broker stops and starts again,
    # the materialiser behind (a backlog written before it started): its position and the
    # high watermark it last saw stand still while the broker is away.
    stream, home = make_topics(4), tmp_path / "stream"
    load = _Load(bootstrap, stream, chunk=2000, pause=0.0)
    stderr = (tmp_path / "consume.err").open("wb")  # a pipe could fill while the broker is away
    consume = None
    try:
        load.wait_for(50_000)
        # In a consumer group (the default): the restart also moves the group coordinator.
        consume = _consume(bootstrap, stream, home, "--verbose", stderr=stderr)
        deadline = time.monotonic() + 60
        while _stored(home) == 0:  # the materialiser is storing when the broker goes
            assert time.monotonic() < deadline and consume.poll() is None
            time.sleep(0.05)
        assert _stored(home) < len(load.expected)
        apache_kafka.restart()
        at_restart = len(load.expected)
        load.wait_for(at_restart + 5000)  # written after the restart
        expected = load.stop()
        try:
            wait_caught_up(bootstrap, stream, home, timeout=120)
        except BrokerError as exc:  # say what the materialiser said
            stderr.flush()
            status = consume.poll()
            tail = (tmp_path / "consume.err").read_text()[-4000:]
            raise AssertionError(f"{exc}; ledger consume exit {status}:\n{tail}") from exc
        assert consume.poll() is None  # it rode the restart out
    finally:
        load.stop()
        if consume is not None:
            consume.send_signal(signal.SIGTERM)
            consume.wait(30)
        stderr.close()
    assert consume.returncode == 0, (tmp_path / "consume.err").read_text()
    assert apache_kafka.starts == 2
    _exactly_once(bootstrap, stream, home, expected)

    # 3. The same rollback from the restarted broker's log, into a fresh home.
    after = rollback(bootstrap, frozen, tmp_path / "after", MODELS, to="v1", dry_run=False)
    for model in MODELS:
        files = _artifact_files(tmp_path / "before", before.artifacts[model])
        assert files and files == _artifact_files(tmp_path / "after", after.artifacts[model])


def _event_ids(bootstrap: str, topic: str) -> list[str]:
    store = default_store()
    return [decode(store, m.value)[1]["event_id"] for m in read_to_end(bootstrap, [topic])]


def test_idempotent_producer_writes_no_duplicates_across_broker_crashes(apache_kafka, make_topics):
    topics = make_topics(4)
    load = _Load(apache_kafka.bootstrap, topics, chunk=2000, pause=0.0)
    try:
        # Four crashes mid-send: with enable_idempotence off, retried batches whose
        # acknowledgement was lost gave 1,187 duplicates in 58,000 events (measured).
        for _ in range(4):
            load.wait_for(len(load.expected) + 10_000)
            apache_kafka.kill()  # batches in flight: written, acknowledged or neither
            apache_kafka.start()
        load.wait_for(len(load.expected) + 10_000)
    finally:
        expected = load.stop()
    ids = _event_ids(apache_kafka.bootstrap, topics.embeddings)
    assert len(ids) == len(set(ids))  # no event twice in the log ...
    assert set(ids) == set(expected)  # ... and every acknowledged write in it


def test_end_offsets_agree_with_the_high_watermark_and_catch_up_agrees_on_both_brokers(
    apache_kafka, tmp_path
):
    topics = Topics(prefix=f"agree{uuid.uuid4().hex[:8]}")  # the same names on both brokers
    homes = {}
    with EmbeddedBroker() as tansu:
        for name, bootstrap in (("kafka", apache_kafka.bootstrap), ("tansu", tansu)):
            init_topics(bootstrap, topics, partitions=4)
            for start in range(0, 6000, 1500):  # several batches per partition
                _produce(bootstrap, topics, start, 1500, chunk=1500)
            homes[name] = tmp_path / name
            catch_up(bootstrap, topics, homes[name])
        consumer = KafkaConsumer(bootstrap_servers=apache_kafka.bootstrap)
        try:
            listed = consumer.end_offsets(partitions_of(consumer, topics.all))
        finally:
            consumer.close()
        fetched = true_ends(apache_kafka.bootstrap, topics.all)
    assert {(tp.topic, tp.partition): o for tp, o in listed.items()} == fetched
    assert sum(o for (t, _), o in fetched.items() if t == topics.embeddings) == 6000
    views = {}
    for name, home in homes.items():
        con = open_views(home)
        try:
            views[name] = (
                con.execute(
                    'SELECT "partition", "offset", entity_id, vector FROM embeddings ORDER BY ALL'
                ).fetchall(),
                con.execute("SELECT * FROM offsets ORDER BY ALL").fetchall(),
            )
        finally:
            con.close()
    assert len(views["kafka"][0]) == 6000
    assert views["kafka"] == views["tansu"]


def test_a_killed_group_member_is_taken_over_and_nothing_is_lost(
    apache_kafka, make_topics, tmp_path
):
    bootstrap = apache_kafka.bootstrap
    topics = make_topics(4)
    group = ("--group", f"{topics.prefix}.g", "-v")
    a = _consume(bootstrap, topics, tmp_path, *group, "--shard", "a")
    b = _consume(bootstrap, topics, tmp_path, *group, "--shard", "b")
    logs = [_Assignments(a), _Assignments(b)]
    load = _Load(bootstrap, topics)
    try:
        _wait_split(topics, logs, timeout=60)
        load.wait_for(4000)
        code, _ = _stop(b, signal.SIGKILL, log=logs[1])  # no leave-group: the session ends
        assert code == -signal.SIGKILL
        load.wait_for(len(load.expected) + 4000)
        expected = load.stop()
        wait_caught_up(bootstrap, topics, tmp_path, timeout=120)
    finally:
        load.stop()
        code, err = _stop(a, log=logs[0])
        if b.poll() is None:
            _stop(b, log=logs[1])
    assert code == 0, err
    assert {p for p in logs[0].latest or () if p.startswith(topics.embeddings)} == {
        f"{topics.embeddings}:{p}" for p in range(4)
    }
    _exactly_once(bootstrap, topics, tmp_path, expected)


def test_init_refuses_more_replicas_than_brokers_in_one_line(apache_kafka):
    prefix = f"rf{uuid.uuid4().hex[:8]}"
    result = CliRunner().invoke(
        cli,
        ["--bootstrap", apache_kafka.bootstrap, "--topic-prefix", prefix]
        + ["init", "--replication-factor", "3"],
    )
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: cannot create {prefix}.models, ")
    assert "The target replication factor of 3 cannot be reached because only 1 broker(s)" in (
        result.output
    )
    assert result.output.count("\n") == 1
