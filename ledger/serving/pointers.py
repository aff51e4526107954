"""The serving pointer of each model: which index artifact answers queries, switched atomically.

Under the state folder ``home``::

    serving/<model>.json            the current pointer (artifact path relative to home)
    serving/<model>.history.jsonl   every pointer it replaced, oldest first (append-only)
    locks/<model>.lock              the rollback lock: one rollback per model at a time

A pointer pins the manifest checksum of its artifact, so an artifact changed after the
switch is refused when opened, and so is one built for another model or version.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.artifacts.manifest import (
    MANIFEST,
    fsync_path,
    load_manifest,
    path_part,
    sha256_file,
    verify_artifact,
)
from ledger.errors import ArtifactError, ServingError
from ledger.serving.locks import LOCKS_DIR, flock

SERVING_DIR = "serving"
ARTIFACTS_DIR = "artifacts"


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
    # The sha256 of the manifest file itself: the checksum above covers the other files,
    # so an edited manifest (its version, item count, ...) is caught by this one.
    manifest_sha256: str | None = None

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
                **({"manifest_sha256": self.manifest_sha256} if self.manifest_sha256 else {}),
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
                d.get("manifest_sha256"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ServingError(f"not a valid serving pointer: {exc!r}") from exc


def _pointer_file(home: Path, model: str) -> Path:
    return home / SERVING_DIR / f"{path_part(model)}.json"


def _history_file(home: Path, model: str) -> Path:
    return home / SERVING_DIR / f"{path_part(model)}.history.jsonl"


def current(home: Path | str, model: str) -> ServingPointer | None:
    """The serving pointer of ``model``, or None if nothing was ever switched to.

    Example:
        >>> current(".ledger", "embedder").version  # doctest: +SKIP
        'v2'
    """
    path = _pointer_file(Path(home), model)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return ServingPointer.from_json(text)
    except ServingError as exc:
        raise ServingError(
            f"the serving pointer {path} is unreadable ({exc}); a rollback of {model} replaces "
            f"it, or restore its last good line from {_history_file(Path(home), model)}"
        ) from exc


def history(home: Path | str, model: str) -> list[ServingPointer]:
    """Every pointer ``model`` had before the current one, oldest first.

    Example:
        >>> [p.version for p in history(".ledger", "embedder")]  # doctest: +SKIP
        ['v1', 'v2']
    """
    path = _history_file(Path(home), model)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out: list[ServingPointer] = []
    for n, line in enumerate(lines):
        try:
            out.append(ServingPointer.from_json(line))
        except ServingError as exc:
            if n == len(lines) - 1:
                continue  # a line torn by a crash mid-append; the pointer it held is current
            raise ServingError(
                f"line {n + 1} of the serving history {path} is unreadable ({exc}); "
                "remove or repair that line (the history only serves switch-back)"
            ) from exc
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
        refuse_corrupt(folder)
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    pointer = ServingPointer(
        model=model,
        version=manifest.version,
        artifact=relative.as_posix(),
        checksum=manifest.checksum,
        switched_at=now,
        info=dict(info or {}),
        manifest_sha256=sha256_file(folder / MANIFEST),
    )
    target = _pointer_file(base, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Serialise switches of one model (a short, blocking lock, not the rollback lock).
    with flock(base / LOCKS_DIR / f"{path_part(model)}.switch.lock", blocking=True):
        # 1. Append the pointer being replaced to the history first and fsync it: a crash
        #    after this step leaves the old pointer current and also in the history, which
        #    is harmless; the other order could lose it.
        _remove_leftovers(target)
        previous = _replaceable(base, model, target)
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


def _remove_leftovers(target: Path) -> None:
    # Temporary pointer files of switches that crashed before their rename; the switch lock
    # is held, so none of them belongs to a switch in progress.
    for leftover in target.parent.glob(f".{target.name}.tmp-*"):
        leftover.unlink(missing_ok=True)


def _replaceable(home: Path, model: str, target: Path) -> ServingPointer | None:
    """The pointer being replaced; a torn one is kept aside (``<name>.torn-<time>``), not
    fatal: the switch is how it gets repaired."""
    try:
        return current(home, model)
    except ServingError:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        os.replace(target, target.with_name(f"{target.name}.torn-{stamp}"))
        return None


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


def refuse_corrupt(folder: Path) -> None:
    """Raise ServingError unless every file of the artifact at ``folder`` matches its checksum."""
    bad = verify_artifact(folder)
    if bad:
        raise ServingError(
            f"artifact {folder} fails its checksums ({', '.join(bad)})",
            hint="rebuild it with a rollback to its version instead of serving it",
            cli_hint="rebuild it with `ledger rollback` instead of serving it",
        )
