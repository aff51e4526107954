"""``ledger verify``: check what serves now, as a thin layer over
:func:`ledger.ops.verify.verify`.
"""

from __future__ import annotations

import sys

import click

from ledger.checks.recall import RecallSpec, SearchK
from ledger.cli.context import Context, emit, json_option, pass_context, recall_options
from ledger.ops.kinds import kind_named
from ledger.ops.verify import VerifyReport, verify


def print_report(report: VerifyReport) -> None:
    """One line per check with its figures, then the mixed state, then the verdict."""
    for model, s in report.serving.items():
        click.echo(f"{model}: serving {s['version']} ({s['kind']}) from {s['artifact']}")
    for check in report.checks:
        mark = "ok  " if check.passed else "FAIL"
        click.echo(f"  {mark} {check.model} {check.name}: {check.detail}")
        if not check.passed and check.cli_hint:
            click.echo(f"       run: {check.cli_hint}")
    for m in report.mixed:
        what = kind_named(m.kind).latest
        whose = ", ".join(f"{v} {n}" for v, n in m.by_version.items()) or "-"
        shadow = f", {m.shadow_only} with shadow writes only" if m.shadow_only else ""
        click.echo(
            f"  mixed state {m.model}: {m.mixed} of {m.total} {what} is not "
            f"{m.serving_version} (by version: {whose}{shadow})"
        )
    failed = sum(not c.passed for c in report.checks)
    click.echo("verify: all checks passed" if not failed else f"verify: {failed} check(s) FAILED")


@click.command("verify")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Model whose serving artifact to verify; repeat for several.",
)
@recall_options(default=SearchK.serving())
@click.option(
    "--fail-on-mixed",
    is_flag=True,
    help="Also fail when live entities' latest served vectors (or decisions) are not all "
    "from the serving version (by default the mixed state is a figure only).",
)
@click.option(
    "--offline",
    is_flag=True,
    help="No broker: leave out the lag check (e.g. the demo's home after its broker is gone).",
)
@json_option
@pass_context
def verify_cmd(
    c: Context,
    models: tuple[str, ...],
    recall: RecallSpec,
    fail_on_mixed: bool,
    offline: bool,
    as_json: bool,
) -> None:
    """Verify what serves: checksum, position, count, purity, recall, decisions, lag.

    Also reports the mixed state: how many live entities' latest (non-shadow) embedding is
    not from the serving version. Exit 0 when every check passes, 1 when one fails, 2 when
    verify could not run (no broker, nothing serving, unreadable state).

    \b
    Example:
        ledger verify --model text-embedder --model spam-filter
        ledger verify --model text-embedder --recall-threshold 0.95 --sample 500 --json
        ledger verify --model text-embedder --offline
    """
    report = verify(
        None if offline else c.require_bootstrap(),
        c.topics,
        c.home,
        list(models),
        recall=recall,
        fail_on_mixed=fail_on_mixed,
    )
    emit(report.summary(), as_json=as_json, human=lambda _: print_report(report))
    if not report.passed:
        sys.exit(1)
