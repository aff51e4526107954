"""The connections the ledger opens: no progress bar on stderr, no half-created shard file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

# DuckDB turns its progress bar on where it thinks someone watches: an interactive
# session, a notebook, ``python -c`` (and off for a script file, as under pytest), so the
# connections are checked in a ``python -c`` process, next to a plain one as the control.
CHECK = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import duckdb
    from ledger.store import Shard, open_views, rows

    SETTING = "SELECT current_setting('enable_progress_bar')"
    home = Path(sys.argv[1])
    out = {"plain": duckdb.connect(":memory:").execute(SETTING).fetchone()[0]}
    with open_views(home) as con:  # no shard yet: the empty views
        out["views, no shard"] = rows(con, SETTING)[0][0]
    shard = Shard(home, "main")
    with shard._connect("reading a setting") as con:
        out["shard"] = rows(con, SETTING)[0][0]
    held = Shard(home, "main", hold=60.0)  # a connection kept across transactions
    with held._connect("reading a setting"):
        pass
    with held._connect("reading a setting") as con:
        out["held shard"] = rows(con, SETTING)[0][0]
    held.idle()
    with open_views(home) as con:  # a shard attached
        out["views"] = rows(con, SETTING)[0][0]
    print(json.dumps(out))
""")


def test_views_and_shard_connections_have_the_progress_bar_off(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "plain": True,  # the control: DuckDB's default in this process
        "views, no shard": False,
        "shard": False,
        "held shard": False,
        "views": False,
    }


# A reader that opens each shard file the moment it appears, read-only, as the views and
# other materialisers (their offsets) do.
PEEK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ledger.store.positions import peek_positions

    errors = []
    for i in range(int(sys.argv[2])):
        path = Path(sys.argv[1]) / str(i) / "shards" / "main.duckdb"
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            pass
        try:
            peek_positions(path, timeout=5.0)
        except Exception as exc:
            errors.append(str(exc))
    print(len(errors), errors[:1])
""")


def test_a_reader_never_opens_a_shard_file_half_created(tmp_path):
    from ledger.store import Shard

    n = 25
    reader = subprocess.Popen(
        [sys.executable, "-c", PEEK, str(tmp_path), str(n)], stdout=subprocess.PIPE, text=True
    )
    try:
        for i in range(n):
            time.sleep(0.05)  # the reader is waiting for the file
            assert Shard(tmp_path / str(i), "main").stored_offsets() == {}
        out, _ = reader.communicate(timeout=120)
    finally:
        reader.kill()
    assert out.startswith("0 "), out
    assert [p.name for p in (tmp_path / "0" / "shards").iterdir()] == ["main.duckdb"]
