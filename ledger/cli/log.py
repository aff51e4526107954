"""``ledger broker`` and ``ledger init``: where the log lives and its topics."""

from __future__ import annotations

import signal
import threading

import click

from ledger.cli.context import Context, emit, json_option, pass_context
from ledger.errors import BrokerError
from ledger.log.broker import EmbeddedBroker, record_running_broker
from ledger.log.topics import init_topics


@click.command("broker")
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


@click.command("init")
@click.option(
    "--partitions",
    type=click.IntRange(1, 1024),
    default=4,
    show_default=True,
    help="Partitions of the embeddings and decisions topics.",
)
@click.option(
    "--replication-factor",
    type=click.IntRange(1, 32),
    default=1,
    show_default=True,
    help="Replicas of each topic (3 on a cluster of several brokers).",
)
@json_option
@pass_context
def init_cmd(c: Context, partitions: int, replication_factor: int, as_json: bool) -> None:
    """Create the ledger's topics (unlimited retention, no compaction). Safe to run again.

    \b
    Example:
        ledger --bootstrap kafka:9092 init --partitions 12 --replication-factor 3
    """
    created = init_topics(
        c.require_bootstrap(),
        c.topics,
        partitions=partitions,
        replication_factor=replication_factor,
    )
    emit(
        {"created": created, "topics": list(c.topics.all)},
        as_json=as_json,
        human=lambda d: click.echo(
            "created " + ", ".join(d["created"]) if d["created"] else "topics already exist"
        ),
    )
