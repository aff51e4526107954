"""Catching a home up: materialise the log to its true end (or to given ends), then return."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from consumers.materialiser import PATIENCE_S, Materialiser, Progress
from consumers.writer import Stats
from ledger.contract.events import Topics


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
) -> Stats:
    """Materialise every partition (or the group's share) to its true end, then return.

    ``group=None`` assigns all partitions without joining a group: fast, for rollback and
    full replays into a fresh home.

    Example:
        >>> catch_up(bs, Topics("acme"), Path(".ledger")).events  # doctest: +SKIP
        100000
    """
    with Materialiser(bootstrap, topics, home, shard=shard, group=group) as mat:
        return mat.run(
            until_caught_up=True, progress=progress, timeout=timeout, until=until, patience=patience
        )
