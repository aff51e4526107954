"""Catching a home up: materialise the log to its true end (or to given ends), then return."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from consumers.materialiser import PATIENCE_S, Materialiser, Progress
from consumers.writer import Stats
from ledger.contract.events import Topics

#: A catch-up reads a backlog: larger transactions and a connection held longer between
#: them than a live materialiser's (5,000 messages, 1 s) cost the writer less per row (each
#: close checkpoints; DuckDB writes large transactions' row groups straight to the file).
#: A reader of the home waits up to ``CATCH_UP_HOLD_S`` for its turn.
CATCH_UP_BATCH = 50_000
CATCH_UP_HOLD_S = 10.0


def catch_up(
    bootstrap: str,
    topics: Topics,
    home: Path,
    *,
    shard: str = "main",
    group: str | None = None,
    progress: Progress | None = None,
    timeout: float | None = None,
    until: Mapping[tuple[str, int], int] | None = None,
    patience: float = PATIENCE_S,
    private: bool = False,
) -> Stats:
    """Materialise every partition (or the group's share) to its true end, then return.

    ``group=None`` assigns all partitions without joining a group: fast, for rollback and
    full replays into a fresh home. ``private=True`` says no one else reads ``home`` (a
    replay's temporary home): the shard's connection then stays open to the end.

    Example:
        >>> catch_up(bs, Topics("acme"), Path(".ledger")).events  # doctest: +SKIP
        100000
    """
    hold = math.inf if private else CATCH_UP_HOLD_S
    with Materialiser(
        bootstrap, topics, home, shard=shard, group=group, max_batch=CATCH_UP_BATCH, hold=hold
    ) as mat:
        return mat.run(
            until_caught_up=True, progress=progress, timeout=timeout, until=until, patience=patience
        )
