"""Auditor commands and doctor through CliRunner, on the home the demo left."""

from __future__ import annotations

import csv
import io
import json
import re
import time
import uuid
from datetime import datetime

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.demo.incident import CLASSIFIER, EMBEDDER
from ledger.log.broker import free_port

pytestmark = pytest.mark.kafka


def run(demo_home, *args, bootstrap=None):
    return CliRunner().invoke(cli, [*demo_home.args(bootstrap), *args])


# --- sql ----------------------------------------------------------------------------------


def test_sql_prints_an_aligned_table(demo_home):
    result = run(demo_home, "sql", "SELECT model, model_version FROM serving_now ORDER BY model")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "model          model_version\n"
        "-------------  -------------\n"
        "spam-filter    v1\n"
        "text-embedder  v1\n"
    )


def test_sql_table_json_and_csv_agree(demo_home):
    query = "SELECT model, model_version, current_vectors FROM version_counts ORDER BY ALL"
    table = run(demo_home, "sql", query)
    as_json = run(demo_home, "sql", query, "--json")
    as_csv = run(demo_home, "sql", query, "--csv")
    assert table.exit_code == as_json.exit_code == as_csv.exit_code == 0, table.output
    rows = json.loads(as_json.stdout)
    assert [r["model_version"] for r in rows] == ["v1", "v2", "v1", "v2"]
    assert set(rows[0]) == {"model", "model_version", "current_vectors"}
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [{k: str(v) for k, v in r.items()} for r in rows] == parsed
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["model", "model_version", "current_vectors"]
    assert set(lines[1]) <= {"-", " "}
    assert [line.split() for line in lines[2:]] == [
        [r["model"], r["model_version"], str(r["current_vectors"])] for r in rows
    ]


def test_sql_reads_the_demo_runs_offline(demo_home):
    result = run(
        demo_home, "sql", "SELECT mixed_after, verify_passed FROM demo.demo_runs", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"mixed_after": 0, "verify_passed": True}]


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM embeddings",
        "INSERT INTO shard_0.decisions SELECT * FROM shard_0.decisions",
        "CREATE TABLE notes AS SELECT 1",
        "COPY (SELECT 1) TO 'x.csv'",
        "ATTACH 'other.duckdb' AS other",
        "SELECT 1; DROP VIEW embeddings",
    ],
)
def test_sql_refuses_writes_with_one_line_exit_2(demo_home, statement):
    result = run(demo_home, "sql", statement)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert "refused" in result.stderr or "exactly one SQL statement" in result.stderr
    check = run(demo_home, "sql", "SELECT count(*) AS n FROM embeddings", "--json")
    assert json.loads(check.stdout)[0]["n"] > 0


def test_sql_bad_query_is_one_line_exit_2(demo_home):
    result = run(demo_home, "sql", "SELECT nope FROM embeddings")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "nope" in result.stderr
    assert "Traceback" not in result.output


def test_sql_without_state_says_what_to_do(tmp_path):
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "none"), "sql", "SELECT 1"])
    assert result.exit_code == 2
    assert "no ledger state" in result.stderr and "ledger demo" in result.stderr


# --- lineage ------------------------------------------------------------------------------


