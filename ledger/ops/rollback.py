"""Rollback (and promotion) of one or more models to a version, rebuilt from the log.

:func:`rollback` runs these stages in order over one :class:`RollbackRun`, holding every
model's rollback lock throughout (sorted order, so two rollbacks of overlapping model sets
cannot deadlock):

1. **catch up** the materialiser to the log's end taken now, so the plan covers every event
   written before the rollback started (producers may go on writing);
2. **plan** from the views (:mod:`ledger.ops.plan`); a dry run stops here, changing nothing;
3. **gate**: ``options.confirm(plan)`` may decline (a person at a prompt); a promotion puts
   its comparison gate before it (:mod:`ledger.ops.promotion`);
4. **fill** what the log lacks for V with the user's hooks, *published as V events* (the log
   stays the source of truth), then catch up and plan again;
5. **build** the artifacts at the plan's log position (with ``full_replay``, from a replay of
   the whole log into a fresh store, for when the views are distrusted);
6. **verify** every artifact and the catch-up of step 1 (lag), write the report lists;
   nothing is switched unless every check passes;
7. **switch** every serving pointer (each atomic), connected to the broker first: an
   unreachable broker must fail the rollback while nothing is switched;
8. **announce** one ``DeploymentChanged`` per model with the plan's summary, then catch up
   once more so the views show the deployment. A crash between 7 and 8 leaves pointers
   switched and the log not told: running the rollback again is a no-op build, re-verifies,
   and publishes the events.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from consumers.lag import lag, true_ends
from ledger.artifacts.manifest import load_manifest
from ledger.checks.check import Check
from ledger.checks.lag import check_lag
from ledger.checks.recall import RecallSpec
from ledger.contract.events import Topics
from ledger.errors import ArtifactError, LedgerError, RollbackFailed, ServingError
from ledger.log.producer import Producer
from ledger.ops.build import build_artifacts, fill_gaps, write_reports
from ledger.ops.catchup import ensure_caught_up, replayed
from ledger.ops.kinds import Hooks, ModelPlan, Progress, no_progress
from ledger.ops.plan import RollbackPlan, make_plan
from ledger.ops.verify import check_artifact
from ledger.serving.journal import complete_pending_switch, switch_set
from ledger.serving.locks import rollback_locks
from ledger.serving.pointers import current
from ledger.store import Connection, open_views
from ledger.store.queries import latest_deployment


@dataclass(frozen=True, slots=True)
class RollbackOptions:
    """How a rollback runs, beyond which models and which version.

    ``recall.search_k`` is how the pre-switch recall check queries Annoy; by default it
    calibrates: the smallest search_k that reaches the threshold is recorded in the serving
    pointer, and serving and ``verify`` use it (Annoy's own default gives low recall for
    millions of items).
    """

    full_replay: bool = False
    hooks: Hooks = Hooks()
    recall: RecallSpec = RecallSpec()
    confirm: Callable[[RollbackPlan], bool] | None = None
    actor: str = "ledger"
    reason: str = "rollback"


DEFAULT_OPTIONS = RollbackOptions()


@dataclass(frozen=True, slots=True, eq=False)
class RollbackResult:
    """What a rollback did. ``switched`` is False for a dry run or a failed check."""

    plan: RollbackPlan
    artifacts: Mapping[str, str] = field(default_factory=dict)  # model -> folder under home
    checks: tuple[Check, ...] = ()
    switched: bool = False
    report_dir: str | None = None
    deployment_event_ids: tuple[str, ...] = ()
    warning: str | None = None  # e.g. switched, but the views lag behind the switch

    def summary(self) -> dict[str, Any]:
        return {
            **self.plan.summary(),
            "dry_run": not self.artifacts,
            "artifacts": dict(self.artifacts),
            "checks": [c.to_dict() for c in self.checks],
            "switched": self.switched,
            "report_dir": self.report_dir,
            "deployment_event_ids": list(self.deployment_event_ids),
            "warning": self.warning,
        }


@dataclass(slots=True, eq=False)
class RollbackRun:
    """The one state the stages pass along: what was asked, and what each stage found."""

    bootstrap: str
    topics: Topics
    home: Path
    models: tuple[str, ...]
    to: str
    dry_run: bool
    options: RollbackOptions
    progress: Progress
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    stopped: bool = False
    ends: Mapping[tuple[str, int], int] = field(default_factory=dict)
    lag_check: Check | None = None
    plan: RollbackPlan | None = None
    planned: dict[str, dict[str, Any]] = field(default_factory=dict)  # summaries before fill
    filled: int = 0
    source: Path | None = None  # the replayed store of a full replay
    artifacts: dict[str, Path] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    report: Path | None = None
    producer: Producer | None = None
    switched: bool = False
    event_ids: list[str] = field(default_factory=list)
    warning: str | None = None

    @property
    def the_plan(self) -> RollbackPlan:
        assert self.plan is not None, "the plan stage runs first"  # noqa: S101
        return self.plan

    def views(self) -> contextlib.AbstractContextManager[Connection]:
        """The views artifacts are built and checked on: exactly the planned log position
        (a running materialiser may have added events since), or the replayed store."""
        if self.source is not None:
            return open_views(self.source)
        return open_views(self.home, at=self.the_plan.log_offsets)

    def result(self) -> RollbackResult:
        home = self.home
        return RollbackResult(
            self.the_plan,
            {m: p.relative_to(home).as_posix() for m, p in self.artifacts.items()},
            tuple(self.checks),
            self.switched,
            self.report.relative_to(home).as_posix() if self.report else None,
            tuple(self.event_ids),
            warning=self.warning,
        )


Stage = Callable[[RollbackRun], None]


def _catch_up_to_now(run: RollbackRun) -> None:
    run.ends = true_ends(run.bootstrap, run.topics.all)
    ensure_caught_up(run.bootstrap, run.topics, run.home, progress=run.progress, ends=run.ends)


def catch_up(run: RollbackRun) -> None:
    """1. The views hold every event written before the rollback started (the lag check)."""
    _catch_up_to_now(run)
    run.lag_check = check_lag(lag(run.bootstrap, run.topics, run.home, ends=run.ends))


def plan(run: RollbackRun) -> None:
    """2. Plan; a dry run stops here."""
    with open_views(run.home) as con:
        run.plan = make_plan(run.home, con, run.models, to=run.to)
    run.planned = {mp.model: mp.summary() for mp in run.plan.models}
    run.stopped = run.dry_run


def gate(run: RollbackRun) -> None:
    """3. The caller's last word on the plan (e.g. a person at a prompt)."""
    confirm = run.options.confirm
    run.stopped = confirm is not None and not confirm(run.the_plan)


