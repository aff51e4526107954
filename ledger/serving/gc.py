"""Which artifacts serve (or served last), and removing the others."""

from __future__ import annotations

from pathlib import Path

from ledger.artifacts.listing import GcResult, gc, list_artifacts
from ledger.serving.locks import rollback_locks
from ledger.serving.pointers import ARTIFACTS_DIR, pointers, previous


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
