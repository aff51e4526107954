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

The rollback runs :func:`check_artifact` on every artifact before the switch; ``ledger verify``
runs :func:`verify` on what serves now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from consumers.lag import lag
from ledger.artifacts.manifest import load_manifest
from ledger.checks.artifact import check_checksum, check_position
from ledger.checks.check import Check
from ledger.checks.lag import check_lag
from ledger.checks.mixed import MixedState, check_mixed
from ledger.checks.recall import RecallSpec, SearchK
from ledger.checks.serving import check_deployed, check_switch_set
from ledger.contract.events import Topics
from ledger.errors import ArtifactError, ServingError
from ledger.ops.kinds import ModelKind, kind_of_artifact
from ledger.serving.open import serving_search_k
from ledger.serving.pointers import ServingPointer, current
from ledger.store import Connection, open_views
from ledger.store.queries import log_offsets

#: verify's default: query as serving does, with the search_k its pointer recorded.
SERVING_RECALL = RecallSpec(search_k=SearchK.serving())


def _resolved(recall: RecallSpec, pointer: ServingPointer) -> RecallSpec:
    if recall.search_k.mode != "serving":
        return recall
    recorded = serving_search_k(pointer)  # Annoy's own convention: -1 is its default
    chosen = SearchK.fixed(recorded) if recorded > 0 else SearchK.annoy_default()
    return replace(recall, search_k=chosen)


def check_artifact(
    con: Connection,
    kind: ModelKind,
    model: str,
    version: str,
    folder: Path,
    *,
    pinned: ServingPointer | None = None,
    recall: RecallSpec,
) -> list[Check]:
    """Every check of one artifact against the views on ``con`` (at its log position): its
    checksums first (and what the serving pointer ``pinned`` recorded), then its kind's."""
    checksum = check_checksum(
        model,
        folder,
        pinned=pinned.checksum if pinned else None,
        pinned_manifest=pinned.manifest_sha256 if pinned else None,
    )
    if not checksum.passed:
        return [checksum]  # the files are not what was built: nothing else about them is known
    return [checksum, *kind.checks(con, model, version, folder, recall)]


@dataclass(frozen=True, slots=True, eq=False)
class VerifyReport:
    """What ``ledger verify`` found: every check with its figures, and the mixed state."""

    checks: tuple[Check, ...]
    mixed: tuple[MixedState, ...]
    serving: Mapping[str, Mapping[str, str]]  # model -> version, artifact, kind

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def merged(self, other: VerifyReport) -> VerifyReport:
        return VerifyReport(
            self.checks + other.checks,
            self.mixed + other.mixed,
            {**self.serving, **other.serving},
        )

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
    recall: RecallSpec = SERVING_RECALL,
    fail_on_mixed: bool = False,
) -> VerifyReport:
    """Verify what serves ``model`` (one name or several) now; see the module docstring.

    ``recall`` configures the recall check (by default with the search_k the rollback
    calibrated and recorded in the serving pointer, as serving queries).
    ``bootstrap`` is needed for the lag check (``None`` leaves it out: for offline use).
    Raises :class:`ServingError` when a model has no serving pointer (nothing to verify).

    Example:
        >>> report = verify(bs, Topics(), Path(".ledger"), "text-embedder")  # doctest: +SKIP
        >>> report.passed, [c.name for c in report.checks]  # doctest: +SKIP
        (True, ['checksum', 'position', 'count', 'purity', 'recall', 'lag'])
    """
    models = [model] if isinstance(model, str) else list(dict.fromkeys(model))
    pointers = _serving_pointers(home, models)
    with open_views(home) as con:
        stored = log_offsets(con)
    report = VerifyReport((), (), {})
    for pointer in pointers.values():
        report = report.merged(
            _verify_one(home, pointer, stored, _resolved(recall, pointer), fail_on_mixed)
        )
    report = report.merged(VerifyReport((check_switch_set(home),), (), {}))
    if bootstrap is not None:
        report = report.merged(VerifyReport((check_lag(lag(bootstrap, topics, home)),), (), {}))
    return report


def _serving_pointers(home: Path, models: Sequence[str]) -> dict[str, ServingPointer]:
    pointers = {}
    for m in models:
        pointer = current(home, m)
        if pointer is None:
            raise ServingError(f"model {m!r} has no serving pointer: nothing serves to verify")
        pointers[m] = pointer
    return pointers


def _verify_one(
    home: Path,
    pointer: ServingPointer,
    stored: Mapping[str, int],
    recall: RecallSpec,
    fail_on_mixed: bool,
) -> VerifyReport:
    """Verify one model's serving artifact, at its log position, and its mixed state."""
    m, folder = pointer.model, pointer.artifact_path(home)
    try:
        manifest = load_manifest(folder)
    except ArtifactError as exc:
        unreadable = Check(m, "checksum", False, f"the serving artifact is unreadable: {exc}")
        return VerifyReport((unreadable,), (), {})
    kind = kind_of_artifact(manifest.kind)
    serving = {m: {"version": pointer.version, "artifact": pointer.artifact, "kind": kind.name}}
    position = check_position(m, manifest, stored)
    with open_views(home, at=manifest.log_offsets) as con:
        found = check_artifact(
            con,
            kind,
            m,
            pointer.version,
            folder,
            pinned=pointer,
            recall=recall,
        )
    if not position.passed:
        found = [c for c in found if c.name == "checksum"]  # the rest would mislead
    checks = found[:1] + [position] + found[1:]
    with open_views(home) as con:
        state = kind.mixed_state(con, m, pointer.version)
        if position.passed:  # a store behind the artifact is behind its deployment too
            checks.append(check_deployed(con, pointer))
    if fail_on_mixed:
        checks.append(check_mixed(state, kind.counted))
    return VerifyReport(tuple(checks), (state,), serving)
