"""The lag check: the materialiser holds every event the log had when the check began."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.checks.check import Check


def check_lag(partitions: Sequence[Any]) -> Check:
    """The materialiser holds every event: stored offset = true end on every partition.

    ``partitions`` are :class:`consumers.lag.PartitionLag` rows.
    """
    behind = [p for p in partitions if p.lag != 0]
    total = sum(p.lag for p in partitions)
    figures = {
        "partitions": len(partitions),
        "lagging_partitions": len(behind),
        "events_behind": total,
        "pending_dead_letters": sum(p.dead_letters for p in partitions),
    }
    if not behind:
        detail = f"0 events behind on {len(partitions)} partitions"
    else:
        worst = ", ".join(f"{p.topic}:{p.partition} {p.lag}" for p in behind[:3])
        lost = any(p.lag < 0 for p in behind)
        detail = (
            f"{total} events behind on {len(behind)} partitions ({worst})"
            + ("; negative lag: the broker lost events the store holds" if lost else "")
            + "; the materialisers have not caught up"
        )
    return Check("*", "lag", not behind, detail, figures)
