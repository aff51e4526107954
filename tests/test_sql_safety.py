"""`ledger sql` runs one plain query and nothing else: each way out (writing files,
reading system files, extensions, settings, attaching, running forever, holding the
shards) is refused with one line and exit 2, and the engine refuses it on its own too.

Each test works on a copy of the demo's home, so a vector that got through would show
in that copy (files written, pointers moved) and never in the shared demo home.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.demo.incident import EMBEDDER
from ledger.serving.pointers import current, pointers
from ledger.store import ARROW_SCHEMAS, Batch, Shard, shard_paths

pytestmark = pytest.mark.kafka

LONG_QUERY = "SELECT sum(i % 7) FROM range(100000000000) t(i)"  # minutes of work


@pytest.fixture
def home(demo_home, tmp_path, monkeypatch) -> Path:
    """A copy of the demo's home; the working directory and the temp folder are empty
    folders of this test's, so a file written anywhere near shows up."""
    copy = tmp_path / "home"
    shutil.copytree(demo_home.home, copy)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return copy


def run(home: Path, *args: str):
    return CliRunner().invoke(cli, ["--home", str(home), *args])


def files(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` with the sha256 of its bytes."""
    out = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_refused(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def watched(home: Path) -> list[Path]:
    return [home, Path.cwd(), Path(tempfile.gettempdir())]


# --- statements that write ------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "EXPLAIN ANALYZE COPY (SELECT 42 AS answer) TO 'out.csv'",
        "EXPLAIN ANALYSE COPY (SELECT 42 AS answer) TO 'out.csv'",
        "EXPLAIN (ANALYZE) COPY (SELECT 42 AS answer) TO 'out.csv'",
        "EXPLAIN (FORMAT json, ANALYZE) COPY (SELECT 42 AS answer) TO 'out.csv'",
        "/* x */ EXPLAIN ANALYZE COPY (SELECT 42 AS answer) TO 'out.csv'",
        "EXPLAIN /* x */ ANALYZE -- y\n COPY (SELECT 42 AS answer) TO 'out.csv'",
        "COPY (SELECT 42 AS answer) TO 'out.csv'",
    ],
)
def test_copy_to_a_file_is_refused_and_writes_nothing(home, statement):
    before = files(*watched(home))
    assert_refused(run(home, "sql", statement), "refused")
    assert not Path("out.csv").exists()
    assert files(*watched(home)) == before


@pytest.mark.parametrize("explain", ["", "EXPLAIN ANALYZE "])
def test_copy_to_a_serving_pointer_is_refused_and_no_pointer_moves(home, explain):
    pointer = home / "serving" / f"{EMBEDDER}.json"
    before, serving, embedder = pointer.read_bytes(), pointers(home), current(home, EMBEDDER)
    forged = json.dumps({**json.loads(before), "version": "v2"}).replace("'", "''")
    statement = f"{explain}COPY (SELECT '{forged}' AS p) TO '{pointer}' (FORMAT csv, HEADER false)"
    assert_refused(run(home, "sql", statement), "refused")
    assert pointer.read_bytes() == before
    assert pointers(home) == serving and current(home, EMBEDDER) == embedder
    new = home / "serving" / "new-model.json"
    assert_refused(run(home, "sql", f"{explain}COPY (SELECT 1) TO '{new}' (FORMAT json)"))
    assert not new.exists()


# --- statements that are not a query --------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "INSTALL httpfs",
        "LOAD httpfs",
        "FORCE INSTALL json",
        "UPDATE EXTENSIONS",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "RESET threads",
        "PRAGMA threads = 1",
        "PRAGMA version",
        "SET VARIABLE x = 1",
        "ATTACH 'other.duckdb' AS other",
        "ATTACH ':memory:' AS m",
        "DETACH shard_0",
        "USE shard_0",
        "CALL pragma_version()",
        "CHECKPOINT",
        "EXPORT DATABASE 'dump'",
        "CREATE TABLE notes AS SELECT 1",
        "CREATE SECRET (TYPE s3, KEY_ID 'k', SECRET 's')",
        "PIVOT (SELECT 1 AS a, 2 AS b) ON a USING sum(b)",
        "EXPLAIN ANALYZE INSTALL httpfs",
        "EXPLAIN ANALYZE SET threads = 1",
        "EXPLAIN ANALYZE INSERT INTO shard_0.deployments SELECT * FROM shard_0.deployments",
        "EXPLAIN ANALYZE CREATE TABLE notes AS SELECT 1",
    ],
)
def test_statements_that_are_not_a_query_are_refused(home, statement):
    before = files(*watched(home))
    assert_refused(run(home, "sql", statement), "refused")
    assert files(*watched(home)) == before


@pytest.mark.parametrize(
    ("statement", "n"),
    [
        ("SELECT 1; COPY (SELECT 1) TO 'out.csv'", 2),
        ("SELECT 1; SELECT 2", 2),
        ("SELECT 1;;SET threads = 1;", 2),
        (";", 0),
    ],
)
def test_more_or_fewer_than_one_statement_is_refused(home, statement, n):
    assert_refused(run(home, "sql", statement), f"exactly one SQL statement (got {n})")
    assert not Path("out.csv").exists()


@pytest.mark.parametrize(
    "query",
    [
        "EXPLAIN SELECT count(*) FROM embeddings",
        "EXPLAIN ANALYZE SELECT count(*) FROM embeddings",
        "EXPLAIN (FORMAT json) SELECT 1",
        "EXPLAIN (SELECT 1) UNION (SELECT 2)",
        "EXPLAIN /* x */ ANALYZE /* y */ SELECT 1",
        "FROM serving_now",
        "WITH n AS (SELECT count(*) AS n FROM decisions) SELECT * FROM n",
        "DESCRIBE embeddings",
        "SELECT mixed_after FROM demo.demo_runs",
    ],
)
def test_plain_queries_and_their_explain_run(home, query):
    result = run(home, "sql", query)
    assert result.exit_code == 0, result.output
    assert result.stdout


# --- files outside the ledger ---------------------------------------------------------


DISABLED = "file system operations are disabled by configuration"


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", DISABLED),
        ("SELECT content FROM read_blob('/proc/self/environ')", DISABLED),
        ("SELECT * FROM glob('/etc/*')", DISABLED),
        ("SELECT * FROM read_text('/etc/hostname')", DISABLED),
        ("SELECT * FROM read_json('{pointer}')", DISABLED),
        ("SELECT * FROM read_blob('{shard}')", DISABLED),
        ("SELECT * FROM 'https://example.com/data.csv'", DISABLED),
        # A path in FROM is not looked up as a file at all with file access off.
        ("SELECT * FROM '/etc/passwd'", "Table with name /etc/passwd does not exist"),
    ],
)
def test_reading_files_is_refused(home, query, says):
    pointer = home / "serving" / f"{EMBEDDER}.json"
    sql = query.format(pointer=pointer, shard=shard_paths(home)[0])
    assert_refused(run(home, "sql", sql), says)


# --- the engine refuses on its own --------------------------------------------------------


def test_the_engine_refuses_every_vector_without_the_statement_check(home):
    """The same vectors, run straight on the connection `ledger sql` uses: no statement
    check in the way, DuckDB itself must refuse them."""
    from ledger.store import query_views

    pointer = home / "serving" / f"{EMBEDDER}.json"
    shard = shard_paths(home)[0]
    Path(".tmp").mkdir()  # DuckDB's default spill folder: writable unless moved
    before = files(*watched(home))
    vectors = [
        f"COPY (SELECT 1) TO '{pointer}'",
        "COPY (SELECT 42) TO 'out.csv'",
        "COPY (SELECT 42) TO '.tmp/out.csv'",
        "EXPLAIN ANALYZE COPY (SELECT 42) TO 'out.csv'",
        "EXPORT DATABASE 'dump'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_blob('/proc/self/environ')",
        "SELECT * FROM glob('/etc/*')",
        f"SELECT * FROM read_json('{pointer}')",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "RESET enable_external_access",
        "PRAGMA threads = 1",
        "SET temp_directory = '.'",
        "ATTACH 'other.duckdb' AS other",
        f"ATTACH '{shard}' AS writable",
        "INSERT INTO shard_0.deployments SELECT * FROM shard_0.deployments",
        "CREATE TABLE shard_0.notes (a INT)",
        "CREATE SECRET (TYPE s3, KEY_ID 'k', SECRET 's')",
        # After a DETACH the original shard is not a file DuckDB may touch either.
        "DETACH shard_0",
        f"COPY (SELECT 1) TO '{shard}'",
        f"ATTACH '{shard}' AS again",
    ]
    refused = []
    with query_views(home, files={"demo": home / "demo.duckdb"}) as con:
        for sql in vectors:
            try:
                con.execute(sql).fetchall()
            except duckdb.Error:
                refused.append(sql)
        (setting,) = con.execute("SELECT current_setting('enable_external_access')").fetchone()
    assert [v for v in vectors if v not in refused] == ["DETACH shard_0"]
    assert setting is False
    assert not Path("out.csv").exists() and not Path("dump").exists()
    assert files(*watched(home)) == before


# --- time -----------------------------------------------------------------------------------


def test_a_long_query_is_stopped_at_its_timeout(home):
    started = time.monotonic()
    result = run(home, "sql", "--timeout", "1", LONG_QUERY)
    elapsed = time.monotonic() - started
    assert_refused(result, "ran past its time limit of 1 s")
    assert elapsed < 15, elapsed
    assert list(Path(tempfile.gettempdir()).iterdir()) == []  # the copies went with it


def test_timeout_must_be_positive(home):
    result = run(home, "sql", "--timeout", "0", "SELECT 1")
    assert result.exit_code == 2 and "--timeout" in result.stderr


def _one_deletion() -> pa.Table:
    row = {
        "event_id": str(uuid.uuid4()),
        "event_time": datetime.now(UTC),
        "producer": "test",
        "model": EMBEDDER,
        "model_version": "v1",
        "entity_id": "doc-sql-safety",
        "topic": "test.deletions",
        "partition": 0,
        "offset": 0,
    }
    return pa.Table.from_pylist([row], schema=ARROW_SCHEMAS["deletions"])


def test_a_running_query_does_not_hold_up_the_materialiser(home, tmp_path):
    """A `ledger sql` process is mid-query while a shard writer commits a batch: the
    writer gets the file in well under the query's run time."""
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    query = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "ledger", "--home", str(home), "sql", "--timeout", "8", LONG_QUERY],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(2.5)  # the query is running (it takes ~0.5 s to start)
        assert query.poll() is None
        shard = Shard(home, shard_paths(home)[0].stem, lock_timeout=20)
        started = time.monotonic()
        written = shard.write(Batch({"deletions": _one_deletion()}))
        waited = time.monotonic() - started
        still_running = query.poll() is None
    finally:
        _, err = query.communicate(timeout=30)
    assert written == {"deletions": 1}
    assert still_running and waited < 2.0, waited
    assert query.returncode == 2 and b"time limit of 8 s" in err
    check = run(home, "sql", "SELECT count(*) FROM deletions WHERE entity_id = 'doc-sql-safety'")
    assert check.stdout.split()[-1] == "1"


def test_query_views_reads_copies_so_the_shards_stay_free(home):
    from ledger.store import query_views, read_only_query

    with query_views(home) as con:
        paths = [row[0] for row in con.execute("SELECT path FROM duckdb_databases()").fetchall()]
        # A writer gets the shard while this connection is open.
        Shard(home, shard_paths(home)[0].stem, lock_timeout=2).write(
            Batch({"deletions": _one_deletion()})
        )
        assert read_only_query(con, "SELECT count(*) FROM deletions").rows
    originals = {str(p) for p in shard_paths(home)}
    assert originals.isdisjoint(paths)


# --- damaged shards -------------------------------------------------------------------------


def _plant(home: Path, name: str, data: bytes) -> Path:
    path = home / "shards" / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        ("junk.duckdb", os.urandom(5000), "is not a readable DuckDB database"),
        ("empty.duckdb", b"", "is not a readable DuckDB database"),
        ("cut.duckdb", None, "is not a readable DuckDB database"),
        ("other.duckdb", "not-a-shard", "is not a ledger shard"),
    ],
)
def test_a_bad_file_in_shards_is_named_with_what_to_do(home, name, data, says):
    if data is None:  # a real shard, cut short
        data = shard_paths(home)[0].read_bytes()[:5000]
    if data == "not-a-shard":
        with duckdb.connect(str(home / "shards" / name)) as con:
            con.execute("CREATE TABLE notes AS SELECT 1 AS a")
    else:
        _plant(home, name, data)
    bad = home / "shards" / name
    for args in (
        ["sql", "SELECT count(*) FROM embeddings"],
        ["versions", "--model", EMBEDDER],
        ["lineage", "doc-000001"],
    ):
        result = run(home, *args)
        assert_refused(result, f"{name} {says}", str(bad), f"--shard {bad.stem}")
    # A refusal is still a refusal, before any file is read.
    assert_refused(run(home, "sql", "COPY (SELECT 1) TO 'out.csv'"), "refused")
    # Moving the file aside, as the message says, is the way back.
    bad.rename(home / name)
    assert run(home, "sql", "SELECT count(*) FROM embeddings").exit_code == 0


def test_a_shard_cut_in_half_fails_its_query_naming_the_file(home):
    # It still opens (the start of the file is whole): the query finds the gap. Cut at a
    # quarter: past the half, a shard written in fewer, larger transactions (librdkafka's
    # polls) may hold only free blocks, and the cut file then reads whole.
    data = shard_paths(home)[0].read_bytes()
    bad = _plant(home, "cut.duckdb", data[: len(data) // 4])
    result = run(home, "sql", "SELECT sum(len(vector)) FROM embeddings")
    assert_refused(result, "Could not read", str(bad), "--shard cut")
    assert tempfile.gettempdir() not in result.stderr  # the file, not its copy


def test_doctor_names_the_bad_shard(home, bootstrap, demo_home):
    _plant(home, "junk.duckdb", os.urandom(5000))
    result = CliRunner().invoke(
        cli, [*demo_home.args(bootstrap)[2:], "--home", str(home), "doctor", "--json"]
    )
    store = next(f for f in json.loads(result.stdout) if f["check"] == "store")
    assert store["status"] == "fail" and "junk.duckdb is not a readable" in store["detail"]
