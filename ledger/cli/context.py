"""What every command shares: the context object, error rendering, output, common options."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ledger.checks.recall import DEFAULT_RECALL_THRESHOLD, DEFAULT_SAMPLE, RecallSpec, SearchK
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


def _search_k(_ctx: click.Context, _param: click.Parameter, value: int | None) -> SearchK | None:
    if value is None:
        return None
    if value == -1:
        return SearchK.annoy_default()
    if value < 1:
        raise click.BadParameter("a positive number of tree nodes, or -1 for Annoy's default")
    return SearchK.fixed(value)


_RECALL_OPTIONS = [
    click.option(
        "--recall-threshold",
        type=click.FloatRange(0.0, 1.0),
        default=DEFAULT_RECALL_THRESHOLD,
        show_default=True,
        help="Lowest acceptable recall@10 of the index against exact search.",
    ),
    click.option(
        "--sample",
        type=click.IntRange(1),
        default=DEFAULT_SAMPLE,
        show_default=True,
        help="Sampled queries for the recall check.",
    ),
    click.option(
        "--search-k",
        type=int,
        default=None,
        callback=_search_k,
        help="Annoy search_k for the recall queries (-1: Annoy's trees x k). Default: "
        "rollback calibrates the smallest one meeting the threshold and records it for "
        "serving; verify uses the recorded one.",
    ),
]


def recall_options(default: SearchK) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--recall-threshold``, ``--sample`` and ``--search-k``: the recall check's knobs,
    shared by ``verify`` and ``rollback`` (which runs the same checks before it switches).
    The command receives them as one ``recall`` (a RecallSpec), with ``default`` as its
    search_k unless ``--search-k`` says otherwise."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(
            *args: Any, recall_threshold: float, sample: int, search_k: SearchK | None, **kw: Any
        ) -> Any:
            recall = RecallSpec(recall_threshold, sample, search_k=search_k or default)
            return command(*args, recall=recall, **kw)

        for option in reversed(_RECALL_OPTIONS):
            wrapper = option(wrapper)
        return wrapper

    return decorate
