"""Rollback (and promotion) of one or more models to a version, rebuilt from the log.

The protocol, for ``rollback(models, to=V)``:

1. Lock every model (one rollback per model at a time; sorted order, so two rollbacks
   of overlapping model sets cannot deadlock).
2. Catch the materialiser up to the true end of the log, so the plan covers every event
   written before the rollback started. With ``full_replay`` the whole log is instead
   replayed from offset 0 into a fresh temporary store (for when the views are distrusted).
3. Plan from the views (:mod:`ledger.ops.plan`); a dry run stops here and changes nothing.
4. Optionally fill the gap: the user's embedder/classifier is called on the gap, stale and
   re-decide ids; its results are *published as V events* (the log stays the source of
   truth), materialised, and the plan is made again.
5. Build the artifacts at the plan's log position: an Annoy index per embedding model, a
   decision table per classifier, and the report files (gap, stale, re-decide, blast radius).
6. Verify every artifact (:mod:`ledger.checks.verify`: checksum, count, purity, recall, decisions)
   and that step 2 materialised every event written before the rollback started (lag);
   nothing is switched unless all checks pass.
7. Switch all serving pointers (each atomic), then publish one ``DeploymentChanged`` per
   model with the plan's summary. A crash between 7's steps leaves pointers switched and
   the log not told: running the rollback again is a no-op build, re-verifies, and
   publishes the events.
8. Catch up once more, so the views show the deployment right away.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from consumers.lag import lag, true_ends, wait_caught_up
from consumers.materialiser import catch_up
from ledger.artifacts.decision_table import build_decision_table
from ledger.artifacts.index_build import DEFAULT_TREES, build_index
from ledger.artifacts.manifest import path_part
from ledger.checks.artifact import DEFAULT_RECALL_THRESHOLD, DEFAULT_SAMPLE, verify_artifact_for
from ledger.checks.check import Check
from ledger.checks.verify import check_lag
from ledger.contract.events import Topics
from ledger.errors import ContractError, LedgerError, RollbackFailed, ShardBusy
from ledger.log.producer import Producer
from ledger.ops.plan import DecisionPlan, EmbeddingPlan, ModelPlan, plan_model
from ledger.serving.locks import rollback_locks
from ledger.serving.pointers import ARTIFACTS_DIR, switch
from ledger.store import Connection, arrow, busy_shards, open_views, vector_matrix
from ledger.store.queries import DECISIONS_SQL, ITEMS_SQL, log_offsets

#: ``progress(phase, done, total)``; phases: catch-up, plan, load, build, verify, switch.
Progress = Callable[[str, int, int], None]


REPORTS_DIR = "reports"
RATES_FILE = "rates.json"
# Fallback rates until this home has measured its own (BENCHMARKS.md, 2 cores): loading
# vectors from the views in items/s, and building Annoy in (items x dimension x trees)/s,
# since build time grows with all three.
DEFAULT_RATES = {"load": 100_000.0, "build": 3.0e8}


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


def _rates(home: Path) -> dict[str, float]:
    try:
        measured = json.loads((home / RATES_FILE).read_text())
        return {k: float(measured.get(k, v)) for k, v in DEFAULT_RATES.items()}
    except (OSError, ValueError, AttributeError):
        return dict(DEFAULT_RATES)


def _record_rate(home: Path, name: str, amount: float, seconds: float, *, items: int) -> None:
    if items < 10_000 or seconds <= 0:
        return  # small runs measure process start-up more than the work: keep the old rate
    rates = _rates(home)
    rates[name] = amount / seconds
    (home / RATES_FILE).write_text(json.dumps(rates, indent=2))


def _eta(home: Path, models: Sequence[ModelPlan]) -> float:
    rates = _rates(home)
    embeddings = [m for m in models if isinstance(m, EmbeddingPlan)]
    items = sum(m.items for m in embeddings)
    work = sum(m.items * m.dimension * DEFAULT_TREES for m in embeddings)
    return items / rates["load"] + work / rates["build"]


def make_plan(home: Path, con: Connection, models: Sequence[str], *, to: str) -> RollbackPlan:
    """Plan a rollback of ``models`` to ``to`` from the views on ``con``."""
    if not models:
        raise ContractError("name at least one model (--model)", field="model")
    plans = tuple(plan_model(con, m, to) for m in dict.fromkeys(models))
    return RollbackPlan(to, plans, log_offsets(con), _eta(home, plans))


def no_progress(_phase: str, _done: int, _total: int) -> None:
    """The default ``Progress``: report nothing."""


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
def _replayed(bootstrap: str, topics: Topics, progress: Progress) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="ledger-replay-"))
    try:
        catch_up(bootstrap, topics, tmp, shard="replay", progress=_phase(progress, "replay"))
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_function(spec: str) -> Callable[..., Any]:
    """Import ``module:function`` (the ``--embedder`` / ``--classifier`` hooks)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ContractError(f"expected module:function, got {spec!r}", field="hook", got=spec)
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ContractError(f"cannot import {spec}: {exc}", field="hook", got=spec) from exc
    if not callable(fn):
        raise ContractError(f"{spec} is not callable", field="hook", got=spec)
    return fn  # type: ignore[no-any-return]


