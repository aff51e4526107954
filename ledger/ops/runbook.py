"""A Markdown runbook for rolling models to a version, written from live data.

:func:`make_runbook` plans the rollback exactly as ``ledger rollback --dry-run`` does
(:func:`ledger.ops.rollback.rollback` with ``dry_run=True``: catch up, plan from the views) and
writes down what serves now and since when, the target, the counts (live, gap, stale,
re-decide, blast radius with its top subjects), the exact commands in order, the checks
that will run with their thresholds, the ETA from the rates this home measured, and how
to undo it. Everything is for the state at the log position the runbook names.

The ``## Commands`` and ``## Undo`` sections each hold one ``bash`` block of complete
``ledger`` command lines (global options included); lines starting with ``#`` are notes.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.contract.events import Topics
from ledger.ops.kinds import Progress, no_progress
from ledger.ops.plan import RollbackPlan
from ledger.ops.rates import RATES_FILE
from ledger.ops.rollback import rollback
from ledger.serving.pointers import ServingPointer, current
from ledger.store import open_views, rows
from ledger.store.queries import outgoing_version

# serving_now's rows (served_until IS NULL) with the deployment's reason and actor, which
# serving_now does not carry.
_SERVING_NOW_SQL = """
    SELECT model, model_version, served_from, reason, actor
    FROM serving_history WHERE served_until IS NULL AND list_contains($models, model)
    ORDER BY model
