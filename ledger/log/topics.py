"""The ledger's topics: creating them, their partitions, and the admin client."""

from __future__ import annotations

import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ledger.contract.events import Topics
from ledger.errors import BrokerError

#: Unlimited retention: the log is the history (DESIGN decision 9).
TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}


def admin_client(bootstrap: str) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach a Kafka broker at {bootstrap}: {exc}") from exc


def init_topics(bootstrap: str, topics: Topics, *, partitions: int = 4) -> list[str]:
    """Create the ledger's topics (idempotent); returns the names that were created.

    ``models`` gets one partition so registrations and deployments have one order.
    """
    admin = admin_client(bootstrap)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(topics.models, 1, 1, topic_configs=TOPIC_CONFIG),
            NewTopic(topics.embeddings, partitions, 1, topic_configs=TOPIC_CONFIG),
            NewTopic(topics.decisions, partitions, 1, topic_configs=TOPIC_CONFIG),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process: the state we want
        return [t.name for t in missing]
    finally:
        admin.close()


def partitions_of(consumer: KafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """All partitions of ``topics``.

    Raises BrokerError for a topic the broker does not have (a mistyped topic prefix, or
    ``ledger init`` not run): kafka-python answers an unknown topic with an empty set, which
    would otherwise read as "nothing to do".
    """
    out: list[TopicPartition] = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)  # a metadata request when not cached
        deadline = time.monotonic() + 2  # a topic just created may take a moment to show
        while not parts and time.monotonic() < deadline:
            time.sleep(0.1)
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise BrokerError(
                f"topic {topic} does not exist on the broker: check the topic prefix, "
                "or create the topics with `ledger init`"
            )
        out.extend(TopicPartition(topic, p) for p in sorted(parts))
    return out


def check_single_partition(topic: str, partitions: Iterable[int]) -> None:
    """The models topic must have one partition: registrations and deployments are read in
    one total order (the first registration wins; serving windows follow deployments)."""
    found = sorted(partitions)
    if found != [0]:
        raise BrokerError(
            f"topic {topic} has {len(found)} partitions; the ledger needs exactly 1 so that "
            "registrations and deployments have one order. It was not created by `ledger init` "
            "(e.g. broker auto-create): recreate it with 1 partition"
        )
