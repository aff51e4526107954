"""``ledger demo`` from a clean state: its claims are checked from the DuckDB files it
leaves (demo.duckdb and the shards), not from its printed text."""

from __future__ import annotations

import uuid

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.demo.incident import CLASSIFIER, DEMO_DB, EMBEDDER, RUN_COLUMNS, RUNS_TABLE
from ledger.serving.open import open_index
from ledger.serving.pointers import current
from ledger.store import arrow, open_views

pytestmark = pytest.mark.kafka


def _runs(home):
    con = duckdb.connect(str(home / DEMO_DB), read_only=True)
    try:
        return con.sql(f"SELECT * FROM {RUNS_TABLE}").to_arrow_table().to_pylist()  # noqa: S608
    finally:
        con.close()


def test_demo_records_mixed_before_zero_after_and_verify_passed(demo_home):
    (run,) = _runs(demo_home.home)
    assert tuple(run) == RUN_COLUMNS
    assert run["mixed_before"] > 0 and run["mixed_after"] == 0
    assert run["verify_passed"] is True and run["checks"] >= 5 and run["switched"] is True
    assert run["recall_naive_redeploy"] < 0.5 < 0.9 < run["recall_after"]
    assert run["example_right_before"] < run["example_right_after"]
    assert run["seconds"] < 60
    assert demo_home.run["mixed_before"] == run["mixed_before"]  # --json says the same


def test_demo_claims_agree_with_the_views_and_the_serving_index(demo_home):
    (run,) = _runs(demo_home.home)
    with open_views(demo_home.home) as con:
        counts = {
            (r["model"], r["model_version"]): r
            for r in arrow(con, "SELECT * FROM version_counts").to_pylist()
        }
        live = arrow(con, "SELECT entity_id FROM live_entities($m)", m=EMBEDDER)
        v1 = arrow(con, "SELECT entity_id, vector FROM version_embeddings($m, 'v1')", m=EMBEDDER)
        now = dict(con.execute("SELECT model, model_version FROM serving_now").fetchall())
    # Before the rollback the gap and stale entities' current vectors were v2 as well; the
    # rollback's v1 embeddings of them are in the log now.
    v2_now = counts[(EMBEDDER, "v2")]["current_vectors"]
    assert run["mixed_before"] == v2_now + run["gap"] + run["stale"]
    assert run["live"] == live.num_rows
    assert now == {EMBEDDER: "v1", CLASSIFIER: "v1"}  # the rollback's DeploymentChanged
    assert current(demo_home.home, EMBEDDER).version == "v1"

    # mixed_after == 0, independently: the serving index holds exactly the live entities'
    # latest v1 vectors.
    want = dict(
        zip(v1.column("entity_id").to_pylist(), v1.column("vector").to_pylist(), strict=True)
    )
    assert set(want) == set(live.column("entity_id").to_pylist())  # the gap was filled
    with open_index(demo_home.home, EMBEDDER) as index:
        assert sorted(index.item_ids) == sorted(want)
        for entity in sorted(want)[::97]:
            np.testing.assert_array_equal(
                np.asarray(index.get_vector(entity), "<f4"), np.asarray(want[entity], "<f4")
            )


def test_demo_again_in_the_same_home_replaces_its_state(bootstrap, tmp_path):
    home = tmp_path / "h"
    args = ["--bootstrap", bootstrap, "--home", str(home), "demo", "--texts", "400", "--json"]
    for _ in range(2):
        result = CliRunner().invoke(cli, ["--topic-prefix", f"d{uuid.uuid4().hex[:10]}", *args])
        assert result.exit_code == 0, result.output
    (run,) = _runs(home)
    assert run["texts"] == 400 and run["mixed_after"] == 0 and run["verify_passed"]


def test_demo_refuses_a_home_that_is_not_a_demo_and_topics_with_events(
    bootstrap, tmp_path, demo_home
):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "main.duckdb").write_bytes(b"")
    prefix = f"d{uuid.uuid4().hex[:10]}"
    args = ["--bootstrap", bootstrap, "--topic-prefix", prefix, "--home", str(tmp_path), "demo"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {tmp_path} holds a ledger state that is not a demo's (pass another --home)\n"
    )
    assert (tmp_path / "shards" / "main.duckdb").exists()

    result = CliRunner().invoke(
        cli,
        [
            "--bootstrap",
            bootstrap,
            "--topic-prefix",
            demo_home.topics.prefix,
            "--home",
            str(tmp_path / "new"),
            "demo",
        ],
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: the topics {demo_home.topics.prefix}.* already hold events "
        "(pass a fresh --topic-prefix)\n"
    )


def test_demo_replaces_the_state_of_a_demo_that_crashed_half_way(bootstrap, tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "main.duckdb").write_bytes(b"not a database")
    (tmp_path / ".demo").write_text("")
    prefix = f"d{uuid.uuid4().hex[:10]}"
    result = CliRunner().invoke(
        cli,
        [
            "--bootstrap",
            bootstrap,
            "--topic-prefix",
            prefix,
            "--home",
            str(tmp_path),
            "demo",
            "--texts",
            "300",
        ],
    )
    assert result.exit_code == 0, result.output
    (run,) = _runs(tmp_path)
    assert run["texts"] == 300 and run["verify_passed"]
