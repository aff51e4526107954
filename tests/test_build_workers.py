"""Index build workers: fresh interpreters that never re-run the caller's script and die with
their parent, leaving no process and no open pipe behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ledger.artifacts.index_build
import ledger.artifacts.shard_jobs
from ledger.artifacts.index_build import DEFAULT_SHARDS, build_index
from ledger.artifacts.manifest import load_manifest
from ledger.errors import ArtifactError
from ledger.serving.pointers import current

needs_two_cores = pytest.mark.skipif(
    (os.cpu_count() or 1) < 2, reason="one core: the build runs in-process, without workers"
)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has exited


def _descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    out, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        out += children
        frontier = children
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# -- a script without a main guard --------------------------------------------------------

SCRIPT = """\
import sys
from pathlib import Path

import numpy as np

import ledger

bootstrap, prefix, home, marker = sys.argv[1:]
with open(marker, "a") as f:  # the script's one top-level side effect
    f.write("ran\\n")
topics = ledger.Topics(prefix=prefix)
ids = [f"doc-{i:04d}" for i in range(400)]
vectors = np.random.default_rng(0).standard_normal((400, 8)).astype("float32")
with ledger.Producer(bootstrap=bootstrap, name="script", topics=topics) as producer:
    producer.register_model_version("emb", "v1", kind="embedding", dimension=8, metric="angular")
    producer.write_embeddings(
        "emb", "v1", ids, vectors, content_sha256s=[ledger.content_hash(i) for i in ids]
    )
result = ledger.rollback(bootstrap, topics, Path(home), ["emb"], to="v1", dry_run=False)
print(result.switched)
"""


@pytest.mark.kafka
@needs_two_cores
def test_script_without_main_guard_rolls_back_with_workers_and_runs_once(
    bootstrap, topics, tmp_path
):
    script, home, marker = tmp_path / "rollback_script.py", tmp_path / "home", tmp_path / "ran"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), bootstrap, topics.prefix, str(home), str(marker)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "True"
    assert marker.read_text() == "ran\n"  # once: the workers did not run the script again
    pointer = current(home, "emb")
    assert pointer is not None
    manifest = load_manifest(home / pointer.artifact)
    assert (manifest.version, manifest.shards, manifest.items) == ("v1", DEFAULT_SHARDS, 400)


# -- a killed build --------------------------------------------------------------------------

BUILD = """\
import sys

import numpy as np

from ledger.artifacts.index_build import build_index

n = 200_000  # 2 workers build this for ~8 s on 2 cores (measured)
vectors = np.random.default_rng(0).standard_normal((n, 32)).astype("float32")
build_index(sys.argv[1], model="m", version="v1", entity_ids=[f"e{i:06d}" for i in range(n)],
            vectors=vectors, metric="angular", log_offsets={}, trees=50, shards=2, jobs=2)