def fill_gaps(
    producer: Producer,
    plan: RollbackPlan,
    *,
    embedder: Callable[[list[str]], tuple[Any, Sequence[str]]] | None,
    classifier: Callable[[list[str]], Sequence[tuple[str, float, str]]] | None,
    batch: int = 1024,
) -> int:
    """Publish V events for the plan's gap/stale entities and re-decide subjects; the count.

    ``embedder(ids) -> (vectors (n, d), content_sha256s)``;
    ``classifier(ids) -> [(label, score, input_sha256), ...]``.
    """
    sent = 0
    for mp in plan.models:
        if isinstance(mp, EmbeddingPlan) and embedder is not None:
            todo = sorted(set(mp.gap) | set(mp.stale))
            for i in range(0, len(todo), batch):
                ids = todo[i : i + batch]
                vectors, hashes = embedder(ids)
                producer.write_embeddings(
                    mp.model, mp.to_version, ids, vectors, content_sha256s=hashes
                )
                sent += len(ids)
        elif isinstance(mp, DecisionPlan) and classifier is not None:
            todo = list(mp.redecide)
            for i in range(0, len(todo), batch):
                ids = todo[i : i + batch]
                for subject, (label, score, sha) in zip(ids, classifier(ids), strict=True):
                    producer.record_decision(
                        mp.model, mp.to_version, subject, label, score=score, input_sha256=sha
                    )
                sent += len(ids)
    producer.flush()
    return sent


def build_artifacts(
    home: Path,
    con: Any,
    plan: RollbackPlan,
    *,
    artifacts_root: Path | None = None,
    progress: Progress = no_progress,
) -> dict[str, Path]:
    """Build every model's artifact at the plan's log position; model -> artifact folder."""
    root = artifacts_root or home / ARTIFACTS_DIR
    out: dict[str, Path] = {}
    for mp in plan.models:
        params = {"model": mp.model, "version": mp.to_version}
        if isinstance(mp, EmbeddingPlan):
            started = time.perf_counter()
            progress("load", 0, mp.items)
            table = arrow(con, ITEMS_SQL, **params)
            vectors = vector_matrix(table, mp.dimension)
            progress("load", mp.items, mp.items)
            _record_rate(home, "load", mp.items, time.perf_counter() - started, items=mp.items)
            started = time.perf_counter()
            progress("build", 0, mp.items)
            manifest = build_index(
                root,
                model=mp.model,
                version=mp.to_version,
                entity_ids=table.column("entity_id").to_pylist(),
                vectors=vectors,
                metric=mp.metric,
                log_offsets=plan.log_offsets,
            )
            progress("build", mp.items, mp.items)
            work = mp.items * mp.dimension * manifest.trees
            _record_rate(home, "build", work, time.perf_counter() - started, items=mp.items)
            out[mp.model] = root / str(manifest.relative_path)
        else:
            table = arrow(con, DECISIONS_SQL, **params)
            manifest = build_decision_table(
                root,
                model=mp.model,
                version=mp.to_version,
                table=table,
                log_offsets=plan.log_offsets,
            )
            out[mp.model] = root / str(manifest.relative_path)
    return out


