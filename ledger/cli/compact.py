"""``ledger compact``: shards rewritten in id order, a thin layer over
:func:`ledger.store.compact`."""

from __future__ import annotations

from typing import Any

import click

from ledger.cli.context import Context, CouldNotRun, emit, json_option, pass_context


@click.command("compact")
@click.option(
    "--shard",
    "shards",
    multiple=True,
    help="A shard to compact (repeat for more; default: every shard in --home).",
)
@json_option
@pass_context
def compact_cmd(c: Context, shards: tuple[str, ...], as_json: bool) -> None:
    """Rewrite shards with their events in id order, so that `ledger lineage` reads one
    row group per table instead of every row; needs no broker.

    A shard that a running `ledger consume` writes is refused: stop it first. Readers
    are not blocked (the copy is a new file that replaces the shard in one rename); it
    needs free disk for one more copy of the shard. Events written after a compaction
    are stored unsorted until the next one.

    \b
    Example:
        ledger compact
        ledger compact --shard main --json
    """
    from ledger.store import compact, shard_paths

    names = list(shards) or [p.stem for p in shard_paths(c.home)]
    if not names:
        raise CouldNotRun(f"no shards in {c.home}: nothing to compact (run `ledger consume` first)")
    done = [compact(c.home, name) for name in names]
    report = [
        {
            "shard": d.shard,
            "rows": d.rows,
            "bytes_before": d.bytes_before,
            "bytes_after": d.bytes_after,
            "seconds": round(d.seconds, 3),
        }
        for d in done
    ]

    def human(data: list[dict[str, Any]]) -> None:
        for d in data:
            click.echo(
                f"compacted shard {d['shard']}: {sum(d['rows'].values()):,} rows in "
                f"{d['seconds']:.1f}s ({d['bytes_before']:,} -> {d['bytes_after']:,} bytes)"
            )

    emit(report, as_json=as_json, human=human)