"""


def _seconds(eta: float) -> str:
    if eta < 0.1:
        return "Under 0.1s"
    if eta < 120:
        return f"About {eta:.1f}s"
    return f"About {eta / 60:.0f} min"


@dataclass(frozen=True, slots=True, eq=False)
class Runbook:
    """The runbook text and the command lines it lists (``commands`` then ``undo``)."""

    markdown: str
    plan: RollbackPlan
    commands: tuple[str, ...]
    undo: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        return {
            "plan": self.plan.summary(),
            "commands": list(self.commands),
            "undo": list(self.undo),
        }


def _line(prefix: Sequence[str], *args: str) -> str:
    return shlex.join([*prefix, *args])


def _model_args(models: Sequence[str]) -> list[str]:
    return [a for m in models for a in ("--model", m)]


def _serving(home: Path, models: Sequence[str], rows: list[tuple[Any, ...]]) -> list[str]:
    by_model = {r[0]: r for r in rows}
    out = ["| model | serving (log) | since | by | local pointer |", "|---|---|---|---|---|"]
    for model in models:
        row = by_model.get(model)
        pointer = current(home, model)
        local = (
            f"{pointer.version} `{pointer.artifact}` since {pointer.switched_at}"
            if pointer is not None
            else "none on this home"
        )
        if row is None:
            out.append(f"| {model} | nothing deployed | - | - | {local} |")
        else:
            _, version, since, reason, actor = row
            out.append(f"| {model} | {version} | {since} | {actor}: {reason} | {local} |")
    return out


def _undo(
    prefix: Sequence[str],
    to: str,
    models: Sequence[str],
    pointers: dict[str, ServingPointer | None],
    serving: dict[str, str | None],
    before: dict[str, str | None],
) -> tuple[list[str], list[str]]:
    """The undo command lines and notes, for the state before the rollback.

    ``before`` is, per model, the version to go back to when this home has no artifact
    serving it: the version serving per the log, or when that already is ``to`` (served
    from an artifact this home did not build, e.g. a redeploy outside the ledger), the
    latest other version that served.
    """
    lines, notes = [], []
    for m in models:
        p = pointers[m]
        if p is not None and p.version == to:
            # Rebuilding at an unchanged log position gives the same artifact, and then the
            # previous pointer is an older version: switch-back would not be an undo.
            notes.append(
                f"{m}: already serves {to} on this home (`{p.artifact}`); the rollback only "
                "brings it up to the current log position: nothing to undo."
            )
    back = [m for m in models if (p := pointers[m]) is not None and p.version != to]
    if back:
        lines.append(_line(prefix, "switch-back", *_model_args(back), "--actor", "oncall"))
        notes.append(
            f"{', '.join(back)}: `switch-back` points serving at the artifact serving now "
            "(instant, no rebuild; its checksums are re-checked) and records a DeploymentChanged."
        )
    rebuild = [m for m in models if pointers[m] is None]
    for version in dict.fromkeys(before[m] for m in rebuild):
        group = [m for m in rebuild if before[m] == version]
        line, note = _undo_by_rebuild(prefix, to, group, version, serving)
        lines += [line] if line else []
        notes.append(note)
    return lines, notes


def _undo_by_rebuild(
    prefix: Sequence[str],
    to: str,
    group: Sequence[str],
    version: str | None,
    serving: dict[str, str | None],
) -> tuple[str | None, str]:
    if version is None:
        return None, f"{', '.join(group)}: no other version was deployed; nothing to undo to."
    line = _line(
        prefix,
        "rollback",
        *_model_args(group),
        "--to",
        version,
        "--yes",
        "--reason",
        f"undo: back to {version}",
        "--actor",
        "oncall",
    )
    note = (
        f"{', '.join(group)}: this home has no artifact serving now, so the undo rebuilds "
        f"{version} from the log (its plan and ETA: the same command with --dry-run)."
    )
    if any(serving[m] == to for m in group):
        note += (
            f" {to} serves already per the log, but from an artifact this home did not "
            f"build (a redeploy outside the ledger); backing out means going to the "
            f"version that served before it, {version}."
        )
    return line, note


def make_runbook(
    bootstrap: str,
    topics: Topics,
    home: Path,
    models: Sequence[str],
    *,
    to: str,
    cli_prefix: Sequence[str],
    top: int = 10,
    progress: Progress = no_progress,
) -> Runbook:
    """Plan the rollback of ``models`` to ``to`` and write its runbook.

    Args:
        cli_prefix: how to call ``ledger`` with its global options for this log and home,
            e.g. ``["ledger", "--home", ".ledger", "--bootstrap", "kafka:9092"]``.
        top: how many blast-radius subjects to list per classifier.

    Example:
        >>> book = make_runbook(bs, Topics(), Path(".ledger"), ["text-embedder"], to="v1",
        ...                     cli_prefix=["ledger"])  # doctest: +SKIP
        >>> book.commands[-1]  # doctest: +SKIP
        'ledger verify --model text-embedder'
    """
    names = list(dict.fromkeys(models))
    plan = rollback(bootstrap, topics, home, names, to=to, dry_run=True, progress=progress).plan
    serving = {mp.model: mp.serving_version for mp in plan.models}
    with open_views(home) as con:
        now = rows(con, _SERVING_NOW_SQL, models=names)
        before = {
            m: outgoing_version(con, m, to) if serving[m] == to else serving[m] for m in names
        }
    pointers = {m: current(home, m) for m in names}
    commands = _commands(cli_prefix, names, to)
    undo, undo_notes = _undo(cli_prefix, to, names, pointers, serving, before)
    md = [
        *_state_sections(home, plan, names, now, top),
        *_command_section(commands, any(mp.needs_fill for mp in plan.models)),
        *_check_section(to),
        *_eta_section(plan, measured=(home / RATES_FILE).exists()),
        "## Undo",
        "",
        *[f"- {n}" for n in undo_notes],
        "",
    ]
    if undo:
        md += ["```bash", *undo, "```", ""]
    return Runbook("\n".join(md), plan, tuple(commands), tuple(undo))


def _commands(prefix: Sequence[str], names: Sequence[str], to: str) -> list[str]:
    margs = _model_args(names)
    return [
        _line(prefix, "status"),
        _line(prefix, "rollback", *margs, "--to", to, "--dry-run"),
        _line(
            prefix,
            "rollback",
            *margs,
            "--to",
            to,
            "--yes",
            "--reason",
            f"rollback to {to} (runbook)",
            "--actor",
            "oncall",
        ),
        _line(prefix, "verify", *margs),
    ]


def _state_sections(
    home: Path, plan: RollbackPlan, names: Sequence[str], now: list[tuple[Any, ...]], top: int
) -> list[str]:
    to = plan.to_version
    events = sum(plan.log_offsets.values())
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return [
        f"# Runbook: roll {', '.join(names)} to {to}",
        "",
        f"Written {stamp} from the log at {events} events on {len(plan.log_offsets)} "
        "partitions. Later events change the plan: write a new runbook if the log moved on.",
        "",
        "## What serves now",
        "",
        *_serving(home, names, now),
        "",
        "## Target",
        "",
        f"Version **{to}** of {', '.join(names)}, rebuilt from the log: the index of every live "
        f"entity's latest {to} vector and the table of each subject's latest {to} decision.",
        "",
        "## Counts",
        "",
        *[line for mp in plan.models for line in mp.runbook_lines(top)],
    ]


def _command_section(commands: Sequence[str], fills: bool) -> list[str]:
    md = [
        "## Commands",
        "",
        "Run in order; each must exit 0 (1: a check failed; 2: could not run). The rollback "
        "takes the models' rollback lock, catches up, plans, rebuilds, verifies and switches.",
        "",
        "```bash",
        "# 1. the materialiser's lag (the rollback catches up by itself; a large lag adds time)",
        commands[0],
        "# 2. the plan: it must show the counts above",
        commands[1],
    ]
    if fills:
        md.append(
            "# to fill the gap / re-decide with the target version, add to step 3: "
            "--embedder MODULE:FUNCTION / --classifier MODULE:FUNCTION"
        )
    return md + [
        "# 3. rebuild, verify and switch (records a DeploymentChanged per model)",
        commands[2],
        "# 4. verify what serves now",
        commands[3],
        "```",
        "",
    ]


def _check_section(to: str) -> list[str]:
    return [
        "## Checks",
        "",
        "Before the switch (step 3; any failure switches nothing, exit 2):",
        "",
        "| model kind | check | threshold |",
        "|---|---|---|",
        "| both | checksum: every artifact file's sha256 equals the manifest's | 0 mismatched |",
        f"| embedding | count: index items equal the view's live {to} embeddings | equal |",
        f"| embedding | purity: every item is its entity's latest {to} vector | 0 impure |",
        f"| classifier | purity: every row is a {to} decision of the model | 0 foreign |",
        f"| classifier | coverage: one latest {to} decision per subject that has one | equal |",
        "",
        "After the switch, `ledger verify` (step 4) checks what serves: version purity, "
        "item count, checksum, recall@10 against exact search on a sample (threshold: "
        "`ledger verify --help`), decision table from the serving version only, "
        "materialiser lag zero.",
        "",
    ]


def _eta_section(plan: RollbackPlan, *, measured: bool) -> list[str]:
    return [
        "## ETA",
        "",
        f"{_seconds(plan.eta_seconds)} to load and build "
        f"{sum(mp.index_items for mp in plan.models)} index items, "
        + (
            "from rates measured on this home."
            if measured
            else "from default rates (this home has not measured its own yet)."
        ),
        "",
    ]