def _serving_params(checks: Sequence[Check], model: str) -> dict[str, Any]:
    # The search_k the recall check found (or was given) is what serving must query with.
    for check in checks:
        if check.model == model and check.name == "recall" and "search_k" in check.figures:
            return {"search_k": int(check.figures["search_k"])}
    return {}


def write_reports(home: Path, plan: RollbackPlan) -> Path:
    """Gap, stale, re-decide and blast-radius lists as Parquet + CSV; the report folder."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = home / REPORTS_DIR / f"{stamp}-to-{path_part(plan.to_version)}"
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, table: pa.Table) -> None:
        pq.write_table(table, folder / f"{name}.parquet")
        pacsv.write_csv(table, folder / f"{name}.csv")

    for mp in plan.models:
        model = path_part(mp.model)  # a model name is not a safe file name ("team/emb")
        if isinstance(mp, EmbeddingPlan):
            write(f"{model}.gap", pa.table({"entity_id": pa.array(mp.gap, pa.string())}))
            write(f"{model}.stale", pa.table({"entity_id": pa.array(mp.stale, pa.string())}))
        else:
            write(f"{model}.redecide", pa.table({"subject_id": pa.array(mp.redecide, pa.string())}))
            write(f"{model}.blast_radius", mp.blast_radius)
    (folder / "plan.json").write_text(json.dumps(plan.summary(), indent=2, default=str))
    return folder


def rollback(
    bootstrap: str,
    topics: Topics,
    home: Path,
    models: Sequence[str],
    *,
    to: str,
    dry_run: bool = True,
    full_replay: bool = False,
    embedder: Callable[[list[str]], tuple[Any, Sequence[str]]] | None = None,
    classifier: Callable[[list[str]], Sequence[tuple[str, float, str]]] | None = None,
    confirm: Callable[[RollbackPlan], bool] | None = None,
    actor: str = "ledger",
    reason: str = "rollback",
    progress: Progress = no_progress,
    recall_threshold: float = DEFAULT_RECALL_THRESHOLD,
    sample: int = DEFAULT_SAMPLE,
    search_k: int | None = None,
) -> RollbackResult:
    """Roll ``models`` back (or forward) to version ``to``; see the module docstring.

    ``recall_threshold``, ``sample`` and ``search_k`` configure the recall check (as
    ``ledger verify``). ``search_k=None`` calibrates it: the smallest Annoy search_k that
    reaches the threshold is recorded in the serving pointer, and serving
    (:func:`ledger.serving.pointers.open_index`) and ``ledger verify`` use it. Annoy's default
    (trees x k) gives low recall for millions of items.

    Example:
        >>> r = rollback(bs, Topics(), Path(".ledger"), ["text-embedder"], to="v1",
        ...              dry_run=False)  # doctest: +SKIP
        >>> r.switched  # doctest: +SKIP
        True
    """
    home.mkdir(parents=True, exist_ok=True)
    with rollback_locks(home, models):
        # The log's end before catching up: the lag check asks whether the catch-up got
        # everything written before the rollback started (producers may go on writing).
        ends = true_ends(bootstrap, topics.all)
        ensure_caught_up(bootstrap, topics, home, progress=progress, ends=ends)
        lag_check = check_lag(lag(bootstrap, topics, home, ends=ends))
        with open_views(home) as con:
            plan = make_plan(home, con, models, to=to)
        if dry_run or (confirm is not None and not confirm(plan)):
            return RollbackResult(plan)
        planned = {mp.model: mp.summary() for mp in plan.models}  # before any gap is filled
        filled = 0
        if embedder is not None or classifier is not None:
            with Producer(bootstrap=bootstrap, name=actor, topics=topics) as producer:
                filled = fill_gaps(producer, plan, embedder=embedder, classifier=classifier)
                if filled:  # flushed: the new events are below the ends taken now
                    ends = true_ends(bootstrap, topics.all)
                    ensure_caught_up(bootstrap, topics, home, progress=progress, ends=ends)
                    with open_views(home) as con:
                        plan = make_plan(home, con, models, to=to)
        with contextlib.ExitStack() as stack:
            if full_replay:
                source = stack.enter_context(_replayed(bootstrap, topics, progress))
                con = stack.enter_context(open_views(source))
                plan = make_plan(home, con, models, to=to)
            else:
                # Build exactly what was planned: a running materialiser may have added
                # events since, and the artifact must match the log position it records.
                con = stack.enter_context(open_views(home, at=plan.log_offsets))
            artifacts = build_artifacts(home, con, plan, progress=progress)
            checks: list[Check] = []
            for i, mp in enumerate(plan.models):
                progress("verify", i, len(plan.models))
                checks.extend(
                    verify_artifact_for(
                        con,
                        mp,
                        artifacts[mp.model],
                        recall_threshold=recall_threshold,
                        sample=sample,
                        search_k=search_k,
                    )
                )
            checks.append(lag_check)
            progress("verify", len(plan.models), len(plan.models))
        report = write_reports(home, plan).relative_to(home).as_posix()
        relative = {m: p.relative_to(home).as_posix() for m, p in artifacts.items()}
        if not all(c.passed for c in checks):
            failed = [c for c in checks if not c.passed]
            raise RollbackFailed(
                f"{len(failed)} check(s) failed, nothing was switched: "
                + "; ".join(f"{c.model} {c.name}: {c.detail}" for c in failed)
            )
        summary = plan.summary()
        event_ids = []
        # Connect before the first pointer moves: an unreachable broker must fail the
        # rollback while nothing is switched, not leave pointers switched and the log untold.
        with Producer(bootstrap=bootstrap, name=actor, topics=topics) as producer:
            for i, mp in enumerate(plan.models):
                progress("switch", i, len(plan.models))
                info: dict[str, Any] = {"reason": reason, "actor": actor}
                info.update(_serving_params(checks, mp.model))
                switch(home, mp.model, artifacts[mp.model], info=info)
            progress("switch", len(plan.models), len(plan.models))
            for mp in plan.models:
                flat = {k: str(v) for k, v in mp.summary().items()}
                if filled:  # the log should say what the rollback had to fill, not just "0 left"
                    for key in ("gap", "stale", "redecide"):
                        if key in planned[mp.model]:
                            flat[f"{key}_before_fill"] = str(planned[mp.model][key])
                    flat["filled_events"] = str(filled)
                flat["artifact"] = relative[mp.model]
                flat["log_offsets"] = json.dumps(summary["log_offsets"], sort_keys=True)
                event = producer.record_deployment(
                    mp.model,
                    to_version=to,
                    from_version=mp.serving_version,
                    reason=reason,
                    actor=actor,
                    summary=flat,
                )
                event_ids.append(event.event_id)
        # 8. Materialise the DeploymentChanged events too, so the views (serving history)
        #    and `ledger verify` (lag) agree with the switch as soon as this returns. Up
        #    to the ends taken now: producers may keep writing. The switch has happened,
        #    so a failure here is a warning on the result, not a failed rollback.
        warning = None
        try:
            ends = true_ends(bootstrap, topics.all)
            ensure_caught_up(bootstrap, topics, home, progress=progress, ends=ends)
        except LedgerError as exc:
            warning = f"switched, but the views are not caught up yet ({exc}); run `ledger consume`"
        return RollbackResult(
            plan, relative, tuple(checks), True, report, tuple(event_ids), warning=warning
        )
