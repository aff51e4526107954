"""Materialisers: consume the ledger topics into DuckDB, exactly once in effect.

Example:
    >>> from consumers import catch_up, lag  # doctest: +SKIP
    >>> catch_up(bootstrap, Topics(), Path(".ledger")).events  # doctest: +SKIP
"""

from consumers.catchup import catch_up
from consumers.deadletters import RedriveReport, list_dead_letters, redrive, show_dead_letter
from consumers.lag import PartitionLag, lag, true_ends, wait_caught_up
from consumers.materialiser import Materialiser
from consumers.writer import Stats

__all__ = [
    "Materialiser",
    "PartitionLag",
    "RedriveReport",
    "Stats",
    "catch_up",
    "lag",
    "list_dead_letters",
    "redrive",
    "show_dead_letter",
    "true_ends",
    "wait_caught_up",
]
