"""The ``ledger`` command through click's CliRunner, against the real broker."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.contract.schemas import default_store
from ledger.contract.wire import decode
from ledger.log.broker import free_port
from ledger.log.reading import read_to_end
from ledger.log.topics import admin_client


def _prefix() -> str:
    return f"cli{uuid.uuid4().hex[:10]}"


@pytest.mark.kafka
def test_init_creates_the_three_topics_and_is_safe_to_run_again(bootstrap: str) -> None:
    prefix = _prefix()
    args = ["--bootstrap", bootstrap, "--topic-prefix", prefix, "init", "--partitions", "3"]
    first = CliRunner().invoke(cli, [*args, "--json"])
    assert first.exit_code == 0, first.output
    names = [f"{prefix}.models", f"{prefix}.embeddings", f"{prefix}.decisions"]
    assert json.loads(first.stdout) == {"created": names, "topics": names}
    admin = admin_client(bootstrap)
    try:
        assert set(names) <= set(admin.list_topics())
    finally:
        admin.close()

    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0
    assert again.stdout == "topics already exist\n"


@pytest.mark.kafka
def test_demo_json_counts_every_event_it_produced(bootstrap: str, demo_home) -> None:
    counts: dict[str, int] = {}
    for message in read_to_end(bootstrap, list(demo_home.topics.all)):
        name, _ = decode(default_store(), message.value)
        counts[name] = counts.get(name, 0) + 1
    # The demo's own events; the rollback adds v1 embeddings / decisions of the gap and
    # one DeploymentChanged per model.
    rollback = demo_home.run["gap"] + demo_home.run["stale"] + demo_home.run["redecide"] + 2
    assert sum(counts.values()) == demo_home.run["events"] + rollback
    assert counts["DeploymentChanged"] == 8 and counts["ModelVersionRegistered"] == 4


def test_unreachable_broker_exits_2_with_one_line_and_no_traceback() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["--bootstrap", bootstrap, "init"])
    elapsed = time.monotonic() - started

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"Error: cannot reach a Kafka broker at {bootstrap}")
    assert "Traceback" not in result.output
    assert elapsed < 5


def _leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from _leaf_commands(command, path)


def test_every_command_has_help_with_an_example() -> None:
    assert isinstance(cli, click.Group)
    for path, _ in _leaf_commands(cli):
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example:" in result.stdout, f"`ledger {' '.join(path)} --help` has no example"


def test_every_command_that_reports_has_json() -> None:
    # broker reports nothing; export writes JSON lines already.
    exempt = {("broker",), ("export", "openlineage")}
    for path, command in _leaf_commands(cli):
        if isinstance(command, click.Group) or path in exempt:
            continue
        assert any(p.name == "as_json" for p in command.params), f"ledger {' '.join(path)}"


def test_every_command_is_in_docs_cli_md() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    for path, command in _leaf_commands(cli):
        if not isinstance(command, click.Group):
            words = " ".join(path)
            assert f"`ledger {words}" in doc or f"/ {path[-1]}" in doc, f"ledger {words}"


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["consume", "--until-caught-up"],
        ["rollback", "--model", "m", "--to", "v1", "--dry-run"],
        ["demo"],
        ["dlq", "redrive"],
    ],
)
def test_commands_needing_the_broker_fail_fast_with_one_line(tmp_path, command) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["--bootstrap", bootstrap, "--home", str(tmp_path), *command])
    assert time.monotonic() - started < 5
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"Error: cannot reach a Kafka broker at {bootstrap}")


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A port that accepts TCP connections and never answers: a hung broker."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize(("option", "waited"), [([], 5), (["--broker-timeout", "1"], 1)])
def test_a_broker_that_does_not_answer_fails_within_the_broker_timeout(
    silent_broker, option, waited
) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["--bootstrap", silent_broker, *option, "init"])
    elapsed = time.monotonic() - started

    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: cannot reach a Kafka broker at {silent_broker}: no answer within {waited}s "
        "(start one with `ledger broker`, or check --bootstrap / LEDGER_BOOTSTRAP)\n"
    )
    assert waited <= elapsed < waited + 4


def test_broker_timeout_must_be_positive() -> None:
    result = CliRunner().invoke(cli, ["--broker-timeout", "0", "init"])
    assert result.exit_code == 2
    assert "Invalid value for '--broker-timeout': 0.0 is not in the range x>0." in result.stderr
