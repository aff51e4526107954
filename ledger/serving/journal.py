"""Switching a set of models as one: a journal that the next switch completes.

Each pointer switch is atomic on its own; a rollback of an embedder and a classifier
switches two. A crash between them would leave the embedder on v1 and the classifier on
v2 with every single pointer valid. So a set is switched in three steps:

1. write ``serving/switch-journal.json`` naming every model's target artifact (fsynced):
   from now on the set is *pending*;
2. switch each pointer (atomic each; a pointer already at its target is left alone);
3. remove the journal (and fsync the folder): the set is switched.

A pending journal is completed (rolled forward: every target passed its checks before the
journal was written) by the next set switch of the same models, and reported by
``verify`` and ``doctor`` until then.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.artifacts.manifest import fsync_path
from ledger.errors import ServingError
from ledger.serving.pointers import SERVING_DIR, ServingPointer, current, switch

JOURNAL = "switch-journal.json"


@dataclass(frozen=True, slots=True)
class PendingSwitch:
    """A set switch that started and did not finish: per model, the artifact it goes to."""

    action: str  # "rollback" | "switch-back": what to run again to finish it
    to_version: str
    started_at: str
    targets: Mapping[str, str]  # model -> artifact folder, relative to home
    infos: Mapping[str, Mapping[str, Any]]
    before: Mapping[str, ServingPointer | None]  # model -> its pointer before the switch

    def behind(self, home: Path | str) -> list[str]:
        """The models whose pointer is not at its target yet."""
        return [
            m
            for m, a in self.targets.items()
            if (p := _readable(Path(home), m)) is None or p.artifact != a
        ]

    def describe(self, home: Path | str) -> str:
        behind = self.behind(home)
        done = [m for m in self.targets if m not in behind]
        return (
            f"the switch of {', '.join(self.targets)} to {self.to_version} started "
            f"{self.started_at} and did not finish: switched {', '.join(done) or 'none'}, "
            f"not yet {', '.join(behind) or 'none'}"
        )


def _journal_file(home: Path) -> Path:
    return home / SERVING_DIR / JOURNAL


def pending_switch(home: Path | str) -> PendingSwitch | None:
    """The set switch a crash interrupted, if any."""
    path = _journal_file(Path(home))
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return PendingSwitch(
            str(d["action"]),
            str(d["to_version"]),
            str(d["started_at"]),
            dict(d["targets"]),
            dict(d["infos"]),
            {m: ServingPointer.from_json(p) if p else None for m, p in d["before"].items()},
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ServingError(
            f"the switch journal {path} is unreadable ({exc!r}); compare the serving "
            "pointers with the log and remove it"
        ) from exc


def switch_set(
    home: Path | str,
    action: str,
    to_version: str,
    targets: Mapping[str, Path],
    infos: Mapping[str, Mapping[str, Any]],
) -> dict[str, ServingPointer]:
    """Switch every model of ``targets`` to its artifact, all or (after a crash) pending.

    The caller holds the rollback lock of every model in ``targets`` and has completed any
    pending switch (:func:`complete_pending_switch`) before deciding the targets.
    """
    base = Path(home)
    if pending_switch(base) is not None:
        raise ServingError("an interrupted switch is pending; complete it first")
    root = base.resolve()
    relative = {m: Path(a).resolve().relative_to(root).as_posix() for m, a in targets.items()}
    journal = {
        "action": action,
        "to_version": to_version,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "targets": relative,
        "infos": {m: dict(i) for m, i in infos.items()},
        "before": {m: (p.to_json() if (p := _readable(base, m)) else None) for m in targets},
    }
    path = _journal_file(base)
    path.parent.mkdir(parents=True, exist_ok=True)
    # 1. The journal, durable before the first pointer moves.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps(journal, sort_keys=True, default=str))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent, directory=True)
    # 2. Every pointer; 3. the journal goes.
    switched = _apply(base, relative, infos)
    path.unlink()
    fsync_path(path.parent, directory=True)
    return switched


def complete_pending_switch(home: Path | str, locked: set[str]) -> PendingSwitch | None:
    """Finish an interrupted set switch (roll forward); what it finished, if anything.

    ``locked`` are the models whose rollback lock the caller holds: a journal naming any
    other model is not ours to complete.
    """
    base = Path(home)
    pending = pending_switch(base)
    if pending is None:
        return None
    others = set(pending.targets) - locked
    if others:
        raise ServingError(
            f"{pending.describe(base)}; finish it first by switching all of "
            f"{', '.join(sorted(pending.targets))} together (run the interrupted "
            f"{pending.action} again with every model it named)"
        )
    _apply(base, {m: pending.targets[m] for m in pending.behind(base)}, pending.infos)
    _journal_file(base).unlink()
    fsync_path(_journal_file(base).parent, directory=True)
    return pending


def _readable(home: Path, model: str) -> ServingPointer | None:
    try:
        return current(home, model)
    except ServingError:
        return None  # torn: the switch keeps it aside and replaces it


def _apply(
    home: Path, targets: Mapping[str, str], infos: Mapping[str, Mapping[str, Any]]
) -> dict[str, ServingPointer]:
    out = {}
    for model, artifact in targets.items():
        now = _readable(home, model)
        if now is not None and now.artifact == artifact:
            out[model] = now  # already there (a rerun, or a completed journal)
            continue
        out[model] = switch(home, model, home / artifact, info=infos.get(model, {}))
    return out