def fill(run: RollbackRun) -> None:
    """4. Publish V events for what the log lacks, then catch up and plan again."""
    if not run.options.hooks:
        return
    with Producer(bootstrap=run.bootstrap, name=run.options.actor, topics=run.topics) as producer:
        run.filled = fill_gaps(producer, run.the_plan, run.options.hooks)
    if run.filled:  # flushed: the new events are below the ends taken now
        _catch_up_to_now(run)
        with open_views(run.home) as con:
            run.plan = make_plan(run.home, con, run.models, to=run.to)


def _serving_already(run: RollbackRun, mp: ModelPlan) -> Path | None:
    """The artifact serving ``mp``'s model when it is what this build would produce: of
    the target version and built from the same events of the model's data topic (a rerun
    after a crash: the deployments it published moved only the models topic)."""
    try:
        pointer = current(run.home, mp.model)
    except ServingError:
        return None  # a torn pointer: the switch replaces it
    if pointer is None or pointer.version != run.to or run.options.full_replay:
        return None
    topic = mp.kind.data_topic(run.topics) + ":"
    try:
        built = load_manifest(pointer.artifact_path(run.home)).log_offsets
    except ArtifactError:
        return None
    wanted = run.the_plan.log_offsets
    same = {k: v for k, v in built.items() if k.startswith(topic)} == {
        k: v for k, v in wanted.items() if k.startswith(topic)
    }
    return pointer.artifact_path(run.home) if same else None


def build(run: RollbackRun) -> None:
    """5. Build every artifact at the plan's log position (or from a full replay); a
    model already served by exactly that artifact keeps it."""
    if run.options.full_replay:
        run.source = run.resources.enter_context(replayed(run.bootstrap, run.topics, run.progress))
        with run.views() as con:
            run.plan = make_plan(run.home, con, run.models, to=run.to)
    plan = run.the_plan
    kept = {mp.model: p for mp in plan.models if (p := _serving_already(run, mp))}
    todo = replace(plan, models=tuple(m for m in plan.models if m.model not in kept))
    with run.views() as con:
        built = build_artifacts(run.home, con, todo, progress=run.progress)
    run.artifacts = {mp.model: kept.get(mp.model) or built[mp.model] for mp in plan.models}


def verify(run: RollbackRun) -> None:
    """6. Check every artifact and the catch-up; nothing is switched unless all pass."""
    models = run.the_plan.models
    with run.views() as con:
        for i, mp in enumerate(models):
            run.progress("verify", i, len(models))
            run.checks += check_artifact(
                con,
                mp.kind,
                mp.model,
                mp.to_version,
                run.artifacts[mp.model],
                recall=run.options.recall,
            )
    if run.lag_check is not None:
        run.checks.append(run.lag_check)
    run.progress("verify", len(models), len(models))
    run.report = write_reports(run.home, run.the_plan)
    failed = [c for c in run.checks if not c.passed]
    if failed:
        raise RollbackFailed(
            f"{len(failed)} check(s) failed, nothing was switched: "
            + "; ".join(f"{c.model} {c.name}: {c.detail}" for c in failed)
        )


