"""What serves stays provably what the log says, through crashes and hand edits: a set of
pointers switches as one, a pointer the log does not record fails verify and doctor, a
rerun after a crash publishes nothing twice, and a damaged serving folder is named and
repaired by the next rollback."""

from __future__ import annotations

import json

import pytest
from scenario import CLASSIFIER, EMBEDDER, play_incident

import ledger.serving.journal
from ledger import Producer
from ledger.contract.schemas import default_store
from ledger.contract.wire import decode
from ledger.errors import ServingError, UnknownModelVersion
from ledger.log.reading import read_to_end
from ledger.ops.doctor import doctor
from ledger.ops.rollback import rollback
from ledger.ops.verify import verify
from ledger.serving.journal import pending_switch
from ledger.serving.pointers import current, history, switch

pytestmark = pytest.mark.kafka

MODELS = [EMBEDDER, CLASSIFIER]


class Crash(BaseException):
    """Stands for the process dying at that point (not an error anything handles)."""


@pytest.fixture
def incident(bootstrap, topics):
    with Producer(bootstrap=bootstrap, name="search-api", topics=topics) as producer:
        return play_incident(producer)


@pytest.fixture
def on_v2(bootstrap, topics, tmp_path, incident):
    """A home whose rollback to v2 switched and recorded both models."""
    result = rollback(bootstrap, topics, tmp_path, MODELS, to="v2", dry_run=False)
    assert result.switched
    return tmp_path


def _deployments(bootstrap, topics, since=()):
    """(model, from, to) of every DeploymentChanged in the log, after the first ``since``."""
    out = []
    for message in read_to_end(bootstrap, [topics.models]):
        name, record = decode(default_store(), message.value)
        if name == "DeploymentChanged":
            out.append((record["model"], record["from_version"], record["model_version"]))
    return out[len(since) :]


def _failed(report):
    return sorted((c.model, c.name) for c in report.checks if not c.passed)


def _crash_on_call(monkeypatch, target, name, n):
    """Let ``target.name`` run ``n - 1`` times, then crash on call ``n``."""
    real = getattr(target, name)
    calls = []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, crashing)


def test_crash_between_two_pointer_switches_is_reported_and_the_rerun_finishes_it(
    bootstrap, topics, on_v2, monkeypatch
):
    home = on_v2
    earlier = _deployments(bootstrap, topics)
    _crash_on_call(monkeypatch, ledger.serving.journal, "switch", 2)
    with pytest.raises(Crash):
        rollback(bootstrap, topics, home, MODELS, to="v1", dry_run=False)
    monkeypatch.undo()
    versions = {m: current(home, m).version for m in MODELS}
    assert sorted(versions.values()) == ["v1", "v2"]  # half switched

    report = verify(bootstrap, topics, home, MODELS)
    assert ("*", "switch") in _failed(report)
    switch_check = next(c for c in report.checks if c.name == "switch")
    assert "did not finish" in switch_check.detail
    assert switch_check.cli_hint.startswith("ledger rollback --model")
    findings = {f.check: f for f in doctor(bootstrap, topics, home)}
    assert findings["deployments"].status == "fail"

    rollback(bootstrap, topics, home, MODELS, to="v1", dry_run=False)

    assert {m: current(home, m).version for m in MODELS} == {m: "v1" for m in MODELS}
    assert pending_switch(home) is None
    assert verify(bootstrap, topics, home, MODELS).passed
    assert sorted(_deployments(bootstrap, topics, earlier)) == [
        (CLASSIFIER, "v2", "v1"),
        (EMBEDDER, "v2", "v1"),
    ]


def test_pointer_switched_outside_a_rollback_fails_verify_and_doctor(
    bootstrap, topics, on_v2, tmp_path
):
    home = on_v2
    v2 = current(home, EMBEDDER)
    other = rollback(bootstrap, topics, tmp_path / "other", [EMBEDDER], to="v1", dry_run=False)
    # What a forged pointer amounts to: serving moved with no rollback, lock or event.
    forged_artifact = home / "artifacts" / "forged"
    forged_artifact.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "other" / other.artifacts[EMBEDDER]).rename(forged_artifact)
    switch(home, EMBEDDER, forged_artifact)

    report = verify(bootstrap, topics, home, EMBEDDER)

    assert (EMBEDDER, "deployed") in _failed(report)
    deployed = next(c for c in report.checks if c.name == "deployed")
    assert "log's latest deployment" in deployed.detail and "v1" in deployed.detail
    assert deployed.figures["log_version"] == v2.version == "v2"
    findings = {f.check: f for f in doctor(bootstrap, topics, home)}
    assert findings["deployments"].status == "fail"
    assert EMBEDDER in findings["deployments"].detail


