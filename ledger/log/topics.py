"""The ledger's topics: creating them, their partitions, and the admin client."""

from __future__ import annotations

import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ledger.contract.events import Topics
from ledger.errors import BrokerError
from ledger.log.broker import connect_client
from ledger.log.clients.base import LogConsumer, Partition

#: Unlimited retention: the log is the history (DESIGN decision 9).
TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}


def admin_client(bootstrap: str) -> KafkaAdminClient:
    """An admin client, or :class:`BrokerError` within the connect timeout in force."""
    return connect_client(KafkaAdminClient, bootstrap, request_timeout_ms=10_000)


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


def partitions_of(consumer: LogConsumer, topics: Iterable[str]) -> list[Partition]:
    """All partitions of ``topics``.

    Raises BrokerError for a topic the broker does not have (a mistyped topic prefix, or
    ``ledger init`` not run): a client answers an unknown topic with no partitions, which
    would otherwise read as "nothing to do".
    """
    out: list[Partition] = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)  # a metadata request when not cached
        deadline = time.monotonic() + 2  # a topic just created may take a moment to show
        while not parts and time.monotonic() < deadline:
            time.sleep(0.1)
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise BrokerError(
                f"topic {topic} does not exist on the broker",
                hint="check the topic prefix, or create the ledger's topics with init_topics()",
                cli_hint="check --topic-prefix, or create the topics with `ledger init`",
            )
        out.extend(Partition(topic, p) for p in sorted(parts))
    return out


def check_single_partition(topic: str, partitions: Iterable[int]) -> None:
    """The models topic must have one partition: registrations and deployments are read in
    one total order (the first registration wins; serving windows follow deployments)."""
    found = sorted(partitions)
    if found != [0]:
        raise BrokerError(
            f"topic {topic} has {len(found)} partitions; the ledger needs exactly 1 so that "
            "registrations and deployments have one order",
            hint="it was not created by init_topics(), perhaps auto-created by the broker: "
            "recreate it with 1 partition",
            cli_hint="it was not created by `ledger init`, perhaps auto-created by the broker: "
            "recreate it with 1 partition",
        )


def topic_partitions(bootstrap: str, *, timeout_ms: int = 5000) -> dict[str, int]:
    """Every topic the cluster has, with its partition count (metadata only)."""
    consumer = connect_client(KafkaConsumer, bootstrap, request_timeout_ms=timeout_ms)
    try:
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in consumer.topics()}
    except KafkaError as exc:
        raise BrokerError(f"cannot read topic metadata from {bootstrap}: {exc}") from exc
    finally:
        consumer.close()
