"""The serving pointer: atomic switch, history and switch back, refusals, the rollback lock."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ledger.artifacts.index_build import build_index
from ledger.artifacts.manifest import MANIFEST, Manifest, shard_file
from ledger.errors import RollbackInProgress, ServingError
from ledger.serving.gc import serving_artifacts
from ledger.serving.locks import rollback_lock
from ledger.serving.open import open_index
from ledger.serving.pointers import current, history, previous, switch, switch_back

D = 8


def make_artifact(
    home: Path, version: str, *, model: str = "embedder", seed: int = 0, n: int = 200
) -> Path:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, D)).astype(np.float32)
    m = build_index(
        home / "artifacts",
        model=model,
        version=version,
        entity_ids=[f"{version}-{i}" for i in range(n)],
        vectors=vectors,
        metric="angular",
        log_offsets={"t:0": seed},
        trees=5,
        jobs=1,
    )
    return home / "artifacts" / m.relative_path


def test_switch_writes_a_pointer_that_current_reads(tmp_path):
    art = make_artifact(tmp_path, "v1")
    assert current(tmp_path, "embedder") is None
    pointer = switch(tmp_path, "embedder", art, info={"reason": "first deploy"})
    assert current(tmp_path, "embedder") == pointer
    assert (pointer.model, pointer.version, pointer.info) == (
        "embedder",
        "v1",
        {"reason": "first deploy"},
    )
    assert pointer.artifact == art.relative_to(tmp_path).as_posix()
    on_disk = json.loads((tmp_path / "serving" / "embedder.json").read_text())
    assert on_disk["artifact"] == pointer.artifact and on_disk["version"] == "v1"
    assert [p.name for p in (tmp_path / "serving").iterdir()] == ["embedder.json"]  # no temp


def test_history_keeps_replaced_pointers_and_switch_back_restores_the_previous(tmp_path):
    v1, v2 = make_artifact(tmp_path, "v1", seed=1), make_artifact(tmp_path, "v2", seed=2)
    first = switch(tmp_path, "embedder", v1)
    second = switch(tmp_path, "embedder", v2, info={"reason": "deploy v2"})
    assert history(tmp_path, "embedder") == [first]
    assert previous(tmp_path, "embedder") == first

    back = switch_back(tmp_path, "embedder")
    assert (back.version, back.artifact) == ("v1", first.artifact)
    assert history(tmp_path, "embedder") == [first, second]
    assert previous(tmp_path, "embedder") == second
    with open_index(tmp_path, "embedder") as index:
        assert index.manifest.version == "v1" and len(index) == 200


def test_switch_back_without_history_is_refused(tmp_path):
    switch(tmp_path, "embedder", make_artifact(tmp_path, "v1"))
    with pytest.raises(ServingError, match="no earlier serving artifact"):
        switch_back(tmp_path, "embedder")


def test_history_ignores_a_line_torn_by_a_crash(tmp_path):
    v1, v2 = make_artifact(tmp_path, "v1", seed=1), make_artifact(tmp_path, "v2", seed=2)
    first = switch(tmp_path, "embedder", v1)
    switch(tmp_path, "embedder", v2)
    with (tmp_path / "serving" / "embedder.history.jsonl").open("a") as f:
        f.write('{"model": "embedder", "vers')
    assert history(tmp_path, "embedder") == [first]


def test_switch_refuses_another_models_artifact_and_folders_outside_home(tmp_path):
    other = make_artifact(tmp_path, "v1", model="ranker")
    with pytest.raises(ServingError, match="of model 'ranker', not 'embedder'"):
        switch(tmp_path, "embedder", other)
    elsewhere = make_artifact(tmp_path / "elsewhere", "v1")
    with pytest.raises(ServingError, match="not inside the state folder"):
        switch(tmp_path / "home", "embedder", elsewhere)
    assert current(tmp_path, "embedder") is None


def test_open_index_refuses_when_the_pointer_names_another_version(tmp_path):
    art = make_artifact(tmp_path, "v1")
    switch(tmp_path, "embedder", art)
    pointer_file = tmp_path / "serving" / "embedder.json"
    data = json.loads(pointer_file.read_text())
    data["version"] = "v2"
    pointer_file.write_text(json.dumps(data))
    with pytest.raises(ServingError, match="is embedder v1, but the pointer says embedder v2"):
        open_index(tmp_path, "embedder")


def test_open_index_refuses_a_manifest_rewritten_after_the_switch(tmp_path):
    art = make_artifact(tmp_path, "v1")
    switch(tmp_path, "embedder", art)
    manifest = Manifest.from_json((art / MANIFEST).read_text())
    forged = Manifest.from_json(manifest.to_json().replace(manifest.checksum, "0" * 64))
    (art / MANIFEST).write_text(forged.to_json())
    with pytest.raises(ServingError, match="changed since the switch"):
        open_index(tmp_path, "embedder")


def test_open_index_refuses_an_artifact_whose_files_fail_their_checksums(tmp_path):
    art = make_artifact(tmp_path, "v1")
    switch(tmp_path, "embedder", art)
    shard = art / shard_file(1)
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(ServingError, match=r"fails its checksums \(shard-0001.ann\)"):
        open_index(tmp_path, "embedder")
    with pytest.raises(ServingError):
        switch(tmp_path, "embedder", art)


def test_open_index_without_a_pointer_is_refused(tmp_path):
    with pytest.raises(ServingError, match="has no serving pointer"):
        open_index(tmp_path, "embedder")


def test_serving_artifacts_names_every_models_current_artifact(tmp_path):
    a, b = make_artifact(tmp_path, "v1"), make_artifact(tmp_path, "v3", model="ranker")
    switch(tmp_path, "embedder", make_artifact(tmp_path, "v0", seed=9))
    switch(tmp_path, "embedder", a)
    switch(tmp_path, "ranker", b)
    assert serving_artifacts(tmp_path) == {a, b}


def test_rollback_lock_refuses_a_second_process_and_names_its_pid(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys
            from ledger.serving.locks import rollback_lock
            with rollback_lock({str(tmp_path)!r}, "embedder"):
                print("locked", flush=True)
                sys.stdin.readline()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RollbackInProgress, match=f"pid {holder.pid}") as caught:
            with rollback_lock(tmp_path, "embedder"):
                pytest.fail("a second holder got the lock")
        assert caught.value.pid == holder.pid
        with rollback_lock(tmp_path, "ranker"):
            pass  # other models are not blocked
    finally:
        holder.communicate("\n", timeout=10)
    assert holder.returncode == 0
    with rollback_lock(tmp_path, "embedder") as path:  # released when the holder left
        assert json.loads(path.read_text())["pid"] != holder.pid


def test_rollback_lock_refuses_a_second_holder_in_the_same_process(tmp_path):
    with rollback_lock(tmp_path, "embedder"):
        with pytest.raises(RollbackInProgress):
            with rollback_lock(tmp_path, "embedder"):
                pass
    with rollback_lock(tmp_path, "embedder"):
        pass


def test_an_error_inside_the_lock_propagates_and_releases_it(tmp_path):
    with pytest.raises(BlockingIOError):
        with rollback_lock(tmp_path, "embedder"):
            raise BlockingIOError("from the rollback body, not from the lock")
    with rollback_lock(tmp_path, "embedder"):
        pass


def test_switch_back_keeps_the_calibrated_search_k_and_serving_uses_it(tmp_path):
    v1, v2 = make_artifact(tmp_path, "v1", seed=1), make_artifact(tmp_path, "v2", seed=2)
    switch(tmp_path, "embedder", v1, info={"search_k": 640, "reason": "rollback"})
    switch(tmp_path, "embedder", v2, info={"search_k": 320})

    back = switch_back(tmp_path, "embedder", info={"reason": "switch-back", "actor": "oncall"})

    assert back.info == {"search_k": 640, "reason": "switch-back", "actor": "oncall"}
    with open_index(tmp_path, "embedder") as index:
        assert index.search_k == 640
        assert index._search_k(10, None) == 640  # calibrated for k = 10
        assert index._search_k(1000, None) == 5 * 1000  # never below Annoy's trees x k
