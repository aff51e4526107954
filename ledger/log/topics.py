"""The ledger's topics: creating them, their partitions, and the admin client."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ledger.contract.events import Topics
from ledger.errors import BrokerError
from ledger.log.broker import connect_client
from ledger.log.clients.base import LogConsumer, Partition

#: Unlimited retention and no compaction: the log is the history (DESIGN decision 9).
#: Set explicitly, so a cluster whose defaults differ does not apply its own.
TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}

#: The topic configs that decide how much history the log keeps (:func:`topic_configs`).
HISTORY_CONFIGS = ("retention.ms", "retention.bytes", "cleanup.policy")


def admin_client(bootstrap: str) -> KafkaAdminClient:
    """An admin client, or :class:`BrokerError` within the connect timeout in force."""
    return connect_client(KafkaAdminClient, bootstrap, request_timeout_ms=10_000)


def init_topics(
    bootstrap: str, topics: Topics, *, partitions: int = 4, replication_factor: int = 1
) -> list[str]:
    """Create the ledger's topics (idempotent); returns the names that were created.

    ``models`` gets one partition so registrations and deployments have one order; every
    topic gets :data:`TOPIC_CONFIG` and ``replication_factor`` replicas (a cluster of
    several brokers wants 3). Topics that exist already are left as they are.
    """
    admin = admin_client(bootstrap)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(topics.models, 1, replication_factor, topic_configs=TOPIC_CONFIG),
            NewTopic(topics.embeddings, partitions, replication_factor, topic_configs=TOPIC_CONFIG),
            NewTopic(topics.decisions, partitions, replication_factor, topic_configs=TOPIC_CONFIG),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process: the state we want
            except KafkaError as exc:
                raise BrokerError(
                    f"cannot create {', '.join(t.name for t in missing)}: {_broker_says(exc)}",
                    hint="check partitions and replication_factor against the cluster",
                    cli_hint="check --partitions and --replication-factor against the cluster",
                ) from exc
        return [t.name for t in missing]
    finally:
        admin.close()


def _broker_says(exc: KafkaError) -> str:
    """The broker's own words in a failed admin response (kafka-python puts the whole
    response in the message), else the error's name."""
    found = re.search(r"error_message='([^']+)'", str(exc))
    return found.group(1) if found else type(exc).__name__


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


def topic_configs(bootstrap: str, names: Iterable[str]) -> dict[str, dict[str, str]]:
    """The :data:`HISTORY_CONFIGS` of each topic in ``names``, as the broker reports them
    (its defaults included; a config the broker does not report is left out).

    Example:
        >>> topic_configs(bs, ["ledger.embeddings"])  # doctest: +SKIP
        {'ledger.embeddings': {'retention.ms': '-1', 'retention.bytes': '-1',
                               'cleanup.policy': 'delete'}}
    """
    names = list(names)
    admin = admin_client(bootstrap)
    try:
        found = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names], config_filter="all"
        ).get("topic", {})
    except KafkaError as exc:
        raise BrokerError(f"cannot read the topics' configs from {bootstrap}: {exc}") from exc
    finally:
        admin.close()
    return {
        name: {
            key: str(entry["value"])
            for key, entry in found.get(name, {}).items()
            if key in HISTORY_CONFIGS and entry.get("value") is not None
        }
        for name in names
    }
