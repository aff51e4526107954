"""How far each shard-set is behind the log: stored offset vs the true end of every partition."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ledger.contract.events import Topics
from ledger.errors import BrokerError
from ledger.log.clients import ConsumerSettings, TransportError, open_consumer
from ledger.log.topics import partitions_of
from ledger.store import open_views, rows


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One topic-partition: what the shards hold against what the log holds."""

    topic: str
    partition: int
    stored: int
    end: int
    lag: int
    dead_letters: int
    last_event_time: datetime | None


def true_ends(
    bootstrap: str, topic_names: tuple[str, ...], *, timeout: float = 30.0
) -> dict[tuple[str, int], int]:
    """The true end offset of every partition of ``topic_names``.

    list-offsets under-reports on Tansu (DESIGN decision 7), so this fetches from that
    answer and takes the high watermark of the fetch response.

    Example:
        >>> true_ends(bs, Topics().all)  # doctest: +SKIP
        {('ledger.models', 0): 3, ('ledger.embeddings', 0): 1017, ...}
    """
    consumer = open_consumer(bootstrap, ConsumerSettings(fetch_wait_ms=50))
    try:
        tps = partitions_of(consumer, topic_names)
        consumer.assign(tps)
        for tp, offset in consumer.end_offsets(tps).items():
            consumer.seek(tp, offset)  # at or before the true end: the fetch is small
        deadline = time.monotonic() + timeout
        ends: dict[tuple[str, int], int] = {}
        while len(ends) < len(tps):
            if time.monotonic() > deadline:
                raise BrokerError(f"no high watermark for {len(tps) - len(ends)} partitions")
            consumer.poll(0.1, 500)
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is not None:
                    ends[(tp.topic, tp.partition)] = hw
        return ends
    except TransportError as exc:
        raise BrokerError(f"cannot read the log's end from {bootstrap}: {exc}") from exc
    finally:
        consumer.close()


def lag(
    bootstrap: str,
    topics: Topics,
    home: Path,
    *,
    ends: Mapping[tuple[str, int], int] | None = None,
) -> list[PartitionLag]:
    """Per topic-partition: stored offset (max over shards), true end, lag, pending dead
    letters and the time of the last materialised event. A negative lag means the
    shards hold offsets the log no longer has (the broker lost its log).

    ``ends`` (from :func:`true_ends`, taken earlier) measures the lag against that moment
    instead of now: a rollback asks whether its catch-up got everything written before it
    started, whatever producers wrote since.

    Example:
        >>> sum(p.lag for p in lag(bs, Topics(), Path(".ledger")))  # doctest: +SKIP
        0
    """
    given_ends = ends is not None
    if ends is None:
        ends = true_ends(bootstrap, topics.all)
    con = open_views(home)
    try:
        stored = {
            (t, p): o
            for t, p, o in rows(con, 'SELECT topic, "partition", next_offset FROM offsets')
        }
        dead = {
            (t, p): n
            for t, p, n in rows(
                con,
                'SELECT topic, "partition", count(*) FROM dead_letters '
                "WHERE redriven_at IS NULL GROUP BY ALL",
            )
        }
        last = {
            (t, p): ts
            for t, p, ts in rows(
                con,
                """
            SELECT topic, "partition", max(event_time) FROM (
                SELECT topic, "partition", event_time FROM model_versions UNION ALL
                SELECT topic, "partition", event_time FROM deployments UNION ALL
                SELECT topic, "partition", event_time FROM embeddings UNION ALL
                SELECT topic, "partition", event_time FROM deletions UNION ALL
                SELECT topic, "partition", event_time FROM decisions) GROUP BY ALL""",
            )
        }
    finally:
        con.close()
    out = []
    for key in sorted(ends):
        end, have = ends[key], int(stored.get(key, 0))
        behind = end - have
        if given_ends and behind < 0:
            behind = 0  # events written after the given moment, and already read
        out.append(
            PartitionLag(
                key[0],
                key[1],
                have,
                end,
                behind,
                int(dead.get(key, 0)),
                last.get(key),
            )
        )
    return out


def wait_caught_up(
    bootstrap: str,
    topics: Topics,
    home: Path,
    *,
    timeout: float = 60.0,
    interval: float = 0.3,
    ends: Mapping[tuple[str, int], int] | None = None,
) -> list[PartitionLag]:
    """Wait until running materialisers have stored every partition to its true end (to
    ``ends``, when given: see :func:`lag`).

    For when another process (``ledger consume``) writes the shards, so :func:`catch_up`
    cannot claim them. Returns the final lag rows.

    Raises:
        BrokerError: still behind after ``timeout`` seconds (is a materialiser running?).

    Example:
        >>> wait_caught_up(bs, Topics(), Path(".ledger"), timeout=30)  # doctest: +SKIP
    """
    deadline = time.monotonic() + timeout
    while True:
        rows = lag(bootstrap, topics, home, ends=ends)
        if all(r.lag <= 0 for r in rows):
            return rows
        if time.monotonic() > deadline:
            behind = sum(r.lag for r in rows if r.lag > 0)
            raise BrokerError(
                f"materialisers are still {behind} events behind after {timeout}s",
                hint="is a materialiser running for this home?",
                cli_hint="is `ledger consume` running for this home?",
            )
        time.sleep(interval)
