"""The on-disk format of an index artifact: its manifest, names and checksums.

An artifact is one folder per (model, version, log position)::

    <root>/<model>/<version>/<position>/
        manifest.json       what was built from which log offsets, sha256 of every file
        ids.parquet         entity id -> (shard, item), sorted by entity id
        shard-0000.ann ...  one Annoy file per shard

``<position>`` is a hash of the log offsets the artifact covers (DESIGN decision 1). The
manifest's ``checksum`` is the sha256 of the other files' sha256 lines (``sha256sum``
format), so one value pins the whole artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from ledger.errors import ArtifactError, ChecksumMismatch

FORMAT = 1
MANIFEST = "manifest.json"
#: Artifacts are built in a hidden folder with this prefix, then renamed into place.
STAGING_PREFIX = ".tmp-"
ID_MAP = "ids.parquet"


def shard_file(shard: int) -> str:
    """File name of shard ``shard`` inside an artifact."""
    return f"shard-{shard:04d}.ann"


@dataclass(frozen=True, slots=True)
class Manifest:
    """What an artifact holds and how it was built; ``manifest.json`` on disk.

    ``files`` maps each file name (not the manifest itself) to its sha256; ``checksum`` is
    the sha256 of those lines in ``sha256sum`` format, so one value pins the whole artifact.
    ``input_sha256`` digests the sorted entity ids and their vectors.

    Example:
        >>> m = load_manifest("artifacts/embedder/v1/3f9c0a1b2c3d4e5f")  # doctest: +SKIP
        >>> Manifest.from_json(m.to_json()) == m  # doctest: +SKIP
        True
    """

    model: str
    version: str
    position: str
    log_offsets: Mapping[str, int]
    dimension: int
    metric: str
    trees: int
    seed: int
    shards: int
    items: int
    shard_items: tuple[int, ...]
    files: Mapping[str, str]
    input_sha256: str
    checksum: str
    created_at: str
    annoy_version: str
    #: "index" (Annoy shards + id map) or "decisions" (a classifier's decision table,
    #: see ledger.artifacts.decision_table; its index-only fields are zero/empty)
    kind: str = "index"
    format: int = FORMAT

    @property
    def relative_path(self) -> PurePosixPath:
        """``<model>/<version>/<position>``: where the artifact lives under the root."""
        return PurePosixPath(path_part(self.model), path_part(self.version), self.position)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), as written to ``manifest.json``."""
        data = asdict(self)
        data["log_offsets"] = dict(self.log_offsets)
        data["files"] = dict(self.files)
        data["shard_items"] = list(self.shard_items)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse ``manifest.json``; :class:`ArtifactError` if it is not a manifest."""
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ArtifactError(
                    f"manifest format {data.get('format')!r} is not {FORMAT}; "
                    "upgrade lineage-ledger or rebuild the artifact"
                )
            return cls(
                model=str(data["model"]),
                version=str(data["version"]),
                position=str(data["position"]),
                log_offsets={str(k): int(v) for k, v in data["log_offsets"].items()},
                dimension=int(data["dimension"]),
                metric=str(data["metric"]),
                trees=int(data["trees"]),
                seed=int(data["seed"]),
                shards=int(data["shards"]),
                items=int(data["items"]),
                shard_items=tuple(int(x) for x in data["shard_items"]),
                files={str(k): str(v) for k, v in data["files"].items()},
                input_sha256=str(data["input_sha256"]),
                checksum=str(data["checksum"]),
                created_at=str(data["created_at"]),
                annoy_version=str(data["annoy_version"]),
                kind=str(data.get("kind", "index")),
                format=FORMAT,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ArtifactError(f"not a valid index manifest: {exc!r}") from exc

    def same_build(self, other: Manifest) -> bool:
        """True when both describe the same input built the same way into the same files
        (ignores created_at)."""
        return _build_identity(self) == _build_identity(other) and dict(self.files) == dict(
            other.files
        )


def path_part(name: str) -> str:
    """``name`` as one safe path component (reversible; plain names stay as they are).

    Example:
        >>> path_part("text-embedder"), path_part("team/model"), path_part("..")
        ('text-embedder', 'team%2Fmodel', '%2E.')
    """
    if not name:
        raise ArtifactError("a model or version name must not be empty")
    encoded = quote(name, safe="")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def position_of(log_offsets: Mapping[str, int]) -> str:
    """The artifact folder name for a log position: 16 hex of sha256 of its canonical JSON.

    Example:
        >>> len(position_of({"ledger.embeddings:0": 120, "ledger.embeddings:1": 98}))
        16
    """
    canonical = json.dumps({str(k): int(v) for k, v in log_offsets.items()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def artifact_path(
    root: Path | str, *, model: str, version: str, log_offsets: Mapping[str, int]
) -> Path:
    """Where :func:`build_index` puts the artifact of (model, version, log position)."""
    return Path(root) / path_part(model) / path_part(version) / position_of(log_offsets)


def load_manifest(path: Path | str) -> Manifest:
    """Read the manifest of the artifact folder ``path`` (or of ``path/manifest.json``).

    Example:
        >>> load_manifest(".ledger/artifacts/embedder/v1/3f9c0a1b2c3d4e5f").items  # doctest: +SKIP
        4000
    """
    p = Path(path)
    file = p if p.name == MANIFEST else p / MANIFEST
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ArtifactError(f"cannot read the manifest {file}: {exc.strerror or exc}") from exc
    return Manifest.from_json(text)


# The sha256 of each file this process hashed (or was handed by a build worker), by file
# (device, inode), with the file's size, mtime and ctime then: a file is hashed once per
# process (when an artifact is published, then verified seconds later) unless it changed.
# Any write through the file system moves mtime and ctime (user space cannot set ctime),
# so a file changed since gets hashed again. The kernel stamps files with a coarse clock
# (a tick, a few ms): a digest is kept only for a file last changed _SETTLED_NS before,
# so that a write in the same tick as the hash cannot leave both stamps as they were. (A
# re-read of an unchanged file would come from the page cache anyway, not the disk.)
_DIGESTS: dict[tuple[int, int], tuple[tuple[int, int, int], str]] = {}
_SETTLED_NS = 100_000_000


def _stat_key(st: os.stat_result) -> tuple[tuple[int, int], tuple[int, int, int]]:
    return (st.st_dev, st.st_ino), (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _keep(st: os.stat_result, digest: str, since_ns: int) -> None:
    if since_ns - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS:
        inode, state = _stat_key(st)
        _DIGESTS[inode] = (state, digest)


def sha256_file(path: Path) -> str:
    """The sha256 of the file at ``path`` (hashed once per process while it is unchanged)."""
    with path.open("rb") as f:
        before = os.fstat(f.fileno())
        inode, state = _stat_key(before)
        known = _DIGESTS.get(inode)
        if known is not None and known[0] == state:
            return known[1]
        started = time.time_ns()
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        if _stat_key(os.fstat(f.fileno())) == (inode, state):  # unchanged while it was read
            _keep(before, digest, started)
    return digest


def remember_sha256(path: Path, digest: str) -> None:
    """Record ``digest`` as the sha256 of the file at ``path`` as it is now: for a file
    another process just wrote and hashed (a build worker's shard)."""
    _keep(os.stat(path), digest, time.time_ns())


def overall_checksum(files: Mapping[str, str]) -> str:
    lines = "".join(f"{files[name]}  {name}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_artifact(path: Path | str) -> list[str]:
    """Names of the artifact's files whose sha256 is not the manifest's (missing files too).

    Also lists ``manifest.json`` when its overall checksum does not match its file list.
    An empty list means the artifact is intact.

    Example:
        >>> verify_artifact(".ledger/artifacts/embedder/v1/3f9c0a1b2c3d4e5f")  # doctest: +SKIP
        []
    """
    p = Path(path)
    manifest = load_manifest(p)
    bad = [MANIFEST] if overall_checksum(manifest.files) != manifest.checksum else []
    for name in sorted(manifest.files):
        file = p / name
        try:
            ok = sha256_file(file) == manifest.files[name]
        except OSError:
            ok = False
        if not ok:
            bad.append(name)
    return bad


def publish(
    root: Path | str, plan: Manifest, write_files: Callable[[Path], Mapping[str, str]]
) -> Manifest:
    """Write the artifact ``plan`` describes under ``root``, atomically; its manifest.

    ``plan`` is the manifest without files, checksum and time (its ``input_sha256`` names
    the input); ``write_files(folder)`` writes the artifact's files into ``folder`` and
    returns their sha256 by name. An artifact that exists is reused after checking it is
    this input built this way (artifacts are immutable).

    The protocol, so that readers see either no artifact or a complete one:
    1. write the files into a hidden staging folder next to the final one;
    2. write the manifest last (its checksum pins every file), fsync files and folder;
    3. rename the folder into place (atomic), and fsync the parent so the rename survives
       a power cut. If another builder published the same position first, theirs must
       equal ours. Any failure removes the staging folder.
    """
    final = Path(root) / plan.relative_path
    if final.exists():
        return existing_artifact(final, plan)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f"{STAGING_PREFIX}{plan.position}-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        files = dict(sorted(write_files(staging).items()))
        manifest = replace(
            plan,
            files=files,
            checksum=overall_checksum(files),
            created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
        )
        (staging / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        for name in [*files, MANIFEST]:
            fsync_path(staging / name)
        fsync_path(staging, directory=True)
        try:
            staging.rename(final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(staging, ignore_errors=True)
            return existing_artifact(final, plan)
        fsync_path(final.parent, directory=True)
        return manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def existing_artifact(final: Path, plan: Manifest) -> Manifest:
    """The manifest of an artifact that already exists, after checking it is what ``plan``
    would build (same input, same parameters) and that its files are intact."""
    existing = load_manifest(final)
    if _build_identity(existing) != _build_identity(plan):
        raise ArtifactError(
            f"artifact {final} exists with different input or parameters; artifacts are "
            "immutable and the log position should determine the input",
            hint="remove it with collect_garbage() if it is not serving, or investigate the log",
            cli_hint="remove it with `ledger artifacts gc` if it is not serving, or "
            "investigate the log",
        )
    bad = verify_artifact(final)
    if bad:
        raise ChecksumMismatch(
            f"artifact {final} exists but is corrupt ({', '.join(bad)})",
            files=tuple(bad),
            hint="remove it and rebuild",
        )
    return existing


def _build_identity(m: Manifest) -> tuple[Any, ...]:
    # What determines the bytes: input and parameters (not the time or the file hashes).
    return (
        m.kind,
        m.model,
        m.version,
        dict(m.log_offsets),
        m.dimension,
        m.metric,
        m.trees,
        m.seed,
        m.shards,
        m.items,
        m.input_sha256,
    )
