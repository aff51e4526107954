"""``ledger verify``: check what serves now, as a thin layer over
:func:`ledger.checks.verify.verify`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from ledger.checks.artifact import DEFAULT_RECALL_THRESHOLD, DEFAULT_SAMPLE
from ledger.checks.verify import VerifyReport, verify
from ledger.cli.context import Context, emit, json_option, pass_context


def print_report(report: VerifyReport) -> None:
    """One line per check with its figures, then the mixed state, then the verdict."""
    for model, s in report.serving.items():
        click.echo(f"{model}: serving {s['version']} ({s['kind']}) from {s['artifact']}")
    for check in report.checks:
        mark = "ok  " if check.passed else "FAIL"
        click.echo(f"  {mark} {check.model} {check.name}: {check.detail}")
    for m in report.mixed:
        what = (
            "live entities' latest vector" if m.kind == "embedding" else "subjects' latest decision"
        )
        whose = ", ".join(f"{v} {n}" for v, n in m.by_version.items()) or "-"
        shadow = f", {m.shadow_only} with shadow writes only" if m.shadow_only else ""
        click.echo(
            f"  mixed state {m.model}: {m.mixed} of {m.total} {what} is not "
            f"{m.serving_version} (by version: {whose}{shadow})"
        )
    failed = sum(not c.passed for c in report.checks)
    click.echo("verify: all checks passed" if not failed else f"verify: {failed} check(s) FAILED")


def recall_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--recall-threshold``, ``--sample`` and ``--search-k``: the recall check's knobs,
    shared by ``verify`` and ``rollback`` (which runs the same checks before it switches)."""
    for option in reversed(_RECALL_OPTIONS):
        command = option(command)
    return command


_RECALL_OPTIONS = [
    click.option(
        "--recall-threshold",
        type=click.FloatRange(0.0, 1.0),
        default=DEFAULT_RECALL_THRESHOLD,
        show_default=True,
        help="Lowest acceptable recall@10 of the index against exact search.",
    ),
    click.option(
        "--sample",
        type=click.IntRange(1),
        default=DEFAULT_SAMPLE,
        show_default=True,
        help="Sampled queries for the recall check.",
    ),
    click.option(
        "--search-k",
        type=int,
        default=None,
        help="Annoy search_k for the recall queries (-1: Annoy's trees x k). Default: "
        "rollback calibrates the smallest one meeting the threshold and records it for "
        "serving; verify uses the recorded one.",
    ),
]


@click.command("verify")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Model whose serving artifact to verify; repeat for several.",
)
@recall_options
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
    recall_threshold: float,
    sample: int,
    search_k: int | None,
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
        recall_threshold=recall_threshold,
        sample=sample,
        search_k=search_k,
        fail_on_mixed=fail_on_mixed,
    )
    emit(report.summary(), as_json=as_json, human=lambda _: print_report(report))
    if not report.passed:
        sys.exit(1)
