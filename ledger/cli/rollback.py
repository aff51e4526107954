"""``ledger rollback``: plan, rebuild, verify and switch, as a thin layer over
:func:`ledger.ops.rollback.rollback`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from ledger.cli.context import Context, emit, json_option, pass_context
from ledger.cli.verify import recall_options
from ledger.ops.plan import DecisionPlan, EmbeddingPlan
from ledger.ops.rollback import Progress, RollbackPlan, RollbackResult, load_function, rollback


@contextmanager
def terminal_progress(enabled: bool) -> Iterator[Progress]:
    """A ``Progress`` callback drawing one click progress bar per phase (terminals only)."""
    bars: dict[str, Any] = {}
    shown: dict[str, int] = {}

    def update(phase: str, done: int, total: int) -> None:
        if not enabled or total <= 0:
            return
        if phase not in bars:
            for other in list(bars):  # a new phase closes the previous bars
                bars.pop(other).render_finish()
            bars[phase] = click.progressbar(length=total, label=f"{phase:<9}", file=sys.stderr)
            bars[phase].__enter__()
            shown[phase] = 0
        bar = bars[phase]
        bar.length = max(bar.length or 0, total)
        bar.update(done - shown[phase])
        shown[phase] = done

    try:
        yield update
    finally:
        for bar in bars.values():
            bar.render_finish()


def _sample(ids: tuple[str, ...], n: int = 5) -> str:
    more = f", ... (+{len(ids) - n})" if len(ids) > n else ""
    return ", ".join(ids[:n]) + more if ids else "-"


def print_plan(plan: RollbackPlan) -> None:
    """The plan as people read it."""
    partitions = len(plan.log_offsets)
    events = sum(plan.log_offsets.values())
    click.echo(
        f"Plan: roll back to {plan.to_version} at log position of {events} events "
        f"on {partitions} partitions"
    )
    for mp in plan.models:
        if isinstance(mp, EmbeddingPlan):
            click.echo(
                f"  {mp.model} (embedding, {mp.dimension}-d {mp.metric}; serving "
                f"{mp.serving_version or 'nothing'})"
            )
            click.echo(f"    live entities            {mp.live:>9}")
            click.echo(
                f"    with a {mp.to_version} embedding{' ' * max(0, 9 - len(mp.to_version))}"
                f"{mp.items:>9}  -> items to index"
            )
            click.echo(
                f"    gap (no {mp.to_version} embedding){' ' * max(0, 7 - len(mp.to_version))}"
                f"{len(mp.gap):>9}  {_sample(mp.gap)}"
            )
            click.echo(f"    stale (content changed)  {len(mp.stale):>9}  {_sample(mp.stale)}")
        elif isinstance(mp, DecisionPlan):
            click.echo(
                f"  {mp.model} (classifier; serving {mp.serving_version or 'nothing'}, "
                f"outgoing {mp.outgoing_version or '-'})"
            )
            click.echo(f"    subjects                 {mp.subjects:>9}")
            click.echo(f"    decisions to keep        {mp.keep:>9}")
            click.echo(
                f"    re-decide                {len(mp.redecide):>9}  {_sample(mp.redecide)}"
            )
            click.echo(
                f"    blast radius             {mp.blast_radius.num_rows:>9}  "
                f"decisions by {mp.outgoing_version or '-'} while serving that "
                f"{mp.to_version} decides differently"
            )
            for row in mp.blast_radius.slice(0, 3).to_pylist():
                click.echo(
                    f"      {row['subject_id']}: {row['outgoing_label']} -> "
                    f"{row['target_label']} at {row['decided_at']:%Y-%m-%d %H:%M:%S} "
                    f"by {row['decided_by']}"
                )
    click.echo(f"ETA {plan.eta_seconds:.1f}s (from measured rates)")


def confirmer(*, yes: bool, as_json: bool) -> Callable[[RollbackPlan], bool]:
    """The ``confirm`` callback of a switching command: show the plan, then ask (unless
    ``--yes``)."""

    def confirm(plan: RollbackPlan) -> bool:
        if not as_json:
            print_plan(plan)
        return yes or click.confirm("Rebuild, verify and switch?", default=False, err=True)

    return confirm


def print_outcome(result: RollbackResult, *, dry_run: bool) -> None:
    """What a rollback (or promotion) did, for people."""
    if dry_run:
        print_plan(result.plan)
        click.echo("Dry run: nothing was changed.")
    elif not result.switched:
        click.echo("Not confirmed: nothing was changed.")
    else:
        print_result(result)


def print_result(result: RollbackResult) -> None:
    for check in result.checks:
        mark = "ok  " if check.passed else "FAIL"
        click.echo(f"  {mark} {check.model} {check.name}: {check.detail}")
    for model, artifact in result.artifacts.items():
        click.echo(f"  {model} -> {artifact}")
    if result.switched:
        click.echo(
            f"Switched {', '.join(result.artifacts)} to {result.plan.to_version}; "
            f"reports in {result.report_dir}"
        )
    if result.warning:
        click.echo(f"warning: {result.warning}", err=True)


@click.command("rollback")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Model to roll back; repeat for several (e.g. embedder and classifier).",
)
@click.option("--to", "to", required=True, help="The version to serve.")
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--full-replay",
    is_flag=True,
    help="Rebuild from a replay of the whole log into a fresh store, not the views.",
)
@click.option(
    "--embedder",
    default=None,
    metavar="MODULE:FUNCTION",
    help="Embed gap and stale entities with V: fn(ids) -> (vectors, content_sha256s).",
)
@click.option(
    "--classifier",
    default=None,
    metavar="MODULE:FUNCTION",
    help="Re-decide subjects with V: fn(ids) -> [(label, score, input_sha256)].",
)
@click.option(
    "--reason", default="rollback", show_default=True, help="Recorded in DeploymentChanged."
)
@click.option("--actor", default="ledger-cli", show_default=True, help="Who runs it (recorded).")
@recall_options
@json_option
@pass_context
def rollback_cmd(
    c: Context,
    models: tuple[str, ...],
    to: str,
    dry_run: bool,
    yes: bool,
    full_replay: bool,
    embedder: str | None,
    classifier: str | None,
    reason: str,
    actor: str,
    recall_threshold: float,
    sample: int,
    search_k: int | None,
    as_json: bool,
) -> None:
    """Roll models back (or forward) to a version, rebuilt from the log.

    Catches the materialiser up, plans (gap, stale, re-decide, blast radius), rebuilds the
    index / decision table for the version, verifies them and switches serving atomically,
    then records a DeploymentChanged event.

    \b
    Example:
        ledger rollback --model text-embedder --model spam-filter --to v1 --dry-run
        ledger rollback --model text-embedder --model spam-filter --to v1 --yes
    """
    bootstrap = c.require_bootstrap()
    embed_fn = load_function(embedder) if embedder else None
    classify_fn = load_function(classifier) if classifier else None
    with terminal_progress(sys.stderr.isatty() and not as_json) as progress:
        result = rollback(
            bootstrap,
            c.topics,
            c.home,
            list(models),
            to=to,
            dry_run=dry_run,
            full_replay=full_replay,
            embedder=embed_fn,
            classifier=classify_fn,
            confirm=None if dry_run else confirmer(yes=yes, as_json=as_json),
            actor=actor,
            reason=reason,
            progress=progress,
            recall_threshold=recall_threshold,
            sample=sample,
            search_k=search_k,
        )
    if as_json:
        emit(result.summary(), as_json=True, human=click.echo)
    else:
        print_outcome(result, dry_run=dry_run)
