"""Sending encoded events to Kafka and knowing what is not acknowledged yet.

:class:`Sender` is the Kafka client behind :class:`~ledger.log.producer.Producer`: it sends
events the producer has validated and encoded, counts the ones not acknowledged yet,
flushes with a bounded wait, and closes without leaving the client's thread behind. Every
failure is a :class:`~ledger.errors.LedgerError`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ledger.errors import BrokerError, ContractError
from ledger.log.clients import (
    MessageTooLarge,
    TransportError,
    TransportTimeout,
    open_producer,
)
from ledger.log.timeouts import BrokerTimeouts, using_timeouts

#: Bytes a record adds to its key and value in a batch (kafka-python estimates 61 for the
#: batch header plus a few varints); kept generous so the size check refuses before
#: the client would, and a batch is refused whole rather than half sent.
_RECORD_OVERHEAD = 128


class Sender:
    """The producer client in use (:mod:`ledger.log.clients`) with ``acks=all`` and
    bounded waits.

    Args:
        bootstrap: Kafka bootstrap servers.
        timeouts: ``connect`` bounds reaching the broker (and a send that cannot proceed);
            ``flush`` bounds a stretch without acknowledgements in :meth:`flush`.
        **kafka_config: producer options in kafka-python's names (e.g. ``linger_ms``).
    """

    def __init__(self, bootstrap: str, timeouts: BrokerTimeouts, **kafka_config: Any) -> None:
        self.bootstrap = bootstrap
        self.timeouts = timeouts
        with using_timeouts(timeouts):
            self._client = open_producer(bootstrap, timeouts, **kafka_config)
        self.max_event_bytes = self._client.max_event_bytes
        self._limit = self.max_event_bytes - _RECORD_OVERHEAD
        self._send = self._client.send

    def partitions_for(self, topic: str) -> set[int]:
        """The partitions of ``topic`` (waits up to the connect timeout for metadata)."""
        try:
            return self._client.partitions_for(topic)
        except TransportError as exc:
            raise self._broker_error(topic, exc) from exc

    def send_one(self, topic: str, key: bytes, value: bytes) -> None:
        """Send one validated, encoded event (the per-call hot path of ``write_embedding``)."""
        if len(key) + len(value) > self._limit:
            self._check_sizes([key], [value])  # raises with the message and data
        try:
            self._send(topic, key, value)
        except MessageTooLarge as exc:
            raise self._too_large(exc) from exc
        except TransportError as exc:
            raise self._broker_error(topic, exc) from exc

    def send_all(self, topic: str, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """Send validated, encoded events (all of them, or none when one is too large)."""
        self._check_sizes(keys, values)
        try:
            self._client.send_many(topic, keys, values)
        except MessageTooLarge as exc:
            raise self._too_large(exc) from exc
        except TransportError as exc:
            raise self._broker_error(topic, exc) from exc

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every sent event is acknowledged; raise if any send failed.

        Waits as long as acknowledgements keep coming; raises :class:`BrokerError` naming
        how many events are not acknowledged once ``timeout`` seconds (default: the
        ``flush`` timeout) pass without one.
        """
        stall = self.timeouts.flush if timeout is None else BrokerTimeouts(flush=timeout).flush
        # A client's flush(timeout) may wait up to ``timeout`` per batch, so a dead broker
        # would hold it for batches x timeout: wait in short steps and watch progress.
        step = min(stall, 0.25)
        deadline = time.monotonic() + stall
        pending = self._client.pending()
        while pending:
            try:
                self._client.wait(step)
            except TransportError as exc:
                raise BrokerError(f"flush to {self.bootstrap} failed: {exc}") from exc
            before, pending = pending, self._client.pending()
            now = time.monotonic()
            if pending != before:
                deadline = now + stall
            elif pending and now >= deadline:
                raise BrokerError(
                    f"{pending} events were not acknowledged by {self.bootstrap} "
                    f"within {stall:g}s; they may be missing from the log",
                    hint="check that the broker is up, or allow more time with flush_timeout; "
                    "then write them again",
                    cli_hint="check that the broker is up, or allow more time with "
                    "--broker-timeout; then run the command again",
                )
        failures = self._client.take_failures()
        if failures:
            raise BrokerError(
                f"{len(failures)} events were not acknowledged by {self.bootstrap} "
                f"(first: {failures[0]!r}); they were not written",
                hint="write them again",
            )

    def close(self, *, graceful: bool = True) -> None:
        """Release the client: after a final flush when ``graceful``, else at once."""
        try:
            self._client.close(graceful=graceful)
        except TransportError as exc:
            raise BrokerError(f"closing the producer for {self.bootstrap} failed: {exc}") from exc

    def _too_large(self, exc: TransportError) -> ContractError:
        return ContractError(
            f"an event is larger than the producer's max_request_size: {exc}",
            field="event",
            hint="shorten the ids and texts of the event",
        )

    def _broker_error(self, topic: str, exc: TransportError) -> BrokerError:
        if isinstance(exc, TransportTimeout):
            return BrokerError(
                f"the broker at {self.bootstrap} did not take events for topic {topic} within "
                f"{self.timeouts.connect:g}s: it is down, the topic does not exist, or it is "
                "not keeping up",
                hint="check that the broker is up and that init_topics() created the topics",
                cli_hint="check that the broker is up and that `ledger init` created the "
                "topics, or check --topic-prefix",
            )
        return BrokerError(f"sending to {topic} at {self.bootstrap} failed: {exc}")

    def _check_sizes(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """Refuse the whole call when an event exceeds ``max_request_size`` (else the
        client refuses it alone, after the events before it were sent)."""
        limit = self._limit
        for i, (key, value) in enumerate(zip(keys, values, strict=True)):
            if len(key) + len(value) > limit:
                raise ContractError(
                    f"event {i} of the call is {len(key) + len(value)} bytes, more than the "
                    f"producer's max_request_size ({self.max_event_bytes}) allows",
                    field="event",
                    expected=f"at most {limit} bytes",
                    got=f"{len(key) + len(value)} bytes (id {len(key)} bytes)",
                    hint="ids are keys, not content: shorten them, or raise max_request_size "
                    "and the broker's message.max.bytes",
                )
