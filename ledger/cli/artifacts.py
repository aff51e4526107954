"""``ledger artifacts list|gc``: the index and decision-table artifacts under
``<home>/artifacts``, a thin layer over :mod:`ledger.artifacts.listing` and
:mod:`ledger.serving.gc`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ledger.cli.context import Context, emit, json_option, pass_context
from ledger.serving.pointers import ARTIFACTS_DIR


def _artifacts_root(c: Context) -> Path:
    return c.home / ARTIFACTS_DIR


@click.group("artifacts")
def artifacts_cmd() -> None:
    """Index artifacts under <home>/artifacts: list them, remove old ones.

    \b
    Example:
        ledger artifacts list --model embedder
        ledger artifacts gc --keep-last 1 --dry-run
    """


@artifacts_cmd.command("list")
@click.option("--model", default=None, help="Only this model's artifacts.")
@json_option
@pass_context
def artifacts_list_cmd(c: Context, model: str | None, as_json: bool) -> None:
    """List artifacts, oldest first per model version; * marks the serving ones.

    \b
    Example:
        ledger --home .ledger artifacts list --model embedder --json
    """
    from ledger.artifacts.listing import list_artifacts
    from ledger.serving.gc import serving_artifacts

    serving = {p.resolve() for p in serving_artifacts(c.home)}
    rows = [
        {
            "model": e.manifest.model,
            "version": e.manifest.version,
            "path": e.path.relative_to(c.home).as_posix(),
            "items": e.manifest.items,
            "dimension": e.manifest.dimension,
            "metric": e.manifest.metric,
            "shards": e.manifest.shards,
            "trees": e.manifest.trees,
            "log_offsets": dict(e.manifest.log_offsets),
            "checksum": e.manifest.checksum,
            "created_at": e.manifest.created_at,
            "serving": e.path.resolve() in serving,
        }
        for e in list_artifacts(_artifacts_root(c), model)
    ]

    def table(data: list[dict[str, Any]]) -> None:
        if not data:
            click.echo("no artifacts")
        for r in data:
            mark = "*" if r["serving"] else " "
            click.echo(
                f"{mark} {r['model']} {r['version']} items={r['items']} "
                f"shards={r['shards']} {r['created_at']} {r['path']}"
            )

    emit(rows, as_json=as_json, human=table)


@artifacts_cmd.command("gc")
@click.option(
    "--keep-last",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Per model version, keep this many of the newest artifacts.",
)
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@json_option
@pass_context
def artifacts_gc_cmd(c: Context, keep_last: int, dry_run: bool, as_json: bool) -> None:
    """Remove old artifacts; the serving and previous artifact of each model are kept.

    Also removes staging folders left by builds that crashed.

    \b
    Example:
        ledger artifacts gc --keep-last 2 --dry-run
    """
    from ledger.serving.gc import collect_garbage

    result = collect_garbage(c.home, keep_last=keep_last, dry_run=dry_run)

    def rel(paths: tuple[Path, ...]) -> list[str]:
        return [p.relative_to(c.home).as_posix() for p in paths]

    data = {
        "removed": rel(result.removed),
        "kept": rel(result.kept),
        "leftovers": rel(result.leftovers),
        "dry_run": dry_run,
    }

    def human(d: dict[str, Any]) -> None:
        verb = "would remove" if dry_run else "removed"
        for path in d["removed"] + d["leftovers"]:
            click.echo(f"{verb} {path}")
        click.echo(
            f"{verb} {len(d['removed'])} artifacts, {len(d['leftovers'])} leftovers; "
            f"kept {len(d['kept'])}"
        )

    emit(data, as_json=as_json, human=human)
