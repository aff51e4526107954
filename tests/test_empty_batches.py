"""A record batch with no records (another producer wrote it) is dead-lettered and
stepped over: the partition does not stall, and the events around it are all stored."""

from __future__ import annotations

import subprocess
import time

import pytest

from consumers.catchup import catch_up
from consumers.deadletters import list_dead_letters
from consumers.lag import lag
from consumers.materialiser import Materialiser
from ledger.errors import BrokerError
from ledger.log.broker import _tansu_binary
from ledger.store import open_views
from tests.helpers import produce_embeddings

pytestmark = pytest.mark.kafka


def _empty_batch(bootstrap: str, topic: str, partition: int) -> None:
    """The bundled broker's own producer, given no input, writes a batch of 0 records."""
    try:
        binary = _tansu_binary()
    except BrokerError as exc:
        pytest.skip(str(exc))
    done = subprocess.run(  # noqa: S603 - the bundled binary, fixed arguments
        [binary, "cat", "produce", "--broker", f"tcp://{bootstrap}"]
        + ["--partition", str(partition), topic, "-"],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0 and b"failed the validation on broker" in done.stdout + done.stderr:
        # Apache Kafka refuses the batch (INVALID_RECORD): its logs cannot hold one.
        pytest.skip("the broker refuses a record batch with no records (Apache Kafka does)")
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def _stored_entities(home) -> set[str]:
    con = open_views(home)
    try:
        return {r[0] for r in con.execute("SELECT entity_id FROM embeddings").fetchall()}
    finally:
        con.close()


def test_an_empty_batch_first_in_the_log_is_a_dead_letter_and_the_rest_is_stored(
    bootstrap, make_topics, tmp_path
):
    topics = make_topics(1)
    _empty_batch(bootstrap, topics.embeddings, 0)  # a fetch from offset 0 starts at it
    produce_embeddings(bootstrap, topics, 5)

    started = time.monotonic()
    stats = catch_up(bootstrap, topics, tmp_path, timeout=60)
    assert time.monotonic() - started < 30

    assert (stats.events, stats.dead_letters) == (5 + 1, 1)  # and the registration
    (dead,) = list_dead_letters(tmp_path)
    assert (dead.topic, dead.partition, dead.offset) == (topics.embeddings, 0, 0)
    assert dead.reason.startswith("empty record batch at offsets 0..0")
    assert _stored_entities(tmp_path) == {f"e{i}" for i in range(5)}
    assert all(p.lag == 0 for p in lag(bootstrap, topics, tmp_path))


def test_an_empty_batch_where_a_running_materialiser_reads_does_not_stall_it(
    bootstrap, make_topics, tmp_path
):
    topics = make_topics(1)
    produce_embeddings(bootstrap, topics, 5)
    with Materialiser(bootstrap, topics, tmp_path) as mat:
        mat.run(until_caught_up=True, timeout=60)  # positioned at 5, where the batch goes
        _empty_batch(bootstrap, topics.embeddings, 0)
        _empty_batch(bootstrap, topics.models, 0)  # the models topic too
        produce_embeddings(bootstrap, topics, 5, start=5)
        started = time.monotonic()
        stats = mat.run(until_caught_up=True, timeout=60)
        assert time.monotonic() - started < 30
    assert stats.dead_letters == 2
    assert sorted((d.topic, d.offset, d.reason[:34]) for d in list_dead_letters(tmp_path)) == [
        (topics.embeddings, 5, "empty record batch at offsets 5..5"),
        (topics.models, 1, "empty record batch at offsets 1..1"),
    ]
    assert _stored_entities(tmp_path) == {f"e{i}" for i in range(10)}
    assert all(p.lag == 0 for p in lag(bootstrap, topics, tmp_path))