def test_crash_after_the_switch_before_the_event_then_rerun_records_it_once(
    bootstrap, topics, on_v2, monkeypatch
):
    home = on_v2
    earlier = _deployments(bootstrap, topics)
    _crash_on_call(monkeypatch, Producer, "record_deployment", 1)
    with pytest.raises(Crash):
        rollback(bootstrap, topics, home, MODELS, to="v1", dry_run=False)
    monkeypatch.undo()
    artifacts = {m: current(home, m).artifact for m in MODELS}
    assert {m: current(home, m).version for m in MODELS} == {m: "v1" for m in MODELS}

    before = verify(bootstrap, topics, home, MODELS)
    assert _failed(before) == [(CLASSIFIER, "deployed"), (EMBEDDER, "deployed")]

    rollback(bootstrap, topics, home, MODELS, to="v1", dry_run=False)

    assert {m: current(home, m).artifact for m in MODELS} == artifacts  # nothing rebuilt
    assert verify(bootstrap, topics, home, MODELS).passed
    assert sorted(_deployments(bootstrap, topics, earlier)) == [
        (CLASSIFIER, "v2", "v1"),
        (EMBEDDER, "v2", "v1"),
    ]


def test_rerun_after_a_crash_between_two_events_publishes_no_phantom_deployment(
    bootstrap, topics, on_v2, monkeypatch
):
    home = on_v2
    earlier = _deployments(bootstrap, topics)
    _crash_on_call(monkeypatch, Producer, "record_deployment", 2)
    with pytest.raises(Crash):
        rollback(bootstrap, topics, home, MODELS, to="v1", dry_run=False)
    monkeypatch.undo()
    artifacts = {m: current(home, m).artifact for m in MODELS}

    again = rollback(bootstrap, topics, home, MODELS, to="v1", dry_run=False)

    assert dict(again.artifacts) == artifacts  # the published event moved no artifact
    # one event per model, none "v1 from v1"
    assert sorted(_deployments(bootstrap, topics, earlier)) == [
        (CLASSIFIER, "v2", "v1"),
        (EMBEDDER, "v2", "v1"),
    ]
    assert len(again.deployment_event_ids) == 1


def test_rollback_of_an_unknown_model_leaves_no_lock_file(bootstrap, topics, tmp_path, incident):
    with pytest.raises(UnknownModelVersion):
        rollback(bootstrap, topics, tmp_path, ["nosuch"], to="v1", dry_run=False)

    assert not list((tmp_path / "locks").glob("*nosuch*"))


def test_doctor_catches_a_manifest_edited_after_the_switch(bootstrap, topics, on_v2):
    manifest = current(on_v2, EMBEDDER).artifact_path(on_v2) / "manifest.json"
    data = json.loads(manifest.read_text())
    data["items"] += 1  # the file checksums do not cover the manifest itself
    manifest.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    findings = {f.check: f for f in doctor(bootstrap, topics, on_v2)}

    assert findings["serving"].status == "fail"
    assert "changed since the switch" in findings["serving"].detail


def test_a_torn_pointer_is_named_and_the_next_rollback_replaces_it(bootstrap, topics, on_v2):
    pointer_file = on_v2 / "serving" / f"{EMBEDDER}.json"
    pointer_file.write_text('{"model": "text-emb')  # torn by a crash or a bad copy

    with pytest.raises(ServingError, match=str(pointer_file)):
        current(on_v2, EMBEDDER)
    result = rollback(bootstrap, topics, on_v2, MODELS, to="v1", dry_run=False)

    assert result.switched and current(on_v2, EMBEDDER).version == "v1"
    assert len(list(pointer_file.parent.glob(f"{EMBEDDER}.json.torn-*"))) == 1


def test_a_leftover_temporary_pointer_is_removed_by_the_next_switch(bootstrap, topics, on_v2):
    leftover = on_v2 / "serving" / f".{EMBEDDER}.json.tmp-999999"
    leftover.write_text("half a pointer")

    rollback(bootstrap, topics, on_v2, [EMBEDDER], to="v1", dry_run=False)

    assert not leftover.exists()


def test_an_unreadable_history_line_names_the_file(bootstrap, topics, on_v2):
    rollback(bootstrap, topics, on_v2, [EMBEDDER], to="v1", dry_run=False)
    path = on_v2 / "serving" / f"{EMBEDDER}.history.jsonl"
    path.write_text("not json\n" + path.read_text())

    with pytest.raises(ServingError, match=f"line 1 of the serving history {path}"):
        history(on_v2, EMBEDDER)


def test_rollback_refuses_a_negative_search_k(ledger_cli, tmp_path):
    result = ledger_cli(tmp_path, "rollback", "--model", EMBEDDER, "--to", "v1", "--search-k", -5)

    assert result.exit_code == 2
    assert "a positive number of tree nodes, or -1" in result.output
