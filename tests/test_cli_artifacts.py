"""`ledger artifacts list|gc`: a thin layer over the artifacts and serving stages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ledger.artifacts.index_build import build_index
from ledger.cli import cli
from ledger.serving.pointers import switch


@pytest.fixture
def home(tmp_path):
    one = np.ones((2, 3), dtype=np.float32)
    paths = []
    for version, offset in (("v1", 1), ("v1", 2), ("v2", 3)):
        m = build_index(
            tmp_path / "artifacts",
            model="embedder",
            version=version,
            entity_ids=["a", "b"],
            vectors=one,
            metric="dot",
            log_offsets={"t:0": offset},
            trees=2,
            jobs=1,
        )
        paths.append(tmp_path / "artifacts" / m.relative_path)
    switch(tmp_path, "embedder", paths[0])
    return tmp_path, [p.relative_to(tmp_path).as_posix() for p in paths]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_artifacts_list_json_marks_the_serving_artifact(home):
    root, paths = home
    result = run("--home", root, "artifacts", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["version"], r["path"], r["serving"]) for r in rows] == [
        ("v1", paths[0], True),
        ("v1", paths[1], False),
        ("v2", paths[2], False),
    ]
    assert rows[0]["items"] == 2 and rows[0]["metric"] == "dot"


def test_artifacts_list_for_people_and_for_an_unknown_model(home):
    root, paths = home
    lines = run("--home", root, "artifacts", "list").output.splitlines()
    assert [line.split()[:3] + [line.split()[-1]] for line in lines] == [
        ["*", "embedder", "v1", paths[0]],
        ["embedder", "v1", "items=2", paths[1]],
        ["embedder", "v2", "items=2", paths[2]],
    ]
    result = run("--home", root, "artifacts", "list", "--model", "nobody")
    assert (result.exit_code, result.output) == (0, "no artifacts\n")


def test_artifacts_gc_keeps_serving_and_newest_and_dry_run_removes_nothing(home):
    root, paths = home
    dry = run("--home", root, "artifacts", "gc", "--keep-last", "0", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["removed"] == [paths[1], paths[2]]
    assert all((root / p).exists() for p in paths)

    kept = run("--home", root, "artifacts", "gc")  # newest per version + serving: all kept
    assert (kept.exit_code, kept.output) == (0, "removed 0 artifacts, 0 leftovers; kept 3\n")

    done = run("--home", root, "artifacts", "gc", "--keep-last", "0")
    assert done.exit_code == 0
    assert done.output == (
        f"removed {paths[1]}\nremoved {paths[2]}\nremoved 2 artifacts, 0 leftovers; kept 1\n"
    )
    assert [(root / p).exists() for p in paths] == [True, False, False]


def test_artifacts_gc_rejects_a_negative_keep_last(home):
    root, _ = home
    result = run("--home", root, "artifacts", "gc", "--keep-last", "-1")
    assert result.exit_code == 2


def test_artifacts_commands_have_help_with_an_example():
    for args in (["artifacts"], ["artifacts", "list"], ["artifacts", "gc"]):
        result = run(*args, "--help")
        assert result.exit_code == 0 and "Example:" in result.output


def test_artifacts_gc_keeps_the_previous_artifact_that_switch_back_needs(home):
    root, paths = home
    switch(root, "embedder", root / paths[2])  # v2 serves; v1 (paths[0]) is what switch-back uses

    done = run("--home", root, "artifacts", "gc", "--keep-last", "0", "--json")

    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["removed"] == [paths[1]]
    assert [(root / p).exists() for p in paths] == [True, False, True]


def test_artifacts_gc_refuses_while_a_rollback_runs(home):
    from ledger.serving.locks import rollback_lock

    root, paths = home
    with rollback_lock(root, "embedder"):
        result = run("--home", root, "artifacts", "gc", "--keep-last", "0")
    assert result.exit_code == 2
    assert "rollback" in result.output and "Traceback" not in result.output
    assert all((root / p).exists() for p in paths)
