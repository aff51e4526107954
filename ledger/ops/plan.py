"""What a rollback (or promotion) of models to a version must do, computed from the views.

Definitions (DESIGN.md, "What a rollback must produce"), for model M and target V: each
kind's plan (:mod:`ledger.ops.kinds`) lists what its artifact will hold and what the log
lacks for V (the gap and stale entities of an embedding model; the re-decide subjects and
the blast radius of a classifier). All of it is set-based SQL over the views of
:func:`ledger.store.open_views`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.errors import UsageError
from ledger.ops.kinds import ModelPlan, kind_named
from ledger.ops.rates import read_rates
from ledger.store import Connection
from ledger.store.queries import log_offsets, registered_version


@dataclass(frozen=True, slots=True, eq=False)
class RollbackPlan:
    """What a rollback will do, per model, at one log position."""

    to_version: str
    models: tuple[ModelPlan, ...]
    log_offsets: Mapping[str, int]
    eta_seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "to_version": self.to_version,
            "models": [m.summary() for m in self.models],
            "log_offsets": dict(self.log_offsets),
            "eta_seconds": round(self.eta_seconds, 1),
        }

    def console_lines(self) -> list[str]:
        """The plan as people read it."""
        events = sum(self.log_offsets.values())
        return [
            f"Plan: roll back to {self.to_version} at log position of {events} events "
            f"on {len(self.log_offsets)} partitions",
            *(line for mp in self.models for line in mp.console_lines()),
            f"ETA {self.eta_seconds:.1f}s (from measured rates)",
        ]


def plan_model(con: Connection, model: str, version: str) -> ModelPlan:
    """Plan the rollback of one model to ``version`` from the views on ``con``."""
    kind, dimension, metric = registered_version(con, model, version)
    return kind_named(kind).plan(con, model, version, (dimension, metric))


def make_plan(home: Path, con: Connection, models: Sequence[str], *, to: str) -> RollbackPlan:
    """Plan a rollback of ``models`` to ``to`` from the views on ``con``."""
    if not models:
        raise UsageError("name at least one model", cli_hint="pass --model M")
    plans = tuple(plan_model(con, m, to) for m in dict.fromkeys(models))
    rates = read_rates(home)
    eta = sum(mp.kind.eta(mp, rates) for mp in plans)
    return RollbackPlan(to, plans, log_offsets(con), eta)
