"""``ledger rollback``: plan, rebuild, verify and switch, as a thin layer over
:func:`ledger.ops.rollback.rollback`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from ledger.checks.recall import RecallSpec, SearchK
from ledger.cli.context import Context, emit, json_option, pass_context, recall_options
from ledger.ops.kinds import Hooks, Progress
from ledger.ops.plan import RollbackPlan
from ledger.ops.rollback import RollbackOptions, RollbackResult, rollback


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


def print_plan(plan: RollbackPlan) -> None:
    """The plan as people read it."""
    for line in plan.console_lines():
        click.echo(line)


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
@recall_options(default=SearchK.calibrate())
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
    recall: RecallSpec,
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
    options = RollbackOptions(
        full_replay=full_replay,
        hooks=Hooks.load(embedder=embedder, classifier=classifier),
        recall=recall,
        confirm=None if dry_run else confirmer(yes=yes, as_json=as_json),
        actor=actor,
        reason=reason,
    )
    with terminal_progress(sys.stderr.isatty() and not as_json) as progress:
        result = rollback(
            bootstrap,
            c.topics,
            c.home,
            list(models),
            to=to,
            dry_run=dry_run,
            options=options,
            progress=progress,
        )
    if as_json:
        emit(result.summary(), as_json=True, human=click.echo)
    else:
        print_outcome(result, dry_run=dry_run)
