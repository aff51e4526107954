"""The models topic read to its true end, to learn registrations early."""

from __future__ import annotations

import time

from consumers.stalls import STALL_SECONDS, find_next_record
from ledger.contract.rules import Registry
from ledger.contract.schemas import SchemaStore
from ledger.errors import BrokerError
from ledger.log.clients import ConsumerSettings, Partition, open_consumer
from ledger.log.topics import check_single_partition, partitions_of

#: The models topic is small: the broker answers an empty fetch soon.
TAIL_SETTINGS = ConsumerSettings(fetch_wait_ms=50)


class ModelsTail:
    """Reads the models topic forward, from offset 0, for the registrations it holds.

    Example:
        >>> tail = ModelsTail(bs, "ledger.models", default_store())  # doctest: +SKIP
        >>> tail.read_into(registry)                                  # doctest: +SKIP
    """

    def __init__(self, bootstrap: str, topic: str, schemas: SchemaStore) -> None:
        self._bootstrap = bootstrap
        self._consumer = open_consumer(bootstrap, TAIL_SETTINGS)
        try:
            check_single_partition(
                topic, (tp.partition for tp in partitions_of(self._consumer, [topic]))
            )
        except BaseException:
            self._consumer.close()
            raise
        self._tp = Partition(topic, 0)
        self._consumer.assign([self._tp])
        self._consumer.seek(self._tp, 0)
        self._schemas = schemas

    def read_into(self, registry: Registry, *, timeout: float = 30.0) -> None:
        """Add the registrations up to the topic's end to ``registry``."""
        deadline = time.monotonic() + timeout
        moved_at, last = time.monotonic(), -1
        while True:
            for records in self._consumer.poll(0.1, TAIL_SETTINGS.max_records).values():
                registry.add_registrations((m.value for m in records), self._schemas)
            hw = self._consumer.highwater(self._tp)
            position = self._consumer.position(self._tp)
            if hw is not None and position >= hw:
                return
            now = time.monotonic()
            if position != last:
                moved_at, last = now, position
            elif hw is not None and now - moved_at > STALL_SECONDS:
                # An empty batch holds the position (see consumers.stalls); the materialiser
                # dead-letters it when it gets there, here it is only stepped over.
                found = find_next_record(self._bootstrap, self._tp, position)
                self._consumer.seek(self._tp, found.offset)
                moved_at = now
            if now > deadline:
                raise BrokerError(
                    f"reading {self._tp.topic} to its end timed out after {timeout}s "
                    f"(at offset {position}, the end is {hw})"
                )

    def close(self) -> None:
        self._consumer.close()
