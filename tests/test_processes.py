"""Materialiser processes: crashes (SIGKILL) and a consumer group of two shards."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from consumers.catchup import catch_up
from consumers.lag import lag, wait_caught_up
from ledger.contract.events import Topics
from ledger.log.producer import Producer, content_hash
from ledger.store import Shard, open_views

pytestmark = pytest.mark.kafka


def _consume(
    bootstrap: str, topics: Topics, home: Path, *args: str, stderr: int = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledger",
            "--bootstrap",
            bootstrap,
            "--home",
            str(home),
            "--topic-prefix",
            topics.prefix,
            "consume",
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def _stop(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, log: _Assignments | None = None
) -> tuple[int, str]:
    """Signal ``proc``; its exit code and stderr."""
    if proc.poll() is None:
        proc.send_signal(sig)
    if log is not None:  # its stderr is read by the log's thread
        proc.wait(timeout=30)
        text = log.join()
        assert proc.stderr is not None
        proc.stderr.close()
        return proc.returncode, text
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err.decode(errors="replace")


def _wait_caught_up(bootstrap: str, topics: Topics, home: Path, expected: int) -> None:
    rows = wait_caught_up(bootstrap, topics, home, timeout=60)
    assert sum(r.end for r in rows) >= expected


def _produce(bootstrap, topics, start, n, *, chunk=2000, pause=0.0, out=None, dim=8, stop=None):
    rng = np.random.default_rng(start)
    expected = {} if out is None else out
    with Producer(bootstrap=bootstrap, name="load", topics=topics) as p:
        p.register_model_version("emb", "v1", kind="embedding", dimension=dim, metric="angular")
        for lo in range(start, start + n, chunk):
            if stop is not None and stop.is_set():
                break
            ents = [f"e{i}" for i in range(lo, min(lo + chunk, start + n))]
            vecs = rng.random((len(ents), dim), dtype=np.float32)
            ids = p.write_embeddings(
                "emb", "v1", ents, vecs, content_sha256s=[content_hash(e) for e in ents]
            )
            for eid, ent, vec in zip(ids, ents, vecs, strict=True):
                expected[eid] = (ent, vec.tobytes())
            p.flush()
            time.sleep(pause)
    return expected


def _shard_mtime(home: Path) -> float:
    files = [home / "shards" / "main.duckdb", home / "shards" / "main.duckdb.wal"]
    return max((f.stat().st_mtime for f in files if f.exists()), default=0.0)


def test_sigkill_at_random_points_loses_and_duplicates_nothing(bootstrap, make_topics, tmp_path):
    topics = make_topics(4)
    expected: dict[str, tuple[str, bytes]] = {}
    # The producer writes until the last kill (at most 400k events), so every kill meets a
    # materialiser with events to store however slowly a loaded machine starts processes.
    stop = threading.Event()
    producer = threading.Thread(
        target=_produce,
        args=(bootstrap, topics, 0, 400_000),
        kwargs={"chunk": 2000, "pause": 0.4, "out": expected, "stop": stop},
    )
    producer.start()
    rnd = random.Random(7)
    progressed, previous = 0, 0
    try:
        for _ in range(20):
            before = _shard_mtime(tmp_path)
            proc = _consume(bootstrap, topics, tmp_path, "--no-group")
            deadline = time.monotonic() + 20  # a loaded machine starts Python slowly
            while _shard_mtime(tmp_path) == before and time.monotonic() < deadline:
                time.sleep(0.01)  # until it has written once: then kill it at a random point
            time.sleep(rnd.uniform(0.0, 0.6))
            code, err = _stop(proc, signal.SIGKILL)
            assert code == -signal.SIGKILL, err
            stored = sum(Shard(tmp_path, "main").stored_offsets().values())
            progressed += stored > previous
            previous = stored
    finally:
        stop.set()
        producer.join()
    assert progressed >= 15  # the kills hit a materialiser that was writing

    final = catch_up(bootstrap, topics, tmp_path)
    assert final.dead_letters == 0
    con = open_views(tmp_path)
    try:
        rows = con.execute("SELECT event_id, entity_id, vector FROM embeddings").fetchall()
        offsets = con.execute(
            'SELECT "partition", list("offset" ORDER BY "offset") FROM embeddings GROUP BY ALL'
        ).fetchall()
        stored = dict(((t, p), o) for t, p, o in con.execute("SELECT * FROM offsets").fetchall())
    finally:
        con.close()
    assert len(expected) >= 20_000  # produced while the kills went on
    assert len(rows) == len(expected)  # no duplicates ...
    for eid, ent, vec in rows:  # ... and every produced event, with its content
        assert expected[eid] == (ent, np.asarray(vec, dtype="<f4").tobytes())
    ends = {
        (t, p): r.end for r in lag(bootstrap, topics, tmp_path) for t, p in [(r.topic, r.partition)]
    }
    for partition, offs in offsets:  # no gaps: every offset of the partition, once
        assert offs == list(range(ends[(topics.embeddings, partition)]))
    assert all(stored.get(k, 0) == end for k, end in ends.items())


class _Assignments:
    """Follows the latest assignment a ``consume -v`` process logs on stderr."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.latest: set[str] | None = None
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").strip()
            self.lines.append(line)
            if " assigned " in line:
                parts = line.split(" assigned ", 1)[1]
                self.latest = set() if parts == "nothing" else set(parts.split())

    def join(self) -> str:
        self._thread.join(timeout=30)
        return "\n".join(self.lines)


