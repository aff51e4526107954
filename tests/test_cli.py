"""The ``ledger`` command through click's CliRunner, against the real broker."""

from __future__ import annotations

import json
import time
import uuid

import click
import pytest
from click.testing import CliRunner

from ledger.broker import free_port
from ledger.cli import cli
from ledger.log import admin_client


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
def test_demo_json_counts_every_event_it_produced_per_version(bootstrap: str) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "--bootstrap",
            bootstrap,
            "--topic-prefix",
            _prefix(),
            "demo",
            "--events",
            "300",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["events"]
    counts = {(r["event_type"], r["model"], r["version"]): r["events"] for r in rows}
    assert counts == {
        ("ModelVersionRegistered", "text-embedder", "v1"): 1,
        ("ModelVersionRegistered", "text-embedder", "v2"): 1,
        ("ModelVersionRegistered", "spam-filter", "v1"): 1,
        ("ModelVersionRegistered", "spam-filter", "v2"): 1,
        ("DeploymentChanged", "text-embedder", "v1"): 1,
        ("EmbeddingWritten", "text-embedder", "v1"): 300,
        ("EmbeddingWritten", "text-embedder", "v2"): 100,
        ("DecisionRecorded", "spam-filter", "v2"): 100,
    }


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


def test_every_command_has_help_with_an_example() -> None:
    assert isinstance(cli, click.Group)
    for name in cli.commands:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example:" in result.stdout, f"`ledger {name} --help` has no example"
