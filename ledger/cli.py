"""The ``ledger`` command: a thin click layer over the library.

Exit codes: 0 ok; 1 a check failed (verify, compare gates); 2 usage error or the
command could not run (bad input, broker unreachable, ...). Library errors print
one line on stderr; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from ledger.broker import EmbeddedBroker, broker, record_running_broker, resolve_bootstrap
from ledger.errors import BrokerError, LedgerError
from ledger.events import Topics
from ledger.log import init_topics

ENV_HOME = "LEDGER_HOME"
ENV_TOPIC_PREFIX = "LEDGER_TOPIC_PREFIX"


class CouldNotRun(click.ClickException):
    """A library error, shown as one line, exit code 2."""

    exit_code = 2


@dataclass
class Context:
    """What every command gets: where the log and the state live, and how to report."""

    bootstrap: str | None
    home: Path
    topics: Topics
    debug: bool

    def require_bootstrap(self) -> str:
        """A reachable broker for commands that need the persistent log."""
        resolved = resolve_bootstrap(self.bootstrap, home=self.home)
        if not resolved:
            raise BrokerError(
                "no broker: pass --bootstrap / set LEDGER_BOOTSTRAP, or start the local one "
                "with `ledger broker` in another terminal"
            )
        from ledger.broker import check_reachable

        check_reachable(resolved)
        return resolved


class LedgerGroup(click.Group):
    """Turns :class:`LedgerError` into one line and exit code 2 (traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LedgerError as exc:
            if ctx.find_object(Context) is not None and ctx.find_object(Context).debug:  # type: ignore[union-attr]
                raise
            raise CouldNotRun(str(exc)) from exc


def emit(data: Any, *, as_json: bool, human: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON for scripts, or with ``human`` for people."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        human(data)


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


@click.group(cls=LedgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bootstrap", envvar="LEDGER_BOOTSTRAP", help="Kafka bootstrap servers (env LEDGER_BOOTSTRAP).")
@click.option(
    "--home", envvar=ENV_HOME, type=click.Path(file_okay=False, path_type=Path), default=Path(".ledger"),
    show_default=True, help="State folder: DuckDB shards, artifacts, serving pointers (env LEDGER_HOME).",
)
@click.option(
    "--topic-prefix", envvar=ENV_TOPIC_PREFIX, default="ledger", show_default=True,
    help="Prefix of the ledger's topics (env LEDGER_TOPIC_PREFIX).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="lineage-ledger")
@click.pass_context
def cli(ctx: click.Context, bootstrap: str | None, home: Path, topic_prefix: str, debug: bool) -> None:
    """lineage-ledger: safe, verified, one-command model rollbacks, rebuilt from the log.

    \b
    Example:
        ledger demo
        ledger broker &              # a local, memory-only broker
        ledger init --partitions 4

    Exit codes: 0 ok, 1 a check failed, 2 usage error or could not run.
    """
    ctx.obj = Context(bootstrap=bootstrap, home=home, topics=Topics(topic_prefix), debug=debug)


pass_context = click.make_pass_decorator(Context)


@cli.command("broker")
@click.option("--port", type=int, default=None, help="Port to listen on (default: a free one).")
@pass_context
def broker_cmd(c: Context, port: int | None) -> None:
    """Run the embedded Tansu broker in the foreground (memory only; Ctrl-C stops it).

    Other ``ledger`` commands with the same --home find it automatically.

    \b
    Example:
        ledger broker --port 9092
    """
    embedded = EmbeddedBroker(port=port)
    bootstrap = embedded.start()
    path = record_running_broker(c.home, bootstrap)
    click.echo(f"broker listening on {bootstrap} (memory only: the log is lost when it stops)")
    click.echo(f"export LEDGER_BOOTSTRAP={bootstrap}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            if embedded.process is None or embedded.process.poll() is not None:
                raise BrokerError("the embedded broker exited")
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()
        path.unlink(missing_ok=True)
        click.echo("broker stopped")


@cli.command("init")
@click.option("--partitions", type=click.IntRange(1, 1024), default=4, show_default=True,
              help="Partitions of the embeddings and decisions topics.")
@json_option
@pass_context
def init_cmd(c: Context, partitions: int, as_json: bool) -> None:
    """Create the ledger's topics (unlimited retention). Safe to run again.

    \b
    Example:
        ledger --bootstrap kafka:9092 init --partitions 12
    """
    created = init_topics(c.require_bootstrap(), c.topics, partitions=partitions)
    emit(
        {"created": created, "topics": list(c.topics.all)},
        as_json=as_json,
        human=lambda d: click.echo(
            "created " + ", ".join(d["created"]) if d["created"] else "topics already exist"
        ),
    )


@cli.command("demo")
@click.option("--events", type=click.IntRange(100, 10_000_000), default=4000, show_default=True,
              help="How many embedding events to produce.")
@json_option
@pass_context
def demo_cmd(c: Context, events: int, as_json: bool) -> None:
    """Play the incident end to end on a throwaway embedded broker.

    \b
    Example:
        ledger demo
    """
    from ledger.demo import run_demo

    with broker(c.bootstrap, home=None) as bootstrap:
        summary = run_demo(bootstrap, c.topics, events=events, echo=None if as_json else click.echo)
    if as_json:
        emit(summary, as_json=True, human=click.echo)


# -- materialiser: consume, status, dlq (owner: materialiser) --------------------------


@cli.command("consume")
@click.option("--group", default=None,
              help="Consumer group to join (default: <topic-prefix>.materialiser).")
@click.option("--no-group", is_flag=True,
              help="Read every partition in this process without joining a group.")
@click.option("--shard", default="main", show_default=True,
              help="This process's DuckDB shard (one process per shard).")
@click.option("--until-caught-up", is_flag=True,
              help="Stop once every assigned partition reached its true end.")
@click.option("-v", "--verbose", is_flag=True, help="Log assignments to stderr.")
@json_option
@pass_context
def consume_cmd(
    c: Context, group: str | None, no_group: bool, shard: str, until_caught_up: bool,
    verbose: bool, as_json: bool,
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
        import logging

        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("consumers").setLevel(logging.INFO)
    bootstrap = c.require_bootstrap()
    group_id = None if no_group else (group or f"{c.topics.prefix}.materialiser")
    stop = threading.Event()
    # Stop between transactions on Ctrl-C / SIGTERM (a kill is safe too, just less tidy).
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Materialiser(bootstrap, c.topics, c.home, shard=shard, group=group_id,
                          lock_timeout=None) as mat:
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
        {"messages": stats.messages, "events": stats.events, "duplicates": stats.duplicates,
         "dead_letters": stats.dead_letters, "transactions": stats.transactions,
         "seconds": round(stats.seconds, 3), "offsets": stats.offsets, "shard": shard},
        as_json=as_json,
        human=lambda d: click.echo(
            f"materialised {d['events']} events into shard {d['shard']} "
            f"({d['dead_letters']} dead letters, {d['duplicates']} duplicates skipped) "
            f"in {d['seconds']:.1f}s"
        ),
    )


@cli.command("status")
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
        {"topic": p.topic, "partition": p.partition, "stored": p.stored, "end": p.end,
         "lag": p.lag, "dead_letters": p.dead_letters,
         "last_event_time": p.last_event_time.isoformat() if p.last_event_time else None}
        for p in lag(c.require_bootstrap(), c.topics, c.home)
    ]

    def table(data: list[dict[str, Any]]) -> None:
        click.echo(f"{'topic':<32} {'part':>4} {'stored':>10} {'end':>10} {'lag':>8} "
                   f"{'dlq':>5}  last event")
        for r in data:
            click.echo(f"{r['topic']:<32} {r['partition']:>4} {r['stored']:>10} {r['end']:>10} "
                       f"{r['lag']:>8} {r['dead_letters']:>5}  {r['last_event_time'] or '-'}")

    emit(rows, as_json=as_json, human=table)


@cli.group("dlq")
def dlq_group() -> None:
    """Inspect and re-drive dead letters (messages that failed to decode or validate).

    \b
    Example:
        ledger dlq list
        ledger dlq redrive
    """


def _dead_letter_dict(d: Any) -> dict[str, Any]:
    return {"id": d.id, "topic": d.topic, "partition": d.partition, "offset": d.offset,
            "reason": d.reason, "error": d.error, "bytes": len(d.raw), "shard": d.shard,
            "received_at": d.received_at.isoformat(),
            "redriven_at": d.redriven_at.isoformat() if d.redriven_at else None}


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

    Registrations come from the shards and, when a broker is reachable, the log.

    \b
    Example:
        ledger dlq redrive
    """
    from consumers.deadletters import redrive

    bootstrap = resolve_bootstrap(c.bootstrap, home=c.home)
    report = redrive(c.home, topics=c.topics, bootstrap=bootstrap or None, ids=ids)
    emit(
        {"redriven": list(report.redriven),
         "failing": [{"id": i, "reason": r} for i, r in report.failing]},
        as_json=as_json,
        human=lambda d: click.echo(
            f"re-drove {len(d['redriven'])} dead letters; {len(d['failing'])} still fail"
        ),
    )


# -- end of materialiser block -----------------------------------------------------------


def main() -> NoReturn:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="ledger", standalone_mode=True))  # type: ignore[func-returns-value]


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
