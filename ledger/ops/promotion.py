"""Promotion (a gated switch to a new version) and switch-back (the instant undo).

:func:`promote` runs the stages of :func:`ledger.ops.rollback.rollback` to the candidate
version with a gate stage after the plan: the candidate is compared with what serves (or
``against``) under the rollback lock, at the plan's log position, and only when every
gate passes does the same build, verify, switch and ``DeploymentChanged`` machinery run,
with a promotion reason.

:func:`switch_back` points each model back at its previous serving artifact (no build: the
artifact is still on disk and is re-checked against its checksums) and records the switch
as a ``DeploymentChanged`` event, so the log keeps saying what serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ledger.contract.events import Topics
from ledger.errors import ServingError, UsageError
from ledger.log.producer import Producer
from ledger.ops.compare import (
    DEFAULT_COMPARISON,
    GateOutcome,
    VersionComparison,
    check_gates,
    compare_versions,
)
from ledger.ops.gates import Gate, parse_gates
from ledger.ops.kinds import Progress, no_progress
from ledger.ops.metrics import ComparisonSpec
from ledger.ops.rollback import (
    DEFAULT_OPTIONS,
    RollbackOptions,
    RollbackResult,
    RollbackRun,
    plan,
    run_stages,
    with_stage,
)
from ledger.serving.journal import PendingSwitch, complete_pending_switch, switch_set
from ledger.serving.locks import rollback_locks
from ledger.serving.pointers import ServingPointer, current, previous
from ledger.store import open_views
from ledger.store.queries import latest_deployment


@dataclass(frozen=True, slots=True, eq=False)
class PromotionResult:
    """What a promotion compared, what its gates said, and the rollback it ran (if any).

    ``rollback`` is None when a gate failed: then nothing was built or switched.
    """

    to_version: str
    against: dict[str, str]  # model -> the version it was compared against
    comparisons: tuple[VersionComparison, ...]
    gates: GateOutcome | None
    rollback: RollbackResult | None

    @property
    def refused(self) -> bool:
        return self.gates is not None and not self.gates.passed

    @property
    def switched(self) -> bool:
        return self.rollback is not None and self.rollback.switched

    def summary(self) -> dict[str, Any]:
        return {
            "to_version": self.to_version,
            "against": dict(self.against),
            "comparisons": [c.to_dict() for c in self.comparisons],
            "gates": self.gates.to_dict() if self.gates is not None else None,
            "refused": self.refused,
            "switched": self.switched,
            "rollback": self.rollback.summary() if self.rollback is not None else None,
        }


@dataclass(slots=True, eq=False)
class PromotionGate:
    """The promotion's stage between plan and confirmation: compare each model's serving
    version (per the log's deployments, or ``against``) with the target, on the plan's log
    position and under the rollback locks, and stop the run when a gate fails (or, for a
    dry run, after the comparison)."""

    home: Path
    to: str
    gates: tuple[Gate, ...] | None
    against: str | None
    spec: ComparisonSpec
    dry_run: bool
    versions: dict[str, str] = field(default_factory=dict)
    comparisons: tuple[VersionComparison, ...] = ()
    outcome: GateOutcome | None = None

    @property
    def refused(self) -> bool:
        return self.outcome is not None and not self.outcome.passed

    def __call__(self, run: RollbackRun) -> None:
        for mp in run.the_plan.models:
            version = self.against or mp.serving_version
            if version is None:
                raise UsageError(
                    f"no version of {mp.model} serves yet (no deployment in the log)",
                    hint="name the version to compare with (against=)",
                    cli_hint="name the version to compare with: --against VERSION",
                )
            self.versions[mp.model] = version
        with open_views(self.home) as con:
            self.comparisons = tuple(
                compare_versions(
                    con,
                    [m for m, v in self.versions.items() if v == base],
                    base,
                    self.to,
                    self.spec,
                )
                for base in dict.fromkeys(self.versions.values())
            )
        if self.gates is not None:
            self.outcome = GateOutcome(
                tuple(r for c in self.comparisons for r in check_gates(self.gates, c).results)
            )
        run.stopped = self.refused or self.dry_run


def promote(
    bootstrap: str,
    topics: Topics,
    home: Path,
    models: Sequence[str],
    *,
    to: str,
    gate: str | None = None,
    against: str | None = None,
    dry_run: bool = True,
    compare: ComparisonSpec = DEFAULT_COMPARISON,
    options: RollbackOptions = DEFAULT_OPTIONS,
    progress: Progress = no_progress,
) -> PromotionResult:
    """Compare ``to`` with what serves, check ``gate``, then switch every model to ``to``.

    1. Parse the gate spec first: a typo must not cost a catch-up.
    2. Run the rollback's stages to ``to`` with a :class:`PromotionGate` after the plan, so
       the comparison is made under the models' rollback locks, after the catch-up, on
       the log position the plan was made at: nothing can switch in between.
    3. A failed gate stops the run: nothing is built or switched. A dry run stops after the
       comparison too, keeping the plan.
    4. Otherwise ``options.confirm(plan)`` (if given) has the last word, and the rollback
       builds, verifies and switches, with reason ``promotion to <to> (gates ...)``.

    Example:
        >>> r = promote(bs, Topics(), Path(".ledger"), ["spam-filter"], to="v3",
        ...             gate="agreement>=0.95", dry_run=False)  # doctest: +SKIP
        >>> r.refused, r.switched  # doctest: +SKIP
        (False, True)
    """
    parsed = parse_gates(gate) if gate is not None else None
    if not models:
        raise UsageError("name at least one model", cli_hint="pass --model M")
    gated = PromotionGate(home, to, parsed, against, compare, dry_run)
    # The outgoing version is in each DeploymentChanged's from_version.
    checked = f"gates {gate.replace(' ', '')}" if gate is not None else "no gates"
    base = f" against {against}" if against is not None else ""
    reason = f"promotion to {to}{base} ({checked})"
    run = RollbackRun(
        bootstrap,
        topics,
        home,
        tuple(dict.fromkeys(models)),
        to,
        False,
        replace(options, reason=reason),
        progress,
    )
    result = run_stages(run, with_stage(gated, after=plan))
    return PromotionResult(
        to, gated.versions, gated.comparisons, gated.outcome, None if gated.refused else result
    )


@dataclass(frozen=True, slots=True)
class SwitchedBack:
    """One model switched back: from which pointer to which, and the event recording it."""

    model: str
    from_pointer: ServingPointer
    to_pointer: ServingPointer
    event_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "from_version": self.from_pointer.version,
            "from_artifact": self.from_pointer.artifact,
            "to_version": self.to_pointer.version,
            "to_artifact": self.to_pointer.artifact,
            "event_id": self.event_id,
        }


def switch_back(
    bootstrap: str,
    topics: Topics,
    home: Path,
    models: Sequence[str],
    *,
    actor: str = "ledger",
    reason: str = "switch-back",
) -> list[SwitchedBack]:
    """Point each model back at its previous serving artifact and record it in the log.

    1. Take every model's rollback lock (sorted order), so no rollback switches meanwhile.
    2. Check every model has an earlier artifact before switching any: all or none.
    3. Connect the producer, so an unreachable broker fails before any pointer moves.
    4. Switch each pointer (atomic; the artifact's checksums are verified first).
    5. Publish one ``DeploymentChanged`` per model, so the log's ``serving_now`` agrees.

    Example:
        >>> [s.to_pointer.version for s in switch_back(bs, Topics(), Path(".ledger"),
        ...                                           ["text-embedder"])]  # doctest: +SKIP
        ['v2']
    """
    if not models:
        raise UsageError("name at least one model", cli_hint="pass --model M")
    names = list(dict.fromkeys(models))
    with rollback_locks(home, names):
        finished = complete_pending_switch(home, set(names))
        if finished is None or finished.action != "switch-back":
            finished = _switched_back(bootstrap, topics, home, names, actor, reason)
        return _record_switch_back(bootstrap, topics, home, finished, actor, reason)


def _switched_back(
    bootstrap: str, topics: Topics, home: Path, names: Sequence[str], actor: str, reason: str
) -> PendingSwitch:
    """Steps 2-4: every model back on its previous artifact, as one set."""
    backs = {m: previous(home, m) for m in names}
    for model in names:
        if current(home, model) is None or backs[model] is None:
            raise ServingError(
                f"model {model!r} has no earlier serving artifact in {home} to switch back to",
                hint="rebuild the version with a rollback instead",
                cli_hint=f"rebuild the version instead: ledger rollback --model {model} --to V",
            )
    targets = {m: b.artifact_path(home) for m, b in backs.items() if b is not None}
    # keep what serving needs (e.g. the calibrated search_k); add the why/who
    infos = {m: {**b.info, "reason": reason, "actor": actor} for m, b in backs.items() if b}
    before = {m: current(home, m) for m in names}
    # Step 3 before 4: a broker that cannot be reached must not leave pointers switched
    # with the log not told (a rerun would then switch back again).
    with Producer(bootstrap=bootstrap, name=actor, topics=topics):
        switch_set(home, "switch-back", "the previous artifacts", targets, infos)
    return PendingSwitch("switch-back", "", "", {}, infos, before)


def _record_switch_back(
    bootstrap: str, topics: Topics, home: Path, done: PendingSwitch, actor: str, reason: str
) -> list[SwitchedBack]:
    """Step 5: one DeploymentChanged per model, except where the log already has it (a
    switch-back interrupted after some of its events)."""
    out = []
    with Producer(bootstrap=bootstrap, name=actor, topics=topics) as producer:
        for model, before in done.before.items():
            after = current(home, model)
            assert before is not None and after is not None  # noqa: S101 - both switched
            with open_views(home) as con:
                logged = latest_deployment(con, model)
            event_id = ""
            if logged != (after.version, after.artifact):
                event_id = producer.record_deployment(
                    model,
                    to_version=after.version,
                    from_version=before.version,
                    reason=reason,
                    actor=actor,
                    summary={
                        "artifact": after.artifact,
                        "switched_from_artifact": before.artifact,
                    },
                ).event_id
            out.append(SwitchedBack(model, before, after, event_id))
    return out
