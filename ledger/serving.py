"""The serving pointer of each model: which index artifact answers queries, switched atomically.

Under the state folder ``home``::

    serving/<model>.json            the current pointer (artifact path relative to home)
    serving/<model>.history.jsonl   every pointer it replaced, oldest first (append-only)
    locks/<model>.lock              the rollback lock: one rollback per model at a time

A pointer pins the manifest checksum of its artifact, so an artifact changed after the
switch is refused when opened, and so is one built for another model or version.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.artifacts import GcResult, gc, list_artifacts
from ledger.errors import ArtifactError, RollbackInProgress, ServingError
from ledger.index import IndexReader, open_artifact
from ledger.manifest import fsync_path, load_manifest, path_part, verify_artifact

SERVING_DIR = "serving"
ARTIFACTS_DIR = "artifacts"
LOCKS_DIR = "locks"


@dataclass(frozen=True, slots=True)
class ServingPointer:
    """Which artifact serves ``model``: written by :func:`switch`, read by :func:`current`.

    Example:
        >>> p = current(".ledger", "embedder")  # doctest: +SKIP
        >>> p.version, p.artifact  # doctest: +SKIP
        ('v1', 'artifacts/embedder/v1/3f9c0a1b2c3d4e5f')
    """

    model: str
    version: str
    artifact: str  # the artifact folder, relative to home, with "/" separators
    checksum: str  # the artifact manifest's checksum at switch time
    switched_at: str
    info: Mapping[str, Any] = field(default_factory=dict)

    def artifact_path(self, home: Path | str) -> Path:
        """The artifact folder on disk."""
        return Path(home) / self.artifact

    def to_json(self) -> str:
        """One line of canonical JSON."""
        return json.dumps(
            {
                "model": self.model,
                "version": self.version,
                "artifact": self.artifact,
                "checksum": self.checksum,
                "switched_at": self.switched_at,
                "info": dict(self.info),
            },
            sort_keys=True,
            default=str,
        )

    @classmethod
    def from_json(cls, text: str) -> ServingPointer:
        """Parse a pointer; :class:`ServingError` if it is not one."""
        try:
            d = json.loads(text)
            return cls(
                str(d["model"]),
                str(d["version"]),
                str(d["artifact"]),
                str(d["checksum"]),
                str(d["switched_at"]),
                dict(d.get("info") or {}),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ServingError(f"not a valid serving pointer: {exc!r}") from exc


def _pointer_file(home: Path, model: str) -> Path:
    return home / SERVING_DIR / f"{path_part(model)}.json"


def _history_file(home: Path, model: str) -> Path:
    return home / SERVING_DIR / f"{path_part(model)}.history.jsonl"


@contextlib.contextmanager
def _flock(path: Path, *, blocking: bool) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def current(home: Path | str, model: str) -> ServingPointer | None:
    """The serving pointer of ``model``, or None if nothing was ever switched to.

    Example:
        >>> current(".ledger", "embedder").version  # doctest: +SKIP
        'v2'
    """
    try:
        text = _pointer_file(Path(home), model).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return ServingPointer.from_json(text)


def history(home: Path | str, model: str) -> list[ServingPointer]:
    """Every pointer ``model`` had before the current one, oldest first.

    Example:
        >>> [p.version for p in history(".ledger", "embedder")]  # doctest: +SKIP
        ['v1', 'v2']
    """
    try:
        lines = _history_file(Path(home), model).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out: list[ServingPointer] = []
    for n, line in enumerate(lines):
        try:
            out.append(ServingPointer.from_json(line))
        except ServingError:
            if n == len(lines) - 1:
                continue  # a line torn by a crash mid-append; the pointer it held is current
            raise
    return out


def pointers(home: Path | str) -> list[ServingPointer]:
    """The current pointer of every model that has one, by model file name.

    Example:
        >>> [p.model for p in pointers(".ledger")]  # doctest: +SKIP
        ['spam-filter', 'text-embedder']
    """
    folder = Path(home) / SERVING_DIR
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return [ServingPointer.from_json(p.read_text(encoding="utf-8")) for p in files]


def serving_artifacts(home: Path | str, *, with_previous: bool = False) -> set[Path]:
    """The artifact folder of every model's current pointer (what gc must keep), and with
    ``with_previous`` also each model's previous one (what ``switch-back`` needs).

    Example:
        >>> serving_artifacts(".ledger", with_previous=True)  # doctest: +SKIP
        {PosixPath('.ledger/artifacts/embedder/v1/0c5e1d7a9b3f2e41'), ...}
    """
    base = Path(home)
    found = pointers(base)
    if with_previous:
        found += [b for p in found if (b := previous(base, p.model)) is not None]
    return {p.artifact_path(base) for p in found}


def collect_garbage(home: Path | str, *, keep_last: int = 1, dry_run: bool = False) -> GcResult:
    """``ledger artifacts gc``: remove artifacts nothing needs, under every model's rollback
    lock (a running rollback's new, not yet switched artifact is never removed); the
    serving and previous artifacts of each model are kept, so switching back stays instant.

    Raises:
        RollbackInProgress: a rollback of some model is running; run gc after it.
    """
    base = Path(home)
    root = base / ARTIFACTS_DIR
    models = sorted(
        {e.manifest.model for e in list_artifacts(root)} | {p.model for p in pointers(base)}
    )
    with rollback_locks(base, models):
        keep = serving_artifacts(base, with_previous=True)
        return gc(root, keep=keep, keep_last=keep_last, dry_run=dry_run)


def switch(
    home: Path | str,
    model: str,
    artifact: Path | str,
    *,
    info: Mapping[str, Any] | None = None,
    verify: bool = True,
) -> ServingPointer:
    """Make ``artifact`` (a folder under ``home``) serve ``model``; the new pointer.

    The artifact's manifest must be of ``model``; with ``verify`` its files must match their
    checksums. The version comes from the manifest; ``info`` is stored as given (e.g. the
    rollback's summary).

    Example:
        >>> art = Path(".ledger/artifacts") / manifest.relative_path  # doctest: +SKIP
        >>> switch(".ledger", "embedder", art).version  # doctest: +SKIP
        'v1'
    """
    base = Path(home)
    folder = Path(artifact)
    try:
        relative = folder.resolve().relative_to(base.resolve())
    except ValueError:
        raise ServingError(f"artifact {folder} is not inside the state folder {base}") from None
    try:
        manifest = load_manifest(folder)
    except ArtifactError as exc:
        raise ServingError(f"cannot switch {model} to {folder}: {exc}") from exc
    if manifest.model != model:
        raise ServingError(f"artifact {folder} is of model {manifest.model!r}, not {model!r}")
    if verify:
        _refuse_corrupt(folder)
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    pointer = ServingPointer(
        model=model,
        version=manifest.version,
        artifact=relative.as_posix(),
        checksum=manifest.checksum,
        switched_at=now,
        info=dict(info or {}),
    )
    target = _pointer_file(base, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Serialise switches of one model (a short, blocking lock, not the rollback lock).
    with _flock(base / LOCKS_DIR / f"{path_part(model)}.switch.lock", blocking=True):
        # 1. Append the pointer being replaced to the history first and fsync it: a crash
        #    after this step leaves the old pointer current and also in the history, which
        #    is harmless; the other order could lose it.
        previous = current(base, model)
        if previous is not None:
            with _history_file(base, model).open("a", encoding="utf-8") as f:
                f.write(previous.to_json() + "\n")
                f.flush()
                os.fsync(f.fileno())
        # 2. Write the new pointer to a temporary file and fsync it, so the rename below
        #    never exposes a half-written pointer.
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        with tmp.open("w", encoding="utf-8") as f:
            f.write(pointer.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
        # 3. Rename over the old pointer (atomic), then fsync the folder so the rename
        #    itself survives a power cut.
        os.replace(tmp, target)
        fsync_path(target.parent, directory=True)
    return pointer


def previous(home: Path | str, model: str) -> ServingPointer | None:
    """The newest earlier pointer naming a different artifact than the current one."""
    now = current(home, model)
    for p in reversed(history(home, model)):
        if now is None or p.artifact != now.artifact:
            return p
    return None


def switch_back(
    home: Path | str, model: str, *, info: Mapping[str, Any] | None = None, verify: bool = True
) -> ServingPointer:
    """Switch ``model`` back to its previous artifact (see :func:`previous`): instant, no build.

    Example:
        >>> switch_back(".ledger", "embedder").version  # doctest: +SKIP
        'v2'
    """
    back = previous(home, model)
    if back is None:
        raise ServingError(f"model {model!r} has no earlier serving artifact to switch back to")
    return switch(
        home,
        model,
        back.artifact_path(home),
        # keep what serving needs (e.g. the calibrated search_k); ``info`` adds the why/who
        info={**back.info, **(info or {})},
        verify=verify,
    )


def _refuse_corrupt(folder: Path) -> None:
    bad = verify_artifact(folder)
    if bad:
        raise ServingError(
            f"artifact {folder} fails its checksums ({', '.join(bad)}); rebuild it "
            "(`ledger rollback`) instead of serving it"
        )


def open_index(home: Path | str, model: str, *, verify: bool = True) -> IndexReader:
    """Open the index serving ``model``, refusing one that is not what the pointer names.

    Refused (:class:`ServingError`): no pointer; a manifest of another model or version; a
    manifest whose checksum is not the one pinned at switch time; with ``verify``, files
    that do not match their checksums.

    Example:
        >>> with open_index(".ledger", "embedder") as index:  # doctest: +SKIP
        ...     index.query(vector, 10)
    """
    pointer = current(home, model)
    if pointer is None:
        raise ServingError(f"model {model!r} has no serving pointer; run a rollback or switch")
    folder = check_pointer(home, pointer, verify=verify)
    try:
        reader = open_artifact(folder)
    except ArtifactError as exc:
        raise ServingError(f"cannot open the serving artifact of {model!r}: {exc}") from exc
    reader.search_k = serving_search_k(pointer)
    return reader


def check_pointer(home: Path | str, pointer: ServingPointer, *, verify: bool = True) -> Path:
    """The artifact folder ``pointer`` names, after checking it may serve: its manifest is
    of the pointer's model and version, with the checksum pinned at switch time, and (with
    ``verify``) its files match their checksums. Otherwise :class:`ServingError`.
    """
    folder = pointer.artifact_path(home)
    model = pointer.model
    try:
        manifest = load_manifest(folder)
    except ArtifactError as exc:
        raise ServingError(f"the serving artifact of {model!r} is unreadable: {exc}") from exc
    if (manifest.model, manifest.version) != (pointer.model, pointer.version):
        raise ServingError(
            f"the serving artifact {folder} is {manifest.model} {manifest.version}, but the "
            f"pointer says {pointer.model} {pointer.version}; refusing to serve it"
        )
    if manifest.checksum != pointer.checksum:
        raise ServingError(
            f"the serving artifact {folder} changed since the switch (manifest checksum "
            f"{manifest.checksum[:12]}, pinned {pointer.checksum[:12]}); refusing to serve it"
        )
    if verify:
        _refuse_corrupt(folder)
    return folder


def serving_search_k(pointer: ServingPointer) -> int:
    """The Annoy ``search_k`` serving uses for ``pointer``'s index: the one the rollback
    calibrated to meet the recall threshold (-1, Annoy's default, if none was recorded)."""
    value = pointer.info.get("search_k", -1)
    return int(value) if isinstance(value, int | str) and str(value).lstrip("-").isdigit() else -1


def _holder(fd: int) -> tuple[int | None, str | None]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return int(data["pid"]), str(data["since"])
    except (ValueError, KeyError, TypeError, OSError):
        return None, None  # the holder has not written its name yet; say "unknown"


@contextlib.contextmanager
def rollback_lock(home: Path | str, model: str) -> Iterator[Path]:
    """Hold ``model``'s rollback lock for the ``with`` block; yields the lock file.

    Non-blocking: if another holder (process or open file) has it,
    :class:`RollbackInProgress` names its pid. The kernel drops the lock when the holder
    dies, so a crash never leaves a model locked.

    Example:
        >>> with rollback_lock(".ledger", "embedder"):  # doctest: +SKIP
        ...     ...  # plan, rebuild, verify, switch
    """
    path = Path(home) / LOCKS_DIR / f"{path_part(model)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, since = _holder(fd)
            who = f"pid {pid}, since {since}" if pid is not None else "pid unknown"
            raise RollbackInProgress(
                f"a rollback of model {model!r} is already running ({who}); wait for it to "
                f"finish (lock {path})",
                pid=pid,
            ) from None
        try:
            os.ftruncate(fd, 0)
            since = datetime.now(UTC).isoformat(timespec="seconds")
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": since}).encode(), 0)
            yield path
        finally:
            # Clear the name before unlocking, so nobody reports a holder that has left.
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def rollback_locks(home: Path | str, models: Iterable[str]) -> Iterator[None]:
    """Hold the rollback lock of every model in ``models`` for the ``with`` block, taken in
    sorted order, so two holders of overlapping model sets cannot deadlock."""
    with contextlib.ExitStack() as stack:
        for model in sorted(set(models)):
            stack.enter_context(rollback_lock(home, model))
        yield
