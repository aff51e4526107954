"""Sending encoded events to Kafka and knowing what is not acknowledged yet.

:class:`Sender` is the Kafka client behind :class:`~ledger.log.producer.Producer`: it sends
events the producer has validated and encoded, counts the ones not acknowledged yet,
flushes with a bounded wait, and closes without leaving the client's thread behind. Every
failure is a :class:`~ledger.errors.LedgerError`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from ledger.errors import BrokerError, ContractError
from ledger.log.broker import connect_client
from ledger.log.timeouts import BrokerTimeouts, using_timeouts

#: Bytes a record adds to its key and value in a batch (kafka-python estimates 61 for the
#: batch header plus a few varints); kept generous so the size check refuses before
#: kafka-python would, and a batch is refused whole rather than half sent.
_RECORD_OVERHEAD = 128


class Sender:
    """A ``KafkaProducer`` for ``bootstrap`` with ``acks=all`` and bounded waits.

    Args:
        bootstrap: Kafka bootstrap servers.
        timeouts: ``connect`` bounds reaching the broker (and a send that cannot proceed);
            ``flush`` bounds a stretch without acknowledgements in :meth:`flush`.
        **kafka_config: passed to ``kafka.KafkaProducer``.
    """

    def __init__(self, bootstrap: str, timeouts: BrokerTimeouts, **kafka_config: Any) -> None:
        self.bootstrap = bootstrap
        self.timeouts = timeouts
        self._failures: list[BaseException] = []
        # Events handed to the client, and those it has settled (acknowledged or failed):
        # the difference is what a flush still waits for. Callbacks run on the client's
        # sender thread, so both change under the lock.
        self._sent = 0
        self._settled = 0
        self._lock = threading.Lock()
        config: dict[str, Any] = {
            "acks": "all",
            # kafka-python's default, stated: a batch retried after a broker restart (its
            # acknowledgement lost) is not written twice (tests/test_apache_kafka.py).
            "enable_idempotence": True,
            "linger_ms": 10,
            "batch_size": 256 * 1024,
            "max_request_size": 16 * 1024 * 1024,
            "bootstrap_timeout_ms": timeouts.connect_ms,
            "max_block_ms": timeouts.connect_ms,
            **kafka_config,
        }
        self.max_event_bytes = int(config["max_request_size"])
        with using_timeouts(timeouts):
            self._kafka = connect_client(KafkaProducer, bootstrap, **config)

    def partitions_for(self, topic: str) -> set[int]:
        """The partitions of ``topic`` (waits up to the connect timeout for metadata)."""
        try:
            return set(self._kafka.partitions_for(topic) or ())
        except KafkaError as exc:
            raise self._broker_error(topic, exc) from exc

    def send_one(self, topic: str, key: bytes, value: bytes) -> None:
        """Send one validated, encoded event (the per-call hot path of ``write_embedding``)."""
        if len(key) + len(value) > self.max_event_bytes - _RECORD_OVERHEAD:
            self._check_sizes([key], [value])  # raises with the message and data
        try:
            future = self._kafka.send(topic, key=key, value=value)
        except MessageSizeTooLargeError as exc:
            raise self._too_large(exc) from exc
        except KafkaError as exc:
            raise self._broker_error(topic, exc) from exc
        with self._lock:
            self._sent += 1
        future.add_both(self._on_settled)

    def send_all(self, topic: str, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """Send validated, encoded events (all of them, or none when one is too large)."""
        self._check_sizes(keys, values)
        send, on_settled, sent = self._kafka.send, self._on_settled, 0
        try:
            for key, value in zip(keys, values, strict=True):
                send(topic, key=key, value=value).add_both(on_settled)
                sent += 1
        except MessageSizeTooLargeError as exc:
            raise self._too_large(exc) from exc
        except KafkaError as exc:
            raise self._broker_error(topic, exc) from exc
        finally:
            with self._lock:
                self._sent += sent

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every sent event is acknowledged; raise if any send failed.

        Waits as long as acknowledgements keep coming; raises :class:`BrokerError` naming
        how many events are not acknowledged once ``timeout`` seconds (default: the
        ``flush`` timeout) pass without one.
        """
        stall = self.timeouts.flush if timeout is None else BrokerTimeouts(flush=timeout).flush
        # kafka-python's flush(timeout) waits up to ``timeout`` per batch, so a dead broker
        # would hold it for batches x timeout: wait in short steps and watch progress.
        step = min(stall, 0.25)
        deadline = time.monotonic() + stall
        while True:
            with self._lock:
                settled = self._settled
            try:
                self._kafka.flush(timeout=step)
                break
            except KafkaTimeoutError:
                pass  # not done yet: judged by progress below
            except KafkaError as exc:
                raise BrokerError(f"flush to {self.bootstrap} failed: {exc}") from exc
            with self._lock:
                progressed, pending = self._settled != settled, self._sent - self._settled
            now = time.monotonic()
            if progressed:
                deadline = now + stall
            elif now >= deadline:
                raise BrokerError(
                    f"{pending} events were not acknowledged by {self.bootstrap} "
                    f"within {stall:g}s; they may be missing from the log",
                    hint="check that the broker is up, or allow more time with flush_timeout; "
                    "then write them again",
                    cli_hint="check that the broker is up, or allow more time with "
                    "--broker-timeout; then run the command again",
                )
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            raise BrokerError(
                f"{len(failures)} events were not acknowledged by {self.bootstrap} "
                f"(first: {failures[0]!r}); they were not written",
                hint="write them again",
            )

    def close(self, *, graceful: bool = True) -> None:
        """Release the client: after a final flush when ``graceful``, else at once."""
        if graceful:
            try:
                self._kafka.close(timeout=self.timeouts.flush)
                return
            except KafkaError:
                pass  # events left undelivered: force the close below
        # kafka-python 3.0.12's close() flushes first and raises while events are
        # undelivered (the broker is gone), before its own force close; without that step
        # its sender thread lives on and __del__ prints a traceback at exit.
        sender = self._kafka._sender  # noqa: SLF001 - the client has no public force close
        sender.force_close()
        sender.join(self.timeouts.flush)
        with contextlib.suppress(KafkaError):
            # Safe to ignore: the sender has stopped and failed what it held, so only
            # the client's bookkeeping is left to release.
            self._kafka.close(timeout=0)

    def _on_settled(self, result: Any) -> None:
        with self._lock:
            self._settled += 1
            if isinstance(result, BaseException):
                self._failures.append(result)

    def _too_large(self, exc: KafkaError) -> ContractError:
        return ContractError(
            f"an event is larger than the producer's max_request_size: {exc}",
            field="event",
            hint="shorten the ids and texts of the event",
        )

    def _broker_error(self, topic: str, exc: KafkaError) -> BrokerError:
        if isinstance(exc, KafkaTimeoutError):
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
        limit = self.max_event_bytes - _RECORD_OVERHEAD
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
