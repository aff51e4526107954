"""``ledger compare``, ``promote``, ``runbook`` and ``switch-back``: thin layers over
:mod:`ledger.ops.compare`, :mod:`ledger.ops.promotion` and :mod:`ledger.ops.runbook`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ledger.cli.context import Context, emit, json_option, pass_context
from ledger.cli.rollback import confirmer, print_outcome, terminal_progress

if TYPE_CHECKING:  # imported when a command runs: every `ledger` start pays for imports here
    from ledger.ops.compare import GateOutcome, VersionComparison

_models_option = click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Model to compare; repeat for several (e.g. embedder and classifier).",
)
_gate_option = click.option(
    "--gate",
    default=None,
    metavar="SPEC",
    help="Checks that must hold, e.g. 'agreement>=0.95,overlap>=0.6' "
    "(metrics: agreement, overlap, coverage_a, coverage_b).",
)
_k_option = click.option(
    "--k",
    "k",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Neighbours per sampled entity.",
)
_sample_option = click.option(
    "--sample",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Entities sampled for the neighbour overlap (exact search per version).",
)
_seed_option = click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the sample."
)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_comparison(comparison: VersionComparison) -> None:
    """A comparison as people read it."""
    a, b = comparison.version_a, comparison.version_b
    for model, c in comparison.models.items():
        cov = c.coverage
        click.echo(
            f"{model}: {a} vs {b}  both {cov.both}, only {a} {cov.only_a}, only {b} "
            f"{cov.only_b}  coverage_a {_fmt(cov.coverage_a)} coverage_b {_fmt(cov.coverage_b)}"
        )
        for line in c.console_lines(a, b):
            click.echo(line)


def print_gates(outcome: GateOutcome) -> None:
    for r in outcome.results:
        mark = "pass" if r.result.passed else "FAIL"
        value = "not measured" if r.result.value is None else f"{r.result.value:.4f}"
        click.echo(f"  {mark} {r.result.gate} on {r.model or 'no model measures it'}: {value}")


@click.command("compare")
@_models_option
@click.argument("version_a")
@click.argument("version_b")
@_gate_option
@_k_option
@_sample_option
@_seed_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the flipped subjects (Parquet + CSV); "
    "default <home>/reports/<stamp>-compare-A-vs-B.",
)
@json_option
@pass_context
def compare_cmd(
    c: Context,
    models: tuple[str, ...],
    version_a: str,
    version_b: str,
    gate: str | None,
    k: int,
    sample: int,
    seed: int,
    out: Path | None,
    as_json: bool,
) -> None:
    """Compare two versions of models on the log's data; exit 1 when a gate fails.

    Embedding models: neighbour overlap@k of sampled entities embedded by both (exact
    search per version). Classifiers: label agreement, confusion matrix and the flipped
    subjects (written as Parquet + CSV). Both: coverage of each version.

    \b
    Example:
        ledger compare --model text-embedder --model spam-filter v1 v2 \\
            --gate 'agreement>=0.95,overlap>=0.6'
    """
    from ledger.ops.compare import compare_log
    from ledger.ops.metrics import ComparisonSpec

    report = compare_log(
        c.require_bootstrap(),
        c.topics,
        c.home,
        list(models),
        version_a,
        version_b,
        gate=gate,
        spec=ComparisonSpec(k=k, sample=sample, seed=seed),
        out=out,
    )

    def human(_: Any) -> None:
        print_comparison(report.comparison)
        for p in report.files:
            click.echo(f"flipped subjects: {p}")
        if report.gates is not None:
            click.echo("gates:")
            print_gates(report.gates)

    emit(report.to_dict(), as_json=as_json, human=human)
    if report.gates is not None and not report.gates.passed:
        sys.exit(1)


@click.command("promote")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Model to promote; repeat for several (e.g. embedder and classifier).",
)
@click.option("--to", "to", required=True, help="The candidate version to serve.")
@_gate_option
@click.option(
    "--against",
    default=None,
    metavar="VERSION",
    help="Compare the candidate with this version (default: the version serving each model).",
)
@click.option("--dry-run", is_flag=True, help="Compare, check the gates and plan; switch nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_k_option
@_sample_option
@_seed_option
@click.option("--actor", default="ledger-cli", show_default=True, help="Who runs it (recorded).")
@json_option
@pass_context
def promote_cmd(
    c: Context,
    models: tuple[str, ...],
    to: str,
    gate: str | None,
    against: str | None,
    dry_run: bool,
    yes: bool,
    k: int,
    sample: int,
    seed: int,
    actor: str,
    as_json: bool,
) -> None:
    """Promote models to a candidate version, only if it passes the gates.

    Compares the candidate with the serving version (as `ledger compare` does); a failed
    gate exits 1 and switches nothing. Otherwise rebuilds, verifies and switches exactly
    like `ledger rollback`, recording a DeploymentChanged with reason "promotion ...".

    \b
    Example:
        ledger promote --model text-embedder --model spam-filter --to v3 \\
            --gate 'agreement>=0.95,overlap>=0.6' --yes
    """
    from ledger.ops.metrics import ComparisonSpec
    from ledger.ops.promotion import promote
    from ledger.ops.rollback import RollbackOptions

    bootstrap = c.require_bootstrap()
    options = RollbackOptions(
        confirm=None if dry_run else confirmer(yes=yes, as_json=as_json), actor=actor
    )
    with terminal_progress(sys.stderr.isatty() and not as_json) as progress:
        result = promote(
            bootstrap,
            c.topics,
            c.home,
            list(models),
            to=to,
            gate=gate,
            against=against,
            dry_run=dry_run,
            compare=ComparisonSpec(k=k, sample=sample, seed=seed),
            options=options,
            progress=progress,
        )
    if as_json:
        emit(result.summary(), as_json=True, human=click.echo)
    else:
        for comparison in result.comparisons:
            print_comparison(comparison)
        if result.gates is not None:
            click.echo("gates:")
            print_gates(result.gates)
        if result.refused:
            assert result.gates is not None  # noqa: S101 - refused implies gates
            click.echo(f"Refused: {result.gates.describe_failures()}. Nothing was switched.")
        elif result.rollback is not None:
            print_outcome(result.rollback, dry_run=dry_run)
    if result.refused:
        sys.exit(1)


@click.command("runbook")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Model to roll; repeat for several (e.g. embedder and classifier).",
)
@click.option("--to", "to", required=True, help="The version to serve.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the Markdown here (default: standard output).",
)
@click.option(
    "--top",
    type=click.IntRange(0),
    default=10,
    show_default=True,
    help="Blast-radius subjects to list per classifier.",
)
@json_option
@pass_context
def runbook_cmd(
    c: Context, models: tuple[str, ...], to: str, out: Path | None, top: int, as_json: bool
) -> None:
    """Write a Markdown runbook for rolling models to a version, from live data.

    What serves now and since when, the target, the counts (live, gap, stale, re-decide,
    blast radius and its top subjects), the exact commands in order, the checks and their
    thresholds, the ETA from measured rates, and how to undo it. Changes nothing.

    \b
    Example:
        ledger runbook --model text-embedder --model spam-filter --to v1 --out runbook.md
    """
    from ledger.ops.runbook import make_runbook

    bootstrap = c.require_bootstrap()
    prefix = [
        "ledger",
        "--home",
        str(c.home),
        "--bootstrap",
        bootstrap,
        "--topic-prefix",
        c.topics.prefix,
    ]
    book = make_runbook(
        bootstrap, c.topics, c.home, list(models), to=to, cli_prefix=prefix, top=top
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(book.markdown, encoding="utf-8")
    data = {**book.summary(), "path": str(out) if out is not None else None}
    if as_json:
        emit(
            {**data, "markdown": book.markdown if out is None else None},
            as_json=True,
            human=click.echo,
        )
    elif out is None:
        click.echo(book.markdown, nl=False)
    else:
        click.echo(f"runbook written to {out}")


@click.command("switch-back")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Model to switch back; repeat for several.",
)
@click.option(
    "--reason", default="switch-back", show_default=True, help="Recorded in DeploymentChanged."
)
@click.option("--actor", default="ledger-cli", show_default=True, help="Who runs it (recorded).")
@json_option
@pass_context
def switch_back_cmd(
    c: Context, models: tuple[str, ...], reason: str, actor: str, as_json: bool
) -> None:
    """Serve each model's previous artifact again: instant, no rebuild.

    The artifact's checksums are re-checked before the switch; the switch is recorded as
    a DeploymentChanged event. Undoes a rollback or promotion made on this home.

    \b
    Example:
        ledger switch-back --model text-embedder --model spam-filter
    """
    from ledger.ops.promotion import switch_back

    done = switch_back(
        c.require_bootstrap(), c.topics, c.home, list(models), actor=actor, reason=reason
    )

    def human(rows: list[dict[str, Any]]) -> None:
        for r in rows:
            click.echo(
                f"{r['model']}: {r['from_version']} -> {r['to_version']} ({r['to_artifact']})"
            )

    emit([s.to_dict() for s in done], as_json=as_json, human=human)
