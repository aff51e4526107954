"""``ledger runbook`` on the seed's incident: the commands it lists, run in order, perform
the rollback and leave exactly the target serving; its undo restores what served; and
``ledger switch-back`` undoes a switch instantly and tells the log."""

from __future__ import annotations

import json
import re
import shlex

import numpy as np
import pytest
from click.testing import CliRunner
from scenario import CLASSIFIER, EMBEDDER, play_incident

from consumers.catchup import catch_up
from ledger import Producer
from ledger.artifacts.decision_table import read_decision_table
from ledger.cli import cli
from ledger.serving.open import open_index
from ledger.serving.pointers import current
from ledger.store import open_views

pytestmark = pytest.mark.kafka

MODELS = [EMBEDDER, CLASSIFIER]


@pytest.fixture
def incident(bootstrap, topics):
    with Producer(bootstrap=bootstrap, name="search-api", topics=topics) as producer:
        return play_incident(producer)


def _section_commands(markdown: str, heading: str) -> list[list[str]]:
    """The ``ledger`` lines of the bash block(s) under ``## heading``, split as a shell would."""
    section = re.search(rf"^## {heading}\n(.*?)(?=^## |\Z)", markdown, flags=re.M | re.S)
    assert section is not None, f"no section {heading!r}"
    blocks = re.findall(r"^```bash\n(.*?)^```", section.group(1), flags=re.M | re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.strip() and not line.startswith("#")]


def _run(argv: list[str]) -> None:
    assert argv[0] == "ledger"
    result = CliRunner().invoke(cli, argv[1:])
    assert result.exit_code == 0, f"{shlex.join(argv)}\n{result.output}"


def _name(argv: list[str]) -> str:
    return argv[argv.index("--topic-prefix") + 2]  # the runbook's global options come first


def _run_all(commands: list[list[str]]) -> list[str]:
    ran = []
    for argv in commands:
        assert _name(argv) in cli.commands, f"the runbook lists an unknown command: {argv}"
        _run(argv)
        ran.append(_name(argv))
    return ran


def _serving_state(home):
    with open_index(home, EMBEDDER) as index:
        items = {e: np.asarray(index.get_vector(e), "<f4") for e in index.item_ids}
    pointer = current(home, CLASSIFIER)
    table = read_decision_table(pointer.artifact_path(home))
    labels = dict(zip(table["subject_id"].to_pylist(), table["label"].to_pylist(), strict=True))
    return current(home, EMBEDDER).version, pointer.version, items, labels


def _assert_serves(home, incident, version):
    emb_version, clf_version, items, labels = _serving_state(home)
    assert (emb_version, clf_version) == (version, version)
    want = incident.items(version)
    assert items.keys() == want.keys()
    for entity, vector in want.items():
        np.testing.assert_array_equal(items[entity], vector)
    assert labels == incident.decision_table(version)


def test_runbook_commands_run_in_order_roll_back_and_undo(
    bootstrap, topics, ledger_cli, tmp_path, incident
):
    home = tmp_path / "home"
    path = tmp_path / "runbook.md"
    result = ledger_cli(
        home, "runbook", "--model", EMBEDDER, "--model", CLASSIFIER, "--to", "v1", "--out", path
    )
    assert result.exit_code == 0, result.output
    md = path.read_text()
    assert current(home, EMBEDDER) is None  # writing a runbook changes nothing

    # What serves now (the log: v1 again after the naive redeploy) and the counts.
    assert re.search(
        rf"^\| {EMBEDDER} \| v1 \| .* \| oncall: quality drop: naive redeploy "
        r"\| none on this home \|$",
        md,
        flags=re.M,
    )
    assert f"| gap (live, no v1 embedding) | {len(incident.gap('v1'))} |" in md
    assert f"| stale (content changed after v1 embedded it) | {len(incident.stale('v1'))} |" in md
    assert f"| live entities | {len(incident.live())} |" in md
    assert f"| re-decide (no v1 decision) | {len(incident.redecide('v1'))} |" in md
    blast = incident.blast_radius("v1", "v2")
    rows = re.search(r"^\| blast radius .* \| (\d+) \|$", md, flags=re.M)
    assert rows and int(rows.group(1)) >= len(blast) > 0
    listed = re.findall(r"^\| ([\w-]+) \| 1 \|$", md, flags=re.M)
    assert listed and set(listed) <= blast and len(listed) == min(10, len(blast))
    assert "from default rates" in md

    commands = _section_commands(md, "Commands")
    assert [_name(c) for c in commands] == ["status", "rollback", "rollback", "verify"]
    assert _run_all(commands) in (
        ["status", "rollback", "rollback"],
        ["status", "rollback", "rollback", "verify"],
    )
    _assert_serves(home, incident, "v1")

    # This home had no artifact before and v1 already served (a naive redeploy): backing
    # out goes to the version that served before it, rebuilt from the log.
    undo = _section_commands(md, "Undo")
    assert [shlex.join(c) for c in undo] == [
        shlex.join(
            [
                "ledger",
                "--home",
                str(home),
                "--bootstrap",
                bootstrap,
                "--topic-prefix",
                topics.prefix,
                "rollback",
                "--model",
                EMBEDDER,
                "--model",
                CLASSIFIER,
                "--to",
                "v2",
                "--yes",
                "--reason",
                "undo: back to v2",
                "--actor",
                "oncall",
            ]
        )
    ]
    _run_all(undo)
    _assert_serves(home, incident, "v2")


def test_switch_back_serves_the_previous_artifact_and_records_it(
    bootstrap, topics, tmp_path, incident
):
    base = ["--bootstrap", bootstrap, "--home", str(tmp_path), "--topic-prefix", topics.prefix]
    models = ["--model", EMBEDDER, "--model", CLASSIFIER]
    refused = CliRunner().invoke(cli, [*base, "switch-back", *models])
    assert refused.exit_code == 2 and "no earlier serving artifact" in refused.output

    for version in ("v2", "v1"):
        _run(["ledger", *base, "rollback", *models, "--to", version, "--yes"])
    _assert_serves(tmp_path, incident, "v1")

    # The runbook for the next move lists switch-back as its (instant) undo.
    book = CliRunner().invoke(cli, [*base, "runbook", *models, "--to", "v2"])
    assert book.exit_code == 0, book.output
    assert [_name(c) for c in _section_commands(book.output, "Undo")] == ["switch-back"]

    # v1 already serves from this home: rolling to v1 again has nothing to undo.
    same = CliRunner().invoke(cli, [*base, "runbook", *models, "--to", "v1"])
    assert same.exit_code == 0, same.output
    assert _section_commands(same.output, "Undo") == []
    assert f"{EMBEDDER}: already serves v1 on this home" in same.output

    result = CliRunner().invoke(cli, [*base, "switch-back", *models, "--actor", "oncall", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["model"], r["from_version"], r["to_version"]) for r in rows] == [
        (EMBEDDER, "v1", "v2"),
        (CLASSIFIER, "v1", "v2"),
    ]
    _assert_serves(tmp_path, incident, "v2")

    catch_up(bootstrap, topics, tmp_path)  # materialise the switch-back events
    with open_views(tmp_path) as con:
        now = con.execute(
            "SELECT model, model_version, reason, actor FROM serving_history "
            "WHERE served_until IS NULL ORDER BY model"
        ).fetchall()
    assert now == [
        (CLASSIFIER, "v2", "switch-back", "oncall"),
        (EMBEDDER, "v2", "switch-back", "oncall"),
    ]