def test_lineage_shows_every_event_with_the_serving_version(demo_home):
    # doc-002201: embedded and decided by v1; edited, re-embedded and decided by v2
    # while v2 served; stale for v1, so the rollback re-embedded it with v1 (under the
    # naive redeploy of v1). It kept a v1 decision, so it was not re-decided.
    result = run(demo_home, "lineage", "doc-002201", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    seen = [(r["event"], r["model"], r["model_version"], r["serving_version"]) for r in rows]
    assert seen == [
        ("EmbeddingWritten", EMBEDDER, "v1", "v1"),
        ("DecisionRecorded", CLASSIFIER, "v1", "v1"),
        ("EmbeddingWritten", EMBEDDER, "v2", "v2"),
        ("DecisionRecorded", CLASSIFIER, "v2", "v2"),
        ("EmbeddingWritten", EMBEDDER, "v1", "v1"),
    ]
    times = [datetime.fromisoformat(r["event_time"]) for r in rows]
    assert times == sorted(times)

    table = run(demo_home, "lineage", "doc-002201", "--model", CLASSIFIER)
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split()[:4] == [
        "event_time",
        "event",
        "model",
        "model_version",
    ]
    assert len(table.stdout.splitlines()) == 2 + 2


def test_lineage_of_a_deleted_entity_shows_the_deletion(demo_home):
    result = run(demo_home, "lineage", "doc-000050", "--model", EMBEDDER, "--json")
    events = [r["event"] for r in json.loads(result.stdout)]
    assert events[-1] == "EntityDeleted"


def test_lineage_unknown_id_and_unknown_model_exit_2(demo_home):
    unknown = run(demo_home, "lineage", "no-such-doc")
    assert unknown.exit_code == 2 and "no events about 'no-such-doc'" in unknown.stderr
    model = run(demo_home, "lineage", "doc-000001", "--model", "nope")
    assert model.exit_code == 2
    assert model.stderr.strip() == (
        f"Error: unknown model 'nope'; registered: {CLASSIFIER}, {EMBEDDER}"
    )


# --- versions -----------------------------------------------------------------------------


def test_versions_counts_and_serving_windows(demo_home):
    result = run(demo_home, "versions", "--model", EMBEDDER, "--json")
    assert result.exit_code == 0, result.output
    rows = {r["version"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"v1", "v2"}
    assert rows["v1"]["serving"] and not rows["v2"]["serving"]
    live = demo_home.run["live"]
    assert rows["v1"]["current_vectors"] + rows["v2"]["current_vectors"] == live
    assert [w["reason"] for w in rows["v2"]["windows"]] == ["new model: better on long texts"]
    assert len(rows["v1"]["windows"]) == 3 and rows["v1"]["windows"][-1]["until"] is None

    table = run(demo_home, "versions", "--model", CLASSIFIER)
    assert table.exit_code == 0
    assert re.search(r"^v2 served .* -> .*\(new model", table.stdout, re.M)


def test_versions_unknown_model_and_version_exit_2(demo_home):
    model = run(demo_home, "versions", "--model", "nope")
    assert model.exit_code == 2 and "unknown model 'nope'" in model.stderr
    version = run(demo_home, "versions", "--model", EMBEDDER, "--version", "v9")
    assert version.exit_code == 2
    assert version.stderr.strip() == f"Error: model '{EMBEDDER}' has no version 'v9'"


# --- export openlineage -------------------------------------------------------------------

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _check_run_event(event):
    # Required keys and types of the OpenLineage 2-0-2 RunEvent (BaseEvent + run + job).
    assert event["eventType"] in {"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}
    assert datetime.fromisoformat(event["eventTime"]).tzinfo is not None
    assert event["producer"].startswith("https://")
    assert event["schemaURL"].startswith("https://openlineage.io/spec/")
    assert event["schemaURL"].endswith("#/$defs/RunEvent")
    assert _UUID.match(event["run"]["runId"])
    assert isinstance(event["job"]["namespace"], str) and isinstance(event["job"]["name"], str)
    for dataset in event["inputs"] + event["outputs"]:
        assert isinstance(dataset["namespace"], str) and isinstance(dataset["name"], str)
    for facet in event["run"].get("facets", {}).values():
        assert facet["_producer"].startswith("https://") and facet["_schemaURL"]


def test_export_openlineage_one_run_event_per_deployment(demo_home, tmp_path):
    out = tmp_path / "runs.jsonl"
    result = run(demo_home, "export", "openlineage", "--out", str(out))
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(events) == 8  # initial, v2, naive v1, rollback; for two models
    for event in events:
        _check_run_event(event)
    assert {e["eventType"] for e in events} == {"COMPLETE"}
    rollbacks = [e for e in events if e["job"]["name"].endswith(".rollback")]
    assert sorted(e["job"]["name"] for e in rollbacks) == [
        f"{CLASSIFIER}.rollback",
        f"{EMBEDDER}.rollback",
    ]
    embed = next(e for e in rollbacks if e["job"]["name"] == f"{EMBEDDER}.rollback")
    assert embed["outputs"][0]["name"] == demo_home.run["artifact"]
    assert [i["name"] for i in embed["inputs"]] == [
        demo_home.topics.models,
        demo_home.topics.embeddings,
    ]
    assert embed["run"]["facets"]["ledger_deployment"]["toVersion"] == "v1"
    # runIds are derived from the event ids: a second export gives the same runs.
    again = run(demo_home, "export", "openlineage")
    assert [json.loads(x)["run"]["runId"] for x in again.stdout.splitlines()] == [
        e["run"]["runId"] for e in events
    ]
    assert len({e["run"]["runId"] for e in events}) == 8


# --- doctor -------------------------------------------------------------------------------


def test_doctor_all_ok_on_a_healthy_home(demo_home, bootstrap):
    result = run(demo_home, "doctor", "--json", bootstrap=bootstrap)
    assert result.exit_code == 0, result.output
    findings = {f["check"]: f for f in json.loads(result.stdout)}
    assert list(findings) == [
        "broker",
        "client",
        "topics",
        "history",
        "store",
        "serving",
        "deployments",
        "dead letters",
        "lag",
    ]
    assert {f["status"] for f in findings.values()} == {"ok"}, findings


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_doctor_names_the_kafka_client_in_use_and_its_version(
    demo_home, bootstrap, monkeypatch, client
):
    from importlib.metadata import version

    monkeypatch.setenv("LEDGER_KAFKA_CLIENT", client)
    result = run(demo_home, "doctor", "--json", bootstrap=bootstrap)
    assert result.exit_code == 0, result.output
    (found,) = [f for f in json.loads(result.stdout) if f["check"] == "client"]
    package = {"kafka-python": "kafka-python", "librdkafka": "confluent-kafka"}[client]
    assert found["status"] == "ok"
    assert found["detail"].startswith(f"{client} {version(package)}")


def test_doctor_fails_a_client_asked_for_and_unknown_with_what_to_set(demo_home, monkeypatch):
    monkeypatch.setenv("LEDGER_KAFKA_CLIENT", "kcat")
    result = run(demo_home, "doctor", "--json", bootstrap=f"127.0.0.1:{free_port()}")
    (found,) = [f for f in json.loads(result.stdout) if f["check"] == "client"]
    assert found["status"] == "fail"
    assert "LEDGER_KAFKA_CLIENT='kcat'" in found["detail"]
    assert "kafka-python, librdkafka" in found["fix"]


def test_doctor_unreachable_broker_fails_fast_with_a_fix(demo_home):
    started = time.monotonic()
    result = run(demo_home, "doctor", bootstrap=f"127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 5
    assert result.exit_code == 1
    first = result.stdout.splitlines()[:2]
    assert first[0].startswith("fail  broker       cannot reach 127.0.0.1:")
    assert first[1].startswith("      fix: ")
    assert "ok    serving" in result.stdout  # the offline checks still ran


def test_doctor_flags_a_corrupted_serving_artifact_and_missing_topics(
    demo_home, bootstrap, tmp_path
):
    import shutil

    home = tmp_path / "copy"
    shutil.copytree(demo_home.home, home)
    artifact = home / demo_home.run["artifact"]
    victim = next(p for p in sorted(artifact.iterdir()) if p.name != "manifest.json")
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
    result = CliRunner().invoke(
        cli,
        [
            "--bootstrap",
            bootstrap,
            "--home",
            str(home),
            "--topic-prefix",
            f"none{uuid.uuid4().hex[:8]}",
            "doctor",
            "--json",
        ],
    )
    assert result.exit_code == 1
    findings = {f["check"]: f for f in json.loads(result.stdout)}
    assert findings["serving"]["status"] == "fail"
    assert victim.name in findings["serving"]["detail"]
    assert findings["topics"]["status"] == "fail" and "ledger init" in findings["topics"]["fix"]


def test_verify_offline_on_the_demo_home_passes_without_a_lag_check(demo_home):
    result = run(demo_home, "verify", "--model", "text-embedder", "--offline", "--json")
    assert result.exit_code == 0, result.output
    checks = {c["check"] for c in json.loads(result.output)["checks"]}
    assert {"checksum", "count", "purity", "recall"} <= checks and "lag" not in checks
