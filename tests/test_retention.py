"""Retention and compaction on a real cluster: events deleted before they were
materialised stop the materialiser with the log-gap error (naming the partition and the
offsets lost), never a silent skip; ``ledger doctor`` reports the topics' retention and
cleanup policy (DESIGN decision 9).

The deleting tests take the ``apache_kafka`` fixture (DeleteRecords and retention are
Apache Kafka's; the embedded broker keeps everything in memory): they run in the Apache
Kafka part of CI and are skipped, with the reason, on the embedded broker.
"""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from consumers.catchup import catch_up
from ledger.cli import cli
from ledger.contract.events import Topics
from ledger.errors import LogGapError
from ledger.log.topics import TOPIC_CONFIG, admin_client
from ledger.store import Shard, open_views
from tests.helpers import produce_embeddings

pytestmark = pytest.mark.kafka


def _delete_before(bootstrap: str, topic: str, partition: int, offset: int) -> None:
    """DeleteRecords: the partition's log starts at ``offset`` afterwards."""
    admin = admin_client(bootstrap)
    try:
        admin.delete_records({TopicPartition(topic, partition): offset})
    finally:
        admin.close()


def _stored_offsets(home, topic: str, partition: int) -> list[int]:
    con = open_views(home)
    try:
        return [
            r[0]
            for r in con.execute(
                'SELECT "offset" FROM embeddings WHERE topic = ? AND "partition" = ? ORDER BY 1',
                [topic, partition],
            ).fetchall()
        ]
    finally:
        con.close()


def test_records_deleted_before_the_first_read_stop_the_materialiser(
    apache_kafka, make_topics, tmp_path
):
    topics = make_topics(2)
    produce_embeddings(apache_kafka.bootstrap, topics, 2000)
    _delete_before(apache_kafka.bootstrap, topics.embeddings, 0, 100)

    with pytest.raises(LogGapError) as raised:
        catch_up(apache_kafka.bootstrap, topics, tmp_path, timeout=60)
    assert (
        f"{topics.embeddings}[0]: the log starts at offset 100 but offsets 0..99 were never "
        "materialised (retention deleted them)"
    ) in str(raised.value)
    assert _stored_offsets(tmp_path, topics.embeddings, 0) == []  # nothing read past the gap


def test_records_deleted_past_the_stored_offset_stop_the_cli_in_one_line(
    apache_kafka, make_topics, tmp_path
):
    bootstrap = apache_kafka.bootstrap
    topics = make_topics(2)
    produce_embeddings(bootstrap, topics, 2000)
    catch_up(bootstrap, topics, tmp_path)
    stored = Shard(tmp_path, "main").stored_offsets()[(topics.embeddings, 1)]
    produce_embeddings(bootstrap, topics, 2000, start=2000)
    _delete_before(bootstrap, topics.embeddings, 1, stored + 50)

    result = CliRunner().invoke(
        cli,
        ["--bootstrap", bootstrap, "--home", str(tmp_path), "--topic-prefix", topics.prefix]
        + ["consume", "--no-group", "--until-caught-up"],
    )
    assert result.exit_code == 2
    assert result.output == (
        f"Error: {topics.embeddings}[1]: the log starts at offset {stored + 50} but offsets "
        f"{stored}..{stored + 49} were never materialised (retention deleted them); rebuild "
        "from a source that still holds them\n"
    )
    assert max(_stored_offsets(tmp_path, topics.embeddings, 1)) == stored - 1  # no skip


def _log_start(bootstrap: str, tp: TopicPartition) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return int(consumer.beginning_offsets([tp])[tp])
    finally:
        consumer.close()


def test_size_retention_set_on_the_topic_deletes_segments_and_doctor_warns(
    apache_kafka, make_topics, tmp_path
):
    bootstrap = apache_kafka.bootstrap
    topics = make_topics(1)
    # Someone bounds the embeddings topic: 1 MiB segments, at most 1 MiB kept.
    admin = admin_client(bootstrap)
    try:
        limits = {"segment.bytes": str(2**20), "retention.bytes": str(2**20)}
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topics.embeddings, limits)])
    finally:
        admin.close()
    produce_embeddings(bootstrap, topics, 4000, dimension=384)  # ~6 MB
    tp = TopicPartition(topics.embeddings, 0)
    deadline = time.monotonic() + 60
    while (start := _log_start(bootstrap, tp)) == 0:  # the broker checks every second
        assert time.monotonic() < deadline, "no segment was deleted"
        time.sleep(0.5)

    with pytest.raises(LogGapError) as raised:
        catch_up(bootstrap, topics, tmp_path, timeout=60)
    assert f"{topics.embeddings}[0]: the log starts at offset {start} but offsets 0.." in str(
        raised.value
    )
    result = CliRunner().invoke(
        cli,
        ["--bootstrap", bootstrap, "--home", str(tmp_path), "--topic-prefix", topics.prefix]
        + ["doctor", "--json"],
    )
    history = {f["check"]: f for f in json.loads(result.stdout)}["history"]
    assert history["status"] == "warn"
    assert f"{topics.embeddings} has retention.bytes={2**20}" in history["detail"]


def test_doctor_reports_retention_and_warns_about_a_compacted_embeddings_topic(bootstrap, tmp_path):
    import uuid

    topics = Topics(prefix=f"c{uuid.uuid4().hex[:10]}")
    compacted = {**TOPIC_CONFIG, "cleanup.policy": "compact"}
    admin = admin_client(bootstrap)
    try:  # created by hand, not by `ledger init`
        admin.create_topics(
            [
                NewTopic(topics.models, 1, 1, topic_configs=TOPIC_CONFIG),
                NewTopic(topics.embeddings, 2, 1, topic_configs=compacted),
                NewTopic(topics.decisions, 2, 1, topic_configs=TOPIC_CONFIG),
            ]
        )
    finally:
        admin.close()

    def history(prefix: str) -> dict:
        result = CliRunner().invoke(
            cli,
            ["--bootstrap", bootstrap, "--home", str(tmp_path), "--topic-prefix", prefix]
            + ["doctor", "--json"],
        )
        return {f["check"]: f for f in json.loads(result.stdout)}["history"]

    found = history(topics.prefix)
    assert found["status"] == "warn"
    assert (
        f"{topics.embeddings} is compacted (cleanup.policy=compact): it keeps one record per "
        "entity and drops the older versions' vectors a rollback rebuilds from"
    ) in found["detail"]
    assert "cleanup.policy=delete" in found["fix"]

    healthy = Topics(prefix=f"h{uuid.uuid4().hex[:10]}")
    CliRunner().invoke(cli, ["--bootstrap", bootstrap, "--topic-prefix", healthy.prefix, "init"])
    found = history(healthy.prefix)
    assert found["status"] == "ok"
    assert found["detail"] == (
        "every topic: cleanup.policy=delete, retention.bytes=-1, retention.ms=-1"
    )
