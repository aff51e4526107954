"""``ledger demo``: the one-command tour."""

from __future__ import annotations

import click

from ledger.cli.context import Context, emit, json_option, pass_context
from ledger.log.broker import broker


@click.command("demo")
@click.option(
    "--texts",
    type=click.IntRange(200, 1_000_000),
    default=3000,
    show_default=True,
    help="Size of the synthetic text corpus.",
)
@json_option
@pass_context
def demo_cmd(c: Context, texts: int, as_json: bool) -> None:
    """Play the incident end to end, then roll it back: the one-command tour.

    On a throwaway embedded broker (or --bootstrap): v1 serves, v2 is deployed and
    re-embeds part of the corpus, a naive redeploy of v1 leaves a mixed index with wrong
    neighbours, then `ledger rollback` plans, rebuilds, verifies and switches, and the
    same query is right again. The state stays in --home for `ledger sql`; the figures
    are recorded in <home>/demo.duckdb (table demo_runs).

    \b
    Example:
        ledger demo
        ledger sql "SELECT * FROM version_counts"
    """
    from dataclasses import asdict

    from ledger.demo.incident import next_commands, run_demo

    with broker(c.bootstrap, home=None) as bootstrap:
        run = run_demo(
            bootstrap, c.topics, c.home, texts=texts, echo=None if as_json else click.echo
        )
    if as_json:
        data = asdict(run) | {"home": str(c.home), "next_commands": next_commands(c.home)}
        emit(data, as_json=True, human=click.echo)
