"""The ``ledger`` command: a thin click layer over the library.

Exit codes: 0 ok; 1 a check failed (verify, compare gates); 2 usage error or the
command could not run (bad input, broker unreachable, ...). Library errors print
one line on stderr; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from ledger.cli.artifacts import artifacts_cmd
from ledger.cli.audit import doctor_cmd, export_cmd, lineage_cmd, sql_cmd, versions_cmd
from ledger.cli.compact import compact_cmd
from ledger.cli.context import (
    DEFAULT_BROKER_TIMEOUT,
    ENV_BROKER_TIMEOUT,
    ENV_HOME,
    ENV_TOPIC_PREFIX,
    Context,
    LedgerGroup,
)
from ledger.cli.demo import demo_cmd
from ledger.cli.log import broker_cmd, init_cmd
from ledger.cli.materialiser import consume_cmd, dlq_group, status_cmd
from ledger.cli.promote import compare_cmd, promote_cmd, runbook_cmd, switch_back_cmd
from ledger.cli.rollback import rollback_cmd
from ledger.cli.verify import verify_cmd
from ledger.contract.events import Topics
from ledger.log.timeouts import BrokerTimeouts, using_timeouts


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
@click.option(
    "--broker-timeout",
    envvar=ENV_BROKER_TIMEOUT,
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_BROKER_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for a broker that does not answer: to connect, and for "
    f"acknowledgements of what was sent (env {ENV_BROKER_TIMEOUT}).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="lineage-ledger")
@click.pass_context
def cli(
    ctx: click.Context,
    bootstrap: str | None,
    home: Path,
    topic_prefix: str,
    broker_timeout: float,
    debug: bool,
) -> None:
    """lineage-ledger: safe, verified, one-command model rollbacks, rebuilt from the log.

    \b
    Example:
        ledger demo
        ledger broker &              # a local, memory-only broker
        ledger init --partitions 4

    Exit codes: 0 ok, 1 a check failed, 2 usage error or could not run.
    """
    timeouts = BrokerTimeouts(connect=broker_timeout, flush=broker_timeout)
    ctx.obj = Context(
        bootstrap=bootstrap,
        home=home,
        topics=Topics(topic_prefix),
        debug=debug,
        broker_timeouts=timeouts,
    )
    # Every broker wait of the command (producers, readers, admin) takes these defaults.
    ctx.with_resource(using_timeouts(timeouts))


for command in (
    broker_cmd,
    init_cmd,
    demo_cmd,
    consume_cmd,
    status_cmd,
    compact_cmd,
    dlq_group,
    sql_cmd,
    lineage_cmd,
    versions_cmd,
    export_cmd,
    doctor_cmd,
    verify_cmd,
    rollback_cmd,
    compare_cmd,
    promote_cmd,
    runbook_cmd,
    switch_back_cmd,
    artifacts_cmd,
):
    cli.add_command(command)


def main() -> NoReturn:
    """Console-script entry point."""
    cli.main(prog_name="ledger", standalone_mode=True)
    sys.exit(0)  # standalone_mode exits itself; this keeps the NoReturn promise