def _serving_info(run: RollbackRun, model: str) -> dict[str, Any]:
    info: dict[str, Any] = {"reason": run.options.reason, "actor": run.options.actor}
    # The search_k the recall check found (or was given) is what serving must query with.
    for check in run.checks:
        if check.model == model and check.name == "recall" and "search_k" in check.figures:
            info["search_k"] = int(check.figures["search_k"])
    return info


def switch_pointers(run: RollbackRun) -> None:
    """7. Connect to the broker, then switch every pointer as one set (a journal makes a
    crash between two models' pointers finish on the next run, and verify reports it)."""
    run.producer = run.resources.enter_context(
        Producer(bootstrap=run.bootstrap, name=run.options.actor, topics=run.topics)
    )
    models = run.the_plan.models
    run.progress("switch", 0, len(models))
    infos = {mp.model: _serving_info(run, mp.model) for mp in models}
    switch_set(run.home, "rollback", run.to, run.artifacts, infos)
    run.switched = True
    run.progress("switch", len(models), len(models))


def _deployment_summary(run: RollbackRun, summary: dict[str, Any]) -> dict[str, str]:
    model = summary["model"]
    flat = {k: str(v) for k, v in summary.items()}
    if run.filled:  # the log should say what the rollback had to fill, not just "0 left"
        for key in ("gap", "stale", "redecide"):
            if key in run.planned[model]:
                flat[f"{key}_before_fill"] = str(run.planned[model][key])
        flat["filled_events"] = str(run.filled)
    flat["artifact"] = run.artifacts[model].relative_to(run.home).as_posix()
    flat["log_offsets"] = json.dumps(dict(run.the_plan.log_offsets), sort_keys=True)
    return flat


def announce(run: RollbackRun) -> None:
    """8. One DeploymentChanged per model (none where the log already records this very
    deployment: a rerun after a crash), then the views catch up with them."""
    assert run.producer is not None, "the switch stage connects the producer"  # noqa: S101
    with open_views(run.home) as con:
        logged = {mp.model: latest_deployment(con, mp.model) for mp in run.the_plan.models}
    for mp in run.the_plan.models:
        artifact = run.artifacts[mp.model].relative_to(run.home).as_posix()
        if logged[mp.model] == (run.to, artifact):
            continue
        event = run.producer.record_deployment(
            mp.model,
            to_version=run.to,
            from_version=mp.serving_version,
            reason=run.options.reason,
            actor=run.options.actor,
            summary=_deployment_summary(run, mp.summary()),
        )
        run.event_ids.append(event.event_id)
    run.producer.flush()
    # The switch has happened, so a failure here is a warning on the result, not a failed
    # rollback; up to the ends taken now: producers may keep writing.
    try:
        _catch_up_to_now(run)
    except LedgerError as exc:
        run.warning = f"switched, but the views are not caught up yet ({exc}); materialise the log"


STAGES: tuple[Stage, ...] = (
    catch_up,
    plan,
    gate,
    fill,
    build,
    verify,
    switch_pointers,
    announce,
)


def with_stage(stage: Stage, *, after: Stage) -> tuple[Stage, ...]:
    """The rollback's stages with ``stage`` run right after ``after``."""
    i = STAGES.index(after) + 1
    return (*STAGES[:i], stage, *STAGES[i:])


def run_stages(run: RollbackRun, stages: Sequence[Stage] = STAGES) -> RollbackResult:
    """Run ``stages`` in order under every model's rollback lock, until one stops the run."""
    run.home.mkdir(parents=True, exist_ok=True)
    with rollback_locks(run.home, run.models), run.resources:
        # A set switch a crash interrupted is finished first (its targets passed their
        # checks); one naming models outside this run is refused with what to run.
        complete_pending_switch(run.home, set(run.models))
        for stage in stages:
            stage(run)
            if run.stopped:
                break
        return run.result()


def rollback(
    bootstrap: str,
    topics: Topics,
    home: Path,
    models: Sequence[str],
    *,
    to: str,
    dry_run: bool = True,
    options: RollbackOptions = DEFAULT_OPTIONS,
    progress: Progress = no_progress,
) -> RollbackResult:
    """Roll ``models`` back (or forward) to version ``to``; see the module docstring.

    Example:
        >>> r = rollback(bs, Topics(), Path(".ledger"), ["text-embedder"], to="v1",
        ...              dry_run=False)  # doctest: +SKIP
        >>> r.switched  # doctest: +SKIP
        True
    """
    run = RollbackRun(
        bootstrap, topics, home, tuple(dict.fromkeys(models)), to, dry_run, options, progress
    )
    return run_stages(run)
