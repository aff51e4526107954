"""Checks that what serves (or is about to serve) is exactly what the log says it should be.

Each check returns a :class:`Check` with its figures, so operators see *why* it failed:

- ``checksum``: every artifact file has the sha256 its manifest records (and the manifest
  is the one the serving pointer pinned at switch time);
- ``count``: items in the index = the manifest's count = live entities with a V embedding
  in the views *at the manifest's log position*;
- ``purity``: the manifest is of the serving model version, and every item is the latest V
  vector of a live entity at that position (all items; see :mod:`ledger.checks.index_facts`);
- ``recall``: recall@k of the Annoy index against exact numpy search, on sampled items;
- ``decisions`` (``purity`` and ``coverage`` of a classifier's table): only V decisions,
  each subject's latest, every subject with a V decision;
- ``lag``: the materialiser has every event of the log (stored offset = true end).

And one figure that is not a check unless asked (``fail_on_mixed``): the *mixed state*,
how many live entities' latest served (non-shadow) embedding is not from the serving
version, i.e. how mixed a vector DB fed directly by the services would be.

The rollback runs :func:`verify_artifact_for` before every switch; ``ledger verify`` runs
:func:`verify` on what serves now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.artifacts.manifest import load_manifest
from ledger.checks.artifact import (
    DEFAULT_RECALL_THRESHOLD,
    DEFAULT_SAMPLE,
    artifact_checks,
    check_position,
)
from ledger.checks.check import Check
from ledger.checks.mixed import MixedState, check_mixed, mixed_state
from ledger.contract.events import Topics
from ledger.errors import ArtifactError, ServingError
from ledger.serving.open import serving_search_k
from ledger.serving.pointers import current
from ledger.store import open_views
from ledger.store.queries import log_offsets

# -- the checks ---------------------------------------------------------------------------


def check_lag(partitions: Sequence[Any]) -> Check:
    """The materialiser holds every event: stored offset = true end on every partition.

    ``partitions`` are :class:`consumers.lag.PartitionLag` rows.
    """
    behind = [p for p in partitions if p.lag != 0]
    total = sum(p.lag for p in partitions)
    figures = {
        "partitions": len(partitions),
        "lagging_partitions": len(behind),
        "events_behind": total,
        "pending_dead_letters": sum(p.dead_letters for p in partitions),
    }
    if not behind:
        detail = f"0 events behind on {len(partitions)} partitions"
    else:
        worst = ", ".join(f"{p.topic}:{p.partition} {p.lag}" for p in behind[:3])
        lost = any(p.lag < 0 for p in behind)
        detail = (
            f"{total} events behind on {len(behind)} partitions ({worst})"
            + ("; negative lag: the broker lost events the store holds" if lost else "")
            + "; the materialisers have not caught up"
        )
    return Check("*", "lag", not behind, detail, figures)


# -- the mixed state ----------------------------------------------------------------------


# -- verify what serves ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class VerifyReport:
    """What ``ledger verify`` found: every check with its figures, and the mixed state."""

    checks: tuple[Check, ...]
    mixed: tuple[MixedState, ...]
    serving: Mapping[str, Mapping[str, str]]  # model -> version, artifact, kind

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def summary(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "serving": {m: dict(s) for m, s in self.serving.items()},
            "checks": [c.to_dict() for c in self.checks],
            "mixed": [m.to_dict() for m in self.mixed],
        }


def verify(
    bootstrap: str | None,
    topics: Topics,
    home: Path,
    model: str | Sequence[str],
    *,
    recall_threshold: float = DEFAULT_RECALL_THRESHOLD,
    sample: int = DEFAULT_SAMPLE,
    search_k: int | None = None,
    fail_on_mixed: bool = False,
) -> VerifyReport:
    """Verify what serves ``model`` (one name or several) now; see the module docstring.

    ``recall_threshold``, ``sample`` and ``search_k`` configure the recall check (``search_k``
    as serving passes it to Annoy; None: the one the rollback calibrated and recorded in the
    serving pointer; -1: Annoy's default, trees x k, which is low for millions of items).
    ``bootstrap`` is needed for the lag check (``None`` leaves it out: for offline use).
    Raises :class:`ServingError` when a model has no serving pointer (nothing to verify).

    Example:
        >>> report = verify(bs, Topics(), Path(".ledger"), "text-embedder")  # doctest: +SKIP
        >>> report.passed, [c.name for c in report.checks]  # doctest: +SKIP
        (True, ['checksum', 'position', 'count', 'purity', 'recall', 'lag'])
    """
    from consumers.lag import lag  # the consumer side depends on the library, not back

    models = [model] if isinstance(model, str) else list(dict.fromkeys(model))
    pointers = {}
    for m in models:
        pointer = current(home, m)
        if pointer is None:
            raise ServingError(f"model {m!r} has no serving pointer: nothing serves to verify")
        pointers[m] = pointer
    checks: list[Check] = []
    mixed: list[MixedState] = []
    serving: dict[str, dict[str, str]] = {}
    with open_views(home) as con:
        stored = log_offsets(con)
    for m, pointer in pointers.items():
        folder = pointer.artifact_path(home)
        try:
            manifest = load_manifest(folder)
        except ArtifactError as exc:
            checks.append(Check(m, "checksum", False, f"the serving artifact is unreadable: {exc}"))
            continue
        kind = "classifier" if manifest.kind == "decisions" else "embedding"
        serving[m] = {"version": pointer.version, "artifact": pointer.artifact, "kind": kind}
        position = check_position(m, manifest, stored)
        with open_views(home, at=manifest.log_offsets) as con:
            found = artifact_checks(
                con,
                m,
                pointer.version,
                folder,
                kind == "classifier",
                pinned=pointer.checksum,
                recall_threshold=recall_threshold,
                sample=sample,
                search_k=serving_search_k(pointer) if search_k is None else search_k,
            )
        if not position.passed:
            found = [c for c in found if c.name == "checksum"]  # the rest would mislead
        checks.extend(found[:1] + [position] + found[1:])
        with open_views(home) as con:
            state = mixed_state(con, m, pointer.version, kind=kind)
        mixed.append(state)
        if fail_on_mixed:
            checks.append(check_mixed(state))
    if bootstrap is not None:
        checks.append(check_lag(lag(bootstrap, topics, home)))
    return VerifyReport(tuple(checks), tuple(mixed), serving)
