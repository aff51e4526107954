"""``ledger consume``, ``ledger status``, ``ledger dlq``: the materialiser's commands, a thin
layer over :mod:`consumers`.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from typing import Any

import click

from ledger.cli.context import Context, emit, json_option, pass_context
from ledger.log.broker import check_reachable, resolve_bootstrap


@click.command("consume")
@click.option(
    "--group", default=None, help="Consumer group to join (default: <topic-prefix>.materialiser)."
)
@click.option(
    "--no-group", is_flag=True, help="Read every partition in this process without joining a group."
)
@click.option(
    "--shard",
    default="main",
    show_default=True,
    help="This process's DuckDB shard (one process per shard).",
)
@click.option(
    "--until-caught-up",
    is_flag=True,
    help="Stop once every assigned partition reached its true end.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log partition assignments to stderr.")
@json_option
@pass_context
def consume_cmd(
    c: Context,
    group: str | None,
    no_group: bool,
    shard: str,
    until_caught_up: bool,
    verbose: bool,
    as_json: bool,
) -> None:
    """Materialise the ledger topics into DuckDB; runs until stopped (Ctrl-C / SIGTERM).

    More processes with the same --group and their own --shard split the partitions.

    \b
    Example:
        ledger consume --until-caught-up
        ledger consume --shard b &      # a second process in the same group
    """
    from consumers.materialiser import Materialiser

    if verbose:
        logging.basicConfig(
            level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
        )
        logging.getLogger("consumers").setLevel(logging.INFO)
    bootstrap = c.require_bootstrap()
    group_id = None if no_group else (group or f"{c.topics.prefix}.materialiser")
    stop = threading.Event()
    # Stop between transactions on Ctrl-C / SIGTERM (a kill is safe too, just less tidy);
    # the previous handlers come back after, e.g. for the CliRunner's host process.
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with Materialiser(
            bootstrap, c.topics, c.home, shard=shard, group=group_id, lock_timeout=None
        ) as mat:
            if until_caught_up and sys.stdout.isatty() and not as_json:
                with click.progressbar(length=1, label="materialising") as bar:

                    def progress(done: int, total: int) -> None:
                        bar.length = max(total, 1)
                        bar.update(done - bar.pos)

                    stats = mat.run(until_caught_up=True, stop=stop, progress=progress)
            else:
                stats = mat.run(until_caught_up=until_caught_up, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    emit(
        {
            "messages": stats.messages,
            "events": stats.events,
            "duplicates": stats.duplicates,
            "dead_letters": stats.dead_letters,
            "transactions": stats.transactions,
            "seconds": round(stats.seconds, 3),
            "offsets": stats.offsets,
            "shard": shard,
        },
        as_json=as_json,
        human=lambda d: click.echo(
            f"materialised {d['events']} events into shard {d['shard']} "
            f"({d['dead_letters']} dead letters, {d['duplicates']} duplicates skipped) "
            f"in {d['seconds']:.1f}s"
        ),
    )


@click.command("status")
@json_option
@pass_context
def status_cmd(c: Context, as_json: bool) -> None:
    """Per topic-partition: stored offset, true end, lag, dead letters, last event time.

    \b
    Example:
        ledger status --json
    """
    from consumers.lag import lag

    rows = [
        {
            "topic": p.topic,
            "partition": p.partition,
            "stored": p.stored,
            "end": p.end,
            "lag": p.lag,
            "dead_letters": p.dead_letters,
            "last_event_time": p.last_event_time.isoformat() if p.last_event_time else None,
        }
        for p in lag(c.require_bootstrap(), c.topics, c.home)
    ]

    def table(data: list[dict[str, Any]]) -> None:
        click.echo(
            f"{'topic':<32} {'part':>4} {'stored':>10} {'end':>10} {'lag':>8} "
            f"{'dlq':>5}  last event"
        )
        for r in data:
            click.echo(
                f"{r['topic']:<32} {r['partition']:>4} {r['stored']:>10} {r['end']:>10} "
                f"{r['lag']:>8} {r['dead_letters']:>5}  {r['last_event_time'] or '-'}"
            )

    emit(rows, as_json=as_json, human=table)


@click.group("dlq")
def dlq_group() -> None:
    """Inspect and re-drive dead letters (messages that failed to decode or validate).

    \b
    Example:
        ledger dlq list
        ledger dlq redrive
    """


def _dead_letter_dict(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "topic": d.topic,
        "partition": d.partition,
        "offset": d.offset,
        "reason": d.reason,
        "error": d.error,
        "bytes": len(d.raw),
        "shard": d.shard,
        "received_at": d.received_at.isoformat(),
        "redriven_at": d.redriven_at.isoformat() if d.redriven_at else None,
    }


@dlq_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include dead letters already re-driven.")
@json_option
@pass_context
def dlq_list_cmd(c: Context, show_all: bool, as_json: bool) -> None:
    """List dead letters (pending ones unless --all).

    \b
    Example:
        ledger dlq list --json
    """
    from consumers.deadletters import list_dead_letters

    rows = [_dead_letter_dict(d) for d in list_dead_letters(c.home, pending_only=not show_all)]

    def table(data: list[dict[str, Any]]) -> None:
        for r in data:
            state = "redriven" if r["redriven_at"] else "pending"
            click.echo(f"{r['id']}  {state:<8} {r['error']}: {r['reason']}")
        click.echo(f"{len(data)} dead letters")

    emit(rows, as_json=as_json, human=table)


@dlq_group.command("show")
@click.argument("dead_letter_id")
@json_option
@pass_context
def dlq_show_cmd(c: Context, dead_letter_id: str, as_json: bool) -> None:
    """Show one dead letter (id = topic:partition:offset) with its raw bytes and record.

    \b
    Example:
        ledger dlq show ledger.embeddings:2:1017
    """
    from consumers.deadletters import show_dead_letter

    dl, record = show_dead_letter(c.home, dead_letter_id)
    data = {**_dead_letter_dict(dl), "raw_hex": dl.raw[:256].hex(), "record": record}

    def human(d: dict[str, Any]) -> None:
        for key in ("id", "error", "reason", "shard", "received_at", "redriven_at", "bytes"):
            click.echo(f"{key:<12} {d[key]}")
        click.echo(f"{'raw':<12} {d['raw_hex']}{'...' if d['bytes'] > 256 else ''}")
        click.echo(f"{'record':<12} {json.dumps(d['record'], default=str)}")

    emit(data, as_json=as_json, human=human)


@dlq_group.command("redrive")
@click.argument("ids", nargs=-1)
@json_option
@pass_context
def dlq_redrive_cmd(c: Context, ids: tuple[str, ...], as_json: bool) -> None:
    """Materialise the dead letters that now pass (all pending, or IDS), exactly once.

    Registrations come from the shards and, when a broker is named (or a local one
    runs for this home), the log; a named broker that does not answer is an error.

    \b
    Example:
        ledger dlq redrive
    """
    from consumers.deadletters import redrive

    bootstrap = resolve_bootstrap(c.bootstrap, home=c.home)
    if bootstrap:
        check_reachable(bootstrap)
    report = redrive(c.home, topics=c.topics, bootstrap=bootstrap or None, ids=ids)
    emit(
        {
            "redriven": list(report.redriven),
            "failing": [{"id": i, "reason": r} for i, r in report.failing],
        },
        as_json=as_json,
        human=lambda d: click.echo(
            f"re-drove {len(d['redriven'])} dead letters; {len(d['failing'])} still fail"
        ),
    )
