"""Bringing the views to the log's end before a plan is made, or replaying the whole log."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from consumers.catchup import catch_up
from consumers.lag import wait_caught_up
from ledger.contract.events import Topics
from ledger.errors import ShardBusy
from ledger.ops.kinds import Progress, no_progress
from ledger.store import busy_shards


def _phase(progress: Progress, phase: str) -> Callable[[int, int], None]:
    return lambda done, total: progress(phase, done, total)


def ensure_caught_up(
    bootstrap: str,
    topics: Topics,
    home: Path,
    *,
    progress: Progress = no_progress,
    timeout: float = 600.0,
    ends: Mapping[tuple[str, int], int] | None = None,
) -> None:
    """Bring ``home``'s views to the true end of the log (to ``ends``, when given: a
    catch-up then finishes even while producers keep writing).

    Normally this materialises the rest itself (shard ``main``). When ``ledger consume``
    processes are running on this home (any shard, any group), it waits for them to reach
    the end instead: two writers of one DuckDB file are impossible, and a shard of its own
    would re-read the whole log.
    """
    if not busy_shards(home):
        try:
            catch_up(bootstrap, topics, home, progress=_phase(progress, "catch-up"), until=ends)
            return
        except ShardBusy:
            pass  # a materialiser started meanwhile: wait for it below
    progress("catch-up", 0, 1)
    wait_caught_up(bootstrap, topics, home, timeout=timeout, interval=0.2, ends=ends)
    progress("catch-up", 1, 1)


@contextlib.contextmanager
def replayed(bootstrap: str, topics: Topics, progress: Progress) -> Iterator[Path]:
    """The whole log replayed from offset 0 into a fresh temporary home, removed after."""
    tmp = Path(tempfile.mkdtemp(prefix="ledger-replay-"))
    try:
        catch_up(
            bootstrap,
            topics,
            tmp,
            shard="replay",
            progress=_phase(progress, "replay"),
            private=True,
        )
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
