"""A broker that lost its log and grew a new one: stored offsets of the old log stop the
materialiser with LogGapError, in --no-group mode and in a group that ran through it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from consumers.catchup import catch_up
from ledger.contract.events import Topics
from ledger.errors import LogGapError
from ledger.log.broker import EmbeddedBroker
from ledger.log.topics import init_topics
from ledger.store import Batch, Shard
from ledger.store.positions import LogMark, peek_positions
from tests.helpers import produce_embeddings

pytestmark = pytest.mark.kafka

TOPICS = Topics(prefix="identity")
OLD = 400  # events in the first log (100 per partition, about)


class _Broker:
    """A private embedded broker that can restart on its port, losing its log."""

    def __init__(self) -> None:
        self._broker = EmbeddedBroker()
        self.bootstrap = self._broker.start()

    def restart(self) -> None:
        self._broker.stop()
        self._broker.start()

    def stop(self) -> None:
        self._broker.stop()


@pytest.fixture
def broker() -> Iterator[_Broker]:
    b = _Broker()
    try:
        init_topics(b.bootstrap, TOPICS, partitions=2)
        yield b
    finally:
        b.stop()


def _new_log(broker: _Broker, events: int) -> None:
    """Lose the log; the new one has ``events`` other embeddings (other entities, seed)."""
    broker.restart()
    init_topics(broker.bootstrap, TOPICS, partitions=2)
    produce_embeddings(broker.bootstrap, TOPICS, events, start=10_000, seed=9)


@pytest.mark.parametrize("events", [OLD * 3, 20], ids=["longer", "shorter"])
def test_a_fresh_catch_up_on_a_replaced_log_stops_with_a_log_gap(broker, tmp_path, events):
    produce_embeddings(broker.bootstrap, TOPICS, OLD)
    assert catch_up(broker.bootstrap, TOPICS, tmp_path).events == OLD + 1
    before = Shard(tmp_path, "main").stored_offsets()

    _new_log(broker, events)

    with pytest.raises(LogGapError, match=r"identity\.\w+\[\d\].*fresh home"):
        catch_up(broker.bootstrap, TOPICS, tmp_path, timeout=60)
    assert Shard(tmp_path, "main").stored_offsets() == before  # nothing of the new log


@pytest.mark.parametrize("events", [OLD * 3, 20], ids=["longer", "shorter"])
def test_a_group_member_running_through_a_broker_restart_stops_with_a_log_gap(
    broker, tmp_path, events
):
    produce_embeddings(broker.bootstrap, TOPICS, OLD)
    member = subprocess.Popen(
        [sys.executable, "-m", "ledger", "--bootstrap", broker.bootstrap, "--home", str(tmp_path)]
        + ["--topic-prefix", TOPICS.prefix, "consume", "--group", "identity.g"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while sum(_stored_embeddings(tmp_path).values()) < OLD:
            assert time.monotonic() < deadline, "the group member never caught up"
            assert member.poll() is None, member.stderr.read() if member.stderr else ""
            time.sleep(0.2)
        before = _stored_embeddings(tmp_path)

        # Frozen while the broker restarts: the bundled broker creates a topic that any
        # client asks for (4 partitions, even the models topic), so the member must not
        # ask before the topics exist again. It wakes to a new log, already long.
        member.send_signal(signal.SIGSTOP)
        try:
            _new_log(broker, events)
        finally:
            member.send_signal(signal.SIGCONT)

        _, err = member.communicate(timeout=90)  # it must stop by itself
    finally:
        if member.poll() is None:
            member.kill()
            member.communicate()
    text = err.decode(errors="replace")
    assert member.returncode == 2, text
    assert "fresh home" in text and TOPICS.prefix in text and "Traceback" not in text
    assert _stored_embeddings(tmp_path) == before  # nothing of the new log was stored


def _stored_embeddings(home) -> dict[tuple[str, int], int]:
    path = home / "shards" / "main.duckdb"
    if not path.exists():
        return {}
    found = peek_positions(path, timeout=10) or {}
    return {k: p.next_offset for k, p in found.items() if k[0] == TOPICS.embeddings}


def test_a_different_record_at_the_mark_stops_even_without_topic_ids(broker, tmp_path):
    # A broker that reports no topic ids: only the record at the mark tells the logs apart.
    produce_embeddings(broker.bootstrap, TOPICS, 50)
    catch_up(broker.bootstrap, TOPICS, tmp_path)
    shard = Shard(tmp_path, "main")
    key = (TOPICS.embeddings, 0)
    stored = shard.stored_positions()[key]
    assert stored.mark is not None and stored.mark.offset == stored.next_offset - 1
    other = LogMark(stored.mark.offset, "0" * 64, None)
    shard.write(Batch({}, {key: stored.next_offset}, marks={key: other}))
    with pytest.raises(LogGapError, match=rf"{TOPICS.embeddings}\[0\].*is not the one stored"):
        catch_up(broker.bootstrap, TOPICS, tmp_path, timeout=60)
