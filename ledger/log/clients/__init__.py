"""Which Kafka client runs: the one place that decides, and the only way to get one.

librdkafka (confluent-kafka, ``pip install 'lineage-ledger[fast]'``) when it is
importable, else kafka-python (the design's client, DESIGN decision 10);
``LEDGER_KAFKA_CLIENT=kafka-python|librdkafka`` overrides the choice. Every consumer and
producer of the log stage comes from :func:`open_consumer` / :func:`open_producer`, so
the rest of the ledger sees only the seam (:mod:`ledger.log.clients.base`).

Example:
    >>> client_in_use().name in ("kafka-python", "librdkafka")
    True
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ledger.errors import UsageError
from ledger.log.clients.base import (
    ConsumerSettings,
    LogConsumer,
    LogRecord,
    MessageTooLarge,
    OffsetOutOfRange,
    Partition,
    ProducerClient,
    TransportError,
    TransportTimeout,
)
from ledger.log.timeouts import BrokerTimeouts

ENV_CLIENT = "LEDGER_KAFKA_CLIENT"
KAFKA_PYTHON, LIBRDKAFKA = "kafka-python", "librdkafka"
CLIENTS = (KAFKA_PYTHON, LIBRDKAFKA)
FAST_INSTALL = "pip install 'lineage-ledger[fast]'"

__all__ = [
    "CLIENTS",
    "ENV_CLIENT",
    "ClientInfo",
    "ConsumerSettings",
    "LogConsumer",
    "LogRecord",
    "MessageTooLarge",
    "OffsetOutOfRange",
    "Partition",
    "ProducerClient",
    "TransportError",
    "TransportTimeout",
    "client_in_use",
    "open_consumer",
    "open_producer",
]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """The Kafka client in use, its version, and why it was chosen."""

    name: str
    version: str
    chosen_by: str


def _librdkafka_installed() -> bool:
    return importlib.util.find_spec("confluent_kafka") is not None


def client_name() -> str:
    """``$LEDGER_KAFKA_CLIENT`` when set, else librdkafka when importable, else kafka-python.

    Raises:
        UsageError: an unknown name, or librdkafka asked for and not installed.
    """
    wanted = os.environ.get(ENV_CLIENT, "").strip()
    if not wanted:
        return LIBRDKAFKA if _librdkafka_installed() else KAFKA_PYTHON
    if wanted not in CLIENTS:
        raise UsageError(
            f"{ENV_CLIENT}={wanted!r} names no Kafka client the ledger has",
            hint=f"set it to one of {', '.join(CLIENTS)}, or unset it",
        )
    if wanted == LIBRDKAFKA and not _librdkafka_installed():
        raise UsageError(
            f"{ENV_CLIENT}=librdkafka, but confluent-kafka (librdkafka) is not installed",
            hint=f"{FAST_INSTALL}, or unset {ENV_CLIENT} to use kafka-python",
        )
    return wanted


def _module(name: str) -> ModuleType:
    if name == LIBRDKAFKA:
        from ledger.log.clients import librdkafka

        return librdkafka
    from ledger.log.clients import kafka_python

    return kafka_python


def client_in_use() -> ClientInfo:
    """The client :func:`open_consumer` and :func:`open_producer` use now, and its version."""
    name = client_name()
    by = f"${ENV_CLIENT}" if os.environ.get(ENV_CLIENT, "").strip() else "installed packages"
    return ClientInfo(name, _module(name).client_version(), by)


def open_consumer(bootstrap: str, settings: ConsumerSettings | None = None) -> LogConsumer:
    """A consumer of the client in use (not yet assigned nor subscribed).

    Raises :class:`~ledger.errors.BrokerError` when no broker answers within the connect
    timeout in force.
    """
    consumer: LogConsumer = _module(client_name()).Consumer(
        bootstrap, settings or ConsumerSettings()
    )
    return consumer


def open_producer(bootstrap: str, timeouts: BrokerTimeouts, **kafka_config: Any) -> ProducerClient:
    """A producer of the client in use; ``kafka_config`` in kafka-python's names
    (``linger_ms``; librdkafka also takes its own dotted names)."""
    producer: ProducerClient = _module(client_name()).Producer(bootstrap, timeouts, **kafka_config)
    return producer
