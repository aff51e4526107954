"""The error tree: documented, hinted in the library's terms, rendered by the CLI as one line."""

from __future__ import annotations

import ast
import inspect
import pickle
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import ledger
import ledger.errors
from ledger.cli import cli
from ledger.cli.context import one_line
from ledger.log.broker import free_port

ROOT = Path(__file__).resolve().parent.parent
ERRORS = [
    obj
    for _, obj in inspect.getmembers(ledger.errors, inspect.isclass)
    if issubclass(obj, Exception) and obj.__module__ == "ledger.errors"
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
def test_every_exported_error_class_has_a_docstring_and_is_in_the_tree(error) -> None:
    assert error.__name__ in ledger.__all__
    assert (error.__doc__ or "").strip(), f"{error.__name__} has no docstring"
    drawn = "\n    LedgerError\n" if error is ledger.LedgerError else f"── {error.__name__} "
    assert drawn in ledger.errors.__doc__, "the module docstring draws the whole tree"


def _example(error: type[ledger.LedgerError]) -> ledger.LedgerError:
    """An instance of ``error`` with a hint, a CLI hint and its own data filled in."""
    hints = {"hint": "do this", "cli_hint": "run that --flag"}
    data = {
        "UnknownSchema": {"fingerprint": b"\x01" * 8},
        "ShardBusy": {"shard": "main"},
        "ChecksumMismatch": {"files": ("a.ann",)},
        "RollbackInProgress": {"pid": 42},
        "GateSpecError": {"spec": "x", "item": "x"},
        "HookError": {"hook": "m:f"},
        "ContractError": {"field": "vector", "expected": "finite", "got": "nan"},
        "UnknownModelVersion": {"field": "model_version"},
    }.get(error.__name__, {})
    if error is ledger.UnknownSchema:
        return error(**data)
    return error("what is wrong", **data, **hints)


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
def test_an_error_survives_pickling_with_its_hints_and_data(error) -> None:
    original = _example(error)
    copy = pickle.loads(pickle.dumps(original))  # noqa: S301 - our own bytes
    assert type(copy) is error
    assert (str(copy), copy.args, vars(copy)) == (str(original), original.args, vars(original))


def test_str_shows_the_hint_and_never_the_cli_hint() -> None:
    error = ledger.BrokerError("no broker at k:1", hint="start one", cli_hint="`ledger broker`")
    assert str(error) == "no broker at k:1 (start one)"
    assert repr(error) == "BrokerError('no broker at k:1')"
    assert str(ledger.LedgerError("bare")) == "bare"


def test_the_cli_line_prefers_the_cli_hint_then_the_hint_and_is_one_line() -> None:
    assert one_line(ledger.StoreError("db locked", hint="retry", cli_hint="rerun")) == (
        "db locked (rerun)"
    )
    assert one_line(ledger.StoreError("db locked", hint="retry")) == "db locked (retry)"
    assert one_line(ledger.StoreError("line one\nline two")) == "line one line two"


def test_a_hinted_error_is_one_line_on_stderr_with_exit_code_2() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(cli, ["--bootstrap", bootstrap, "init"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: cannot reach a Kafka broker at {bootstrap} "
        "(start one with `ledger broker`, or check --bootstrap / LEDGER_BOOTSTRAP)\n"
    )


def test_debug_shows_the_traceback_instead() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["--debug", "--bootstrap", bootstrap, "init"])
    assert result.exit_code == 1  # the exception escapes click: the runner records it
    assert isinstance(result.exception, ledger.BrokerError)
    assert result.exception.cli_hint == (
        "start one with `ledger broker`, or check --bootstrap / LEDGER_BOOTSTRAP"
    )


# -- library messages speak the library's terms ----------------------------------------------

_CLI_WORDS = re.compile(
    r"(?<![\w-])--[a-z]"  # a flag
    r"|`ledger |\bledger (?:broker|init|consume|rollback|verify|dlq|artifacts|sql|demo|doctor"
    r"|compare|promote|switch-back|runbook|status|versions|lineage|export)\b"  # a command
)
#: The ops stage is being rewritten; it adopts hints there.
_NOT_YET = ("ledger/cli/", "ledger/ops/")
_ERROR_NAMES = {e.__name__ for e in ERRORS}


def _error_texts(path: Path):
    """(line, text) of every string in the message or ``hint=`` of an error raised in ``path``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _ERROR_NAMES
        ):
            continue
        parts = node.args[:1] + [k.value for k in node.keywords if k.arg == "hint"]
        for part in parts:
            for leaf in ast.walk(part):
                if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                    yield leaf.lineno, leaf.value


def _library_files() -> list[Path]:
    files = [*(ROOT / "ledger").rglob("*.py"), *(ROOT / "consumers").rglob("*.py")]
    return [p for p in files if not p.relative_to(ROOT).as_posix().startswith(_NOT_YET)]


def test_library_error_messages_and_hints_name_no_flags_or_commands() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in _library_files()
        for line, text in _error_texts(path)
        if _CLI_WORDS.search(text)
    ]
    assert found == [], "put CLI advice in cli_hint=, keep message and hint in library terms"


def test_the_scan_sees_a_flag_in_a_message(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('raise BrokerError("check --bootstrap", hint="run `ledger init`")\n')
    assert [t for _, t in _error_texts(bad) if _CLI_WORDS.search(t)] == [
        "check --bootstrap",
        "run `ledger init`",
    ]