def _wait_split(topics: Topics, logs: list[_Assignments], timeout: float = 30.0) -> None:
    # Both members hold half of the embeddings partitions each, nothing twice.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = [{p for p in (log.latest or ()) if p.startswith(topics.embeddings)} for log in logs]
        if all(len(h) == 2 for h in held) and not held[0] & held[1]:
            return
        time.sleep(0.1)
    raise AssertionError([log.latest for log in logs])


def test_two_processes_in_a_group_split_partitions_and_take_over(bootstrap, make_topics, tmp_path):
    topics = make_topics(4)
    group = ("--group", f"{topics.prefix}.g", "-v")
    a = _consume(bootstrap, topics, tmp_path, *group, "--shard", "a", stderr=subprocess.PIPE)
    b = _consume(bootstrap, topics, tmp_path, *group, "--shard", "b", stderr=subprocess.PIPE)
    logs = [_Assignments(a), _Assignments(b)]
    try:
        _wait_split(topics, logs)
        first = _produce(bootstrap, topics, 0, 4000)
        _wait_caught_up(bootstrap, topics, tmp_path, 4001)
        con = open_views(tmp_path)
        try:
            split = [
                con.execute(
                    f'SELECT count(DISTINCT "partition") FROM shard_{i}.embeddings'
                ).fetchone()[0]
                for i in (0, 1)
            ]
        finally:
            con.close()
        assert sorted(split) == [2, 2]  # 4 embedding partitions, two each

        code, err = _stop(b, log=logs[1])
        assert code == 0, err
        second = _produce(bootstrap, topics, 4000, 4000)
        _wait_caught_up(bootstrap, topics, tmp_path, 8002)
    finally:
        code, err = _stop(a, log=logs[0])
        if b.poll() is None:
            _stop(b, log=logs[1])
    assert code == 0, err
    con = open_views(tmp_path)
    try:
        ids = [r[0] for r in con.execute("SELECT event_id FROM embeddings").fetchall()]
        taken_over = con.execute(
            'SELECT count(DISTINCT "partition") FROM shard_0.embeddings WHERE entity_id IN '
            f"(SELECT unnest({[f'e{i}' for i in range(4000, 8000)]}))"
        ).fetchone()[0]
    finally:
        con.close()
    assert sorted(ids) == sorted(first | second)  # every event exactly once over both shards
    assert taken_over == 4  # after b left, a materialised all four partitions
