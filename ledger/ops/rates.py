"""The speeds this home has measured, for the plan's ETA.

Loading is measured in items/s and building in (items x dimension x trees)/s, since build
time grows with all three. Runs under 10k items keep the old rate: they measure process
start-up more than the work.
"""

from __future__ import annotations

import json
from pathlib import Path

RATES_FILE = "rates.json"
# Fallback rates until this home has measured its own (BENCHMARKS.md, 2 cores).
DEFAULT_RATES = {"load": 100_000.0, "build": 3.0e8}
_MIN_ITEMS = 10_000


def read_rates(home: Path) -> dict[str, float]:
    """The measured rates of ``home``, or the defaults."""
    try:
        measured = json.loads((home / RATES_FILE).read_text())
        return {k: float(measured.get(k, v)) for k, v in DEFAULT_RATES.items()}
    except (OSError, ValueError, AttributeError):
        return dict(DEFAULT_RATES)


def record_rate(home: Path, name: str, amount: float, seconds: float, *, items: int) -> None:
    """Remember ``amount / seconds`` as the ``name`` rate of ``home``."""
    if items < _MIN_ITEMS or seconds <= 0:
        return
    rates = read_rates(home)
    rates[name] = amount / seconds
    (home / RATES_FILE).write_text(json.dumps(rates, indent=2))