print("built")
"""


@needs_two_cores
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_build_leaves_no_worker_and_its_pipes_reach_end_of_file(tmp_path, sig):
    parent = subprocess.Popen(
        [sys.executable, "-c", BUILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    left: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(_descendants(parent.pid)) < 2:
            assert parent.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.5)  # past the workers' start-up: they are building
        left = _descendants(parent.pid)
        workers = [p for p in left if ledger.artifacts.shard_jobs.WORKER_MODULE in _cmdline(p)]

        parent.send_signal(sig)
        output: list[bytes] = []
        reader = threading.Thread(target=lambda: output.extend(parent.communicate()), daemon=True)
        reader.start()
        reader.join(timeout=15)
        assert not reader.is_alive(), "the parent's stdout/stderr stayed open after it died"
        assert parent.returncode == -sig
        deadline = time.monotonic() + 10
        while any(map(_alive, left)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p for p in left if _alive(p)] == []
        assert len(workers) == 2 and len(left) == 2  # the two workers, nothing else
        assert b"built" not in output[0]
        if sig == signal.SIGTERM:
            assert list((tmp_path / "m" / "v1").iterdir()) == []  # staging removed
    finally:
        for pid in [parent.pid, *left]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.wait()


# -- a failing worker ------------------------------------------------------------------------


@needs_two_cores
def test_a_failing_worker_is_an_artifact_error_with_its_message(tmp_path, monkeypatch):
    # A worker that cannot start: a module that does not exist (its stderr says so).
    monkeypatch.setattr(ledger.artifacts.shard_jobs, "WORKER_MODULE", "ledger.no_such_worker")
    module = "ledger.no_such_worker"
    vectors = np.random.default_rng(0).standard_normal((100, 4)).astype(np.float32)
    with pytest.raises(ArtifactError, match=r"worker process \(exit 1\).*No module named"):
        build_index(
            tmp_path,
            model="m",
            version="v1",
            entity_ids=[f"e{i}" for i in range(100)],
            vectors=vectors,
            metric="angular",
            log_offsets={},
            shards=2,
            jobs=2,
        )
    assert list((tmp_path / "m" / "v1").iterdir()) == []  # staging removed
    assert [p for p in _descendants(os.getpid()) if module in _cmdline(p) and _alive(p)] == []


def test_worker_exits_when_its_parent_closes_stdin_before_sending_a_job():
    done = subprocess.run(
        [sys.executable, "-P", "-m", ledger.artifacts.shard_jobs.WORKER_MODULE],
        input=b"",
        capture_output=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout) == (3, b"")


def test_worker_exits_at_once_when_stdin_ends_during_its_build(tmp_path):
    vectors = np.random.default_rng(0).standard_normal((100_000, 32)).astype(np.float32)
    vectors.tofile(tmp_path / "in.f32")  # ~7 s to build with 50 trees (measured)
    job = {
        "input_path": str(tmp_path / "in.f32"),
        "output_path": str(tmp_path / "out.ann"),
        "params": {"dimension": 32, "metric": "angular", "trees": 50, "seed": 1},
    }
    worker = subprocess.Popen(
        [sys.executable, "-P", "-m", ledger.artifacts.shard_jobs.WORKER_MODULE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        worker.stdin.write(json.dumps(job).encode() + b"\n")
        worker.stdin.flush()
        time.sleep(1.5)  # past start-up: adding items or building
        assert worker.poll() is None
        closed = time.monotonic()
        worker.stdin.close()  # what the kernel does when the parent dies
        out = worker.stdout.read()
        assert worker.wait(timeout=10) == 3 and out == b""
        assert time.monotonic() - closed < 2
        assert not (tmp_path / "out.ann").exists()
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
        worker.stdout.close()


# -- how many at a time ------------------------------------------------------------------------


@pytest.mark.parametrize(("cpus", "shards", "expected"), [(8, 4, 2), (2, 4, 2), (1, 4, 1)])
def test_by_default_half_the_shards_are_built_at_a_time(
    tmp_path, monkeypatch, cpus, shards, expected
):
    # A worker holds its whole shard while it builds: half the shards at once bounds the
    # workers to half the index (DESIGN decision 11), however many cores there are.
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    at_once: list[int] = []
    real = ledger.artifacts.index_build.build_in_workers

    def spy(staging, todo, params, *, workers):
        at_once.append(workers)
        return real(staging, todo, params, workers=workers)

    monkeypatch.setattr(ledger.artifacts.index_build, "build_in_workers", spy)
    vectors = np.random.default_rng(0).standard_normal((400, 4)).astype(np.float32)
    m = build_index(
        tmp_path,
        model="m",
        version="v1",
        entity_ids=[f"e{i}" for i in range(400)],
        vectors=vectors,
        metric="angular",
        log_offsets={},
        trees=2,
        shards=shards,
    )
    assert (m.shards, m.items) == (shards, 400)
    assert at_once == ([expected] if expected > 1 else [])  # one: built in this process
