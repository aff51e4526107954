"""How long the log stage waits for a broker that does not answer.

Two waits: ``connect`` bounds reaching the broker (bootstrap, topic metadata, a TCP
check); ``flush`` bounds waiting for acknowledgements (a flush fails once this long
passes without one, so a large flush that makes progress is not cut short). Calls that
talk to the broker take them as arguments; left out, they come from
:func:`current_timeouts`, which a caller (the CLI, for one command) sets with
:func:`using_timeouts`.

Example:
    >>> with using_timeouts(BrokerTimeouts(connect=2.0, flush=2.0)):
    ...     current_timeouts().connect
    2.0
    >>> current_timeouts() == BrokerTimeouts()
    True
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from ledger.errors import UsageError


@dataclass(frozen=True, slots=True)
class BrokerTimeouts:
    """Seconds to wait for a broker: to reach it (``connect``), and for acknowledgements
    (``flush``: the longest stretch without one)."""

    connect: float = 10.0
    flush: float = 30.0

    def __post_init__(self) -> None:
        for name in ("connect", "flush"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"the {name} timeout must be a number of seconds, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise UsageError(
                    f"the {name} timeout must be a positive number of seconds, got {value!r}"
                )

    @property
    def connect_ms(self) -> int:
        """``connect`` in the milliseconds Kafka clients take (at least 1)."""
        return max(1, round(self.connect * 1000))


_CURRENT: ContextVar[BrokerTimeouts] = ContextVar("ledger_broker_timeouts")
_DEFAULT = BrokerTimeouts()


def current_timeouts() -> BrokerTimeouts:
    """The waits in force: the ones set by :func:`using_timeouts`, else the defaults."""
    return _CURRENT.get(_DEFAULT)


@contextlib.contextmanager
def using_timeouts(timeouts: BrokerTimeouts) -> Iterator[BrokerTimeouts]:
    """Make ``timeouts`` the default waits for the calls made inside the block."""
    token = _CURRENT.set(timeouts)
    try:
        yield timeouts
    finally:
        _CURRENT.reset(token)
