"""The ``ledger`` command: a thin click layer over the library.

Exit codes: 0 ok; 1 a check failed (verify, compare gates); 2 usage error or the
command could not run (bad input, broker unreachable, ...). Library errors print
one line on stderr; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
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
            obj = ctx.find_object(Context)
            if obj is not None and obj.debug:
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
@click.option(
    "--bootstrap", envvar="LEDGER_BOOTSTRAP", help="Kafka bootstrap servers (env LEDGER_BOOTSTRAP)."
)
@click.option(
    "--home",
    envvar=ENV_HOME,
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".ledger"),
    show_default=True,
    help="State folder: DuckDB shards, artifacts, serving pointers (env LEDGER_HOME).",
)
@click.option(
    "--topic-prefix",
    envvar=ENV_TOPIC_PREFIX,
    default="ledger",
    show_default=True,
    help="Prefix of the ledger's topics (env LEDGER_TOPIC_PREFIX).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="lineage-ledger")
@click.pass_context
def cli(
    ctx: click.Context, bootstrap: str | None, home: Path, topic_prefix: str, debug: bool
) -> None:
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
@click.option(
    "--partitions",
    type=click.IntRange(1, 1024),
    default=4,
    show_default=True,
    help="Partitions of the embeddings and decisions topics.",
)
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

    from ledger.demo import next_commands, run_demo

    with broker(c.bootstrap, home=None) as bootstrap:
        run = run_demo(
            bootstrap, c.topics, c.home, texts=texts, echo=None if as_json else click.echo
        )
    if as_json:
        data = asdict(run) | {"home": str(c.home), "next_commands": next_commands(c.home)}
        emit(data, as_json=True, human=click.echo)


# Command modules register themselves on ``cli``; imported here so ``ledger`` sees them.
from ledger import (  # noqa: E402, F401
    cli_artifacts,
    cli_audit,
    cli_materialiser,
    cli_promote,
    cli_rollback,
    cli_verify,
)


def main() -> NoReturn:
    """Console-script entry point."""
    cli.main(prog_name="ledger", standalone_mode=True)
    sys.exit(0)  # standalone_mode exits itself; this keeps the NoReturn promise
