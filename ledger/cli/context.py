"""What every command shares: the context object, error rendering, output, common options."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ledger.contract.events import Topics
from ledger.errors import BrokerError, LedgerError
from ledger.log.broker import resolve_bootstrap
from ledger.log.timeouts import BrokerTimeouts

ENV_HOME = "LEDGER_HOME"
ENV_TOPIC_PREFIX = "LEDGER_TOPIC_PREFIX"
ENV_BROKER_TIMEOUT = "LEDGER_BROKER_TIMEOUT"
#: The CLI waits briefly for a broker: an operator wants to hear at once that it is down.
DEFAULT_BROKER_TIMEOUT = 5.0


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
    broker_timeouts: BrokerTimeouts = BrokerTimeouts(
        connect=DEFAULT_BROKER_TIMEOUT, flush=DEFAULT_BROKER_TIMEOUT
    )

    def require_bootstrap(self) -> str:
        """A reachable broker for commands that need the persistent log."""
        resolved = resolve_bootstrap(self.bootstrap, home=self.home)
        if not resolved:
            raise BrokerError(
                "no broker named",
                cli_hint="pass --bootstrap / set LEDGER_BOOTSTRAP, or start the local one "
                "with `ledger broker` in another terminal",
            )
        from ledger.log.broker import check_reachable

        check_reachable(resolved)
        return resolved


def one_line(exc: LedgerError) -> str:
    """How the CLI shows a library error: the message, then the CLI's hint (else the
    library's) in parentheses, on one line.

    Example:
        >>> one_line(BrokerError("no broker at k:1", hint="start one", cli_hint="ledger broker"))
        'no broker at k:1 (ledger broker)'
    """
    hint = exc.cli_hint or exc.hint
    text = exc.message if not hint else f"{exc.message} ({hint})"
    return " ".join(text.split())  # a cause's text may hold newlines: keep it one line


class LedgerGroup(click.Group):
    """Turns :class:`LedgerError` into one line and exit code 2 (traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LedgerError as exc:
            obj = ctx.find_object(Context)
            if obj is not None and obj.debug:
                raise
            raise CouldNotRun(one_line(exc)) from exc


def emit(data: Any, *, as_json: bool, human: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON for scripts, or with ``human`` for people."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        human(data)


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


pass_context = click.make_pass_decorator(Context)
