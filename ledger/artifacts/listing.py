"""Finding and removing index artifacts: ``ledger artifacts list|gc``.

Artifacts are immutable; old ones are kept so switching back is instant, until ``gc``
removes those that no pointer serves (keeping the newest ``keep_last`` per version).
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from ledger.artifacts.manifest import STAGING_PREFIX, Manifest, load_manifest, path_part
from ledger.errors import ArtifactError
from ledger.log.broker import pid_alive

#: gc renames an artifact to this hidden prefix before deleting it (a reader never sees half)
TRASH_PREFIX = ".trash-"


@dataclass(frozen=True, slots=True)
class ArtifactEntry:
    """An artifact found on disk by :func:`list_artifacts`."""

    path: Path
    manifest: Manifest


def list_artifacts(root: Path | str, model: str | None = None) -> list[ArtifactEntry]:
    """Artifacts under ``root`` (of ``model`` only, if given), oldest first per version.

    Folders without a readable manifest (staging or half-deleted folders, strangers) are
    skipped: they are not artifacts.

    Example:
        >>> entries = list_artifacts(".ledger/artifacts", "embedder")  # doctest: +SKIP
        >>> [e.manifest.version for e in entries]  # doctest: +SKIP
        ['v1', 'v2']
    """
    base = Path(root)
    models = [base / path_part(model)] if model is not None else _subdirs(base)
    found: list[ArtifactEntry] = []
    for model_dir in models:
        for version_dir in _subdirs(model_dir):
            for art in _subdirs(version_dir):
                try:
                    found.append(ArtifactEntry(art, load_manifest(art)))
                except ArtifactError:
                    continue  # not an artifact (see docstring); gc leaves it alone too
    found.sort(
        key=lambda e: (e.manifest.model, e.manifest.version, e.manifest.created_at, str(e.path))
    )
    return found


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _leftovers(root: Path) -> list[Path]:
    """Staging folders of builds whose process died, and folders gc failed to finish removing."""
    out = []
    for version_dir in root.glob("*/*"):
        for p in version_dir.iterdir() if version_dir.is_dir() else ():
            if p.name.startswith(TRASH_PREFIX):
                out.append(p)
            elif p.name.startswith(STAGING_PREFIX):
                pid = p.name.split("-")[-2]
                if pid.isdigit() and not pid_alive(int(pid)):
                    out.append(p)
    return sorted(out)


@dataclass(frozen=True, slots=True)
class GcResult:
    """What :func:`gc` removed (or would remove with ``dry_run``) and what it kept."""

    removed: tuple[Path, ...]
    kept: tuple[Path, ...]
    leftovers: tuple[Path, ...] = field(default=())


def gc(
    root: Path | str,
    *,
    keep: Collection[Path | str] = (),
    keep_last: int = 1,
    dry_run: bool = False,
) -> GcResult:
    """Remove artifacts not in ``keep`` except the ``keep_last`` newest of each model version.

    Also removes staging folders of dead builds. An artifact is first renamed to a hidden
    name, then deleted, so no half-deleted artifact is ever visible.

    Args:
        root: the artifacts root.
        keep: artifact folders never removed (e.g. every model's serving artifact).
        keep_last: per (model, version), how many of the newest artifacts to keep.
        dry_run: only report.

    Example:
        >>> gc(".ledger/artifacts", keep={serving_path}, keep_last=1).removed  # doctest: +SKIP
        (PosixPath('.ledger/artifacts/embedder/v1/0c5e1d7a9b3f2e41'),)
    """
    if keep_last < 0:
        raise ArtifactError(f"keep_last must be >= 0, got {keep_last}")
    base = Path(root)
    pinned = {Path(k).resolve() for k in keep}
    by_version: dict[tuple[str, str], list[ArtifactEntry]] = {}
    for entry in list_artifacts(base):
        by_version.setdefault((entry.manifest.model, entry.manifest.version), []).append(entry)
    removed: list[Path] = []
    kept: list[Path] = []
    for entries in by_version.values():
        newest = {e.path for e in entries[len(entries) - keep_last :]} if keep_last else set()
        for e in entries:
            (kept if e.path in newest or e.path.resolve() in pinned else removed).append(e.path)
    leftovers = _leftovers(base) if base.is_dir() else []
    if not dry_run:
        for path in removed + leftovers:
            target = path
            try:
                if not path.name.startswith(TRASH_PREFIX):
                    target = path.with_name(f"{TRASH_PREFIX}{path.name}-{secrets.token_hex(4)}")
                    path.rename(target)
                shutil.rmtree(target)
            except FileNotFoundError:
                continue  # a concurrent gc removed it first: the outcome is the same
    return GcResult(tuple(removed), tuple(kept), tuple(leftovers))
