"""`ledger consume`, `ledger status` and `ledger dlq` through click's CliRunner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.store import Batch, Shard
from tests.helpers import produce_embeddings, send_raw

pytestmark = pytest.mark.kafka


def _run(bootstrap, topics, home, *args):
    return CliRunner().invoke(
        cli, ["--bootstrap", bootstrap, "--home", str(home), "--topic-prefix", topics.prefix, *args]
    )


def test_consume_status_and_dlq_round_trip(bootstrap, topics, tmp_path):
    produce_embeddings(bootstrap, topics, 50)
    send_raw(bootstrap, [(topics.embeddings, b"k", b"\x00garbage")])

    consumed = _run(
        bootstrap, topics, tmp_path, "consume", "--no-group", "--until-caught-up", "--json"
    )
    assert consumed.exit_code == 0, consumed.output
    assert (json.loads(consumed.output)["events"], json.loads(consumed.output)["dead_letters"]) == (
        51,
        1,
    )

    status = _run(bootstrap, topics, tmp_path, "status", "--json")
    assert status.exit_code == 0, status.output
    rows = json.loads(status.output)
    assert all(r["lag"] == 0 and r["stored"] == r["end"] for r in rows)
    assert sum(r["dead_letters"] for r in rows) == 1
    assert sum(r["end"] for r in rows if r["topic"] == topics.embeddings) == 51

    listed = json.loads(_run(bootstrap, topics, tmp_path, "dlq", "list", "--json").output)
    assert [d["error"] for d in listed] == ["CorruptMessage"]
    shown = _run(bootstrap, topics, tmp_path, "dlq", "show", listed[0]["id"])
    assert shown.exit_code == 0 and "not an Avro single-object frame" in shown.output
    redriven = json.loads(_run(bootstrap, topics, tmp_path, "dlq", "redrive", "--json").output)
    assert (redriven["redriven"], [f["id"] for f in redriven["failing"]]) == ([], [listed[0]["id"]])

    human = _run(bootstrap, topics, tmp_path, "status")
    assert human.exit_code == 0 and topics.embeddings in human.output


def test_a_log_gap_is_one_line_and_exit_code_2(bootstrap, topics, tmp_path):
    Shard(tmp_path, "main").write(Batch({}, {(topics.models, 0): 7}))
    result = _run(bootstrap, topics, tmp_path, "consume", "--no-group", "--until-caught-up")
    assert result.exit_code == 2
    assert f"{topics.models}[0]: stored offset 7 is past the log's end 0" in result.output


def test_every_materialiser_command_has_help_with_an_example():
    for args in (
        ["consume"],
        ["status"],
        ["dlq"],
        ["dlq", "list"],
        ["dlq", "show"],
        ["dlq", "redrive"],
    ):
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output, args
