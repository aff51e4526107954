"""The one protocol every model kind implements, and what it is handed.

A rollback, a verify, a comparison and a runbook do the same things for every model;
what differs by kind (an embedding model has an Annoy index, a classifier a decision
table) lives behind :class:`ModelKind`, one implementation per kind, so no other module
asks which kind it holds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from ledger.checks.check import Check
from ledger.checks.mixed import MixedState
from ledger.checks.recall import RecallSpec
from ledger.contract.events import Topics
from ledger.errors import HookError
from ledger.log.producer import Producer
from ledger.ops.metrics import ComparisonSpec
from ledger.store import Connection

#: ``embedder(ids) -> (vectors (n, d), content_sha256s)``.
Embedder = Callable[[list[str]], tuple[Any, Sequence[str]]]
#: ``classifier(ids) -> [(label, score, input_sha256), ...]``.
Classifier = Callable[[list[str]], Sequence[tuple[str, float, str]]]
#: ``progress(phase, done, total)``; phases: catch-up, plan, load, build, verify, switch.
Progress = Callable[[str, int, int], None]


def no_progress(_phase: str, _done: int, _total: int) -> None:
    """The default ``Progress``: report nothing."""


@dataclass(frozen=True, slots=True)
class Hooks:
    """The user's models, called to fill what the log lacks for the target version."""

    embedder: Embedder | None = None
    classifier: Classifier | None = None

    def __bool__(self) -> bool:
        return self.embedder is not None or self.classifier is not None

    @classmethod
    def load(cls, *, embedder: str | None = None, classifier: str | None = None) -> Hooks:
        """The hooks named ``module:function``, imported."""
        return cls(
            load_function(embedder) if embedder else None,
            load_function(classifier) if classifier else None,
        )


def load_function(spec: str) -> Callable[..., Any]:
    """Import ``module:function`` (a hook of the user's)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise HookError(f"a hook is named module:function, got {spec!r}", hook=spec)
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise HookError(f"cannot import {spec}: {exc}", hook=spec) from exc
    if not callable(fn):
        raise HookError(f"{spec} is not callable", hook=spec)
    return fn  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class BuildContext:
    """Where and at which log position a kind builds its artifact."""

    home: Path
    root: Path
    log_offsets: Mapping[str, int]
    progress: Progress = no_progress


class ModelPlan(Protocol):
    """What a rollback of one model to a version must do (one record type per kind)."""

    @property
    def model(self) -> str: ...
    @property
    def to_version(self) -> str: ...
    @property
    def serving_version(self) -> str | None: ...
    @property
    def kind(self) -> ModelKind: ...
    @property
    def index_items(self) -> int: ...
    @property
    def needs_fill(self) -> bool: ...

    def summary(self) -> dict[str, Any]: ...
    def console_lines(self) -> list[str]: ...
    def runbook_lines(self, top: int) -> list[str]: ...


class Comparison(Protocol):
    """Version A against version B of one model (one record type per kind)."""

    @property
    def coverage(self) -> Any: ...

    def figures(self) -> dict[str, float | None]: ...
    def to_dict(self) -> dict[str, Any]: ...
    def console_lines(self, version_a: str, version_b: str) -> list[str]: ...
    def tables(self) -> dict[str, pa.Table]: ...


class ModelKind(Protocol):
    """Everything that differs between an embedding model and a classifier."""

    name: str  # as registered: "embedding" | "classifier"
    artifact: str  # the manifest's kind: "index" | "decisions"
    counted: str  # what the mixed-state figure counts: "vectors" | "decisions"
    latest: str  # what one counted item is, for people: "live entities' latest vector"

    def data_topic(self, topics: Topics) -> str:
        """The topic its artifact is built from (the rest of the log cannot change it)."""
        ...

    def plan(
        self, con: Connection, model: str, version: str, registered: tuple[int | None, str | None]
    ) -> ModelPlan:
        """Plan the rollback of ``model`` to ``version`` from the views on ``con``."""
        ...

    def eta(self, plan: ModelPlan, rates: Mapping[str, float]) -> float:
        """Seconds to load and build the plan's artifact at ``rates``."""
        ...

    def fill(self, producer: Producer, plan: ModelPlan, hooks: Hooks, *, batch: int) -> int:
        """Publish target-version events for what the plan lacks; how many."""
        ...

    def build(self, con: Connection, plan: ModelPlan, at: BuildContext) -> Path:
        """Build the plan's artifact from the views on ``con``; its folder."""
        ...

    def checks(
        self,
        con: Connection,
        model: str,
        version: str,
        folder: Path,
        recall: RecallSpec,
    ) -> list[Check]:
        """The checks of an artifact beyond its checksum, against the views on ``con``."""
        ...

    def reports(self, plan: ModelPlan) -> dict[str, pa.Table]:
        """The plan's lists for the report folder, by file name suffix."""
        ...

    def mixed_state(self, con: Connection, model: str, serving_version: str) -> MixedState:
        """How mixed a store fed directly by the services would be."""
        ...

    def compare(
        self,
        con: Connection,
        model: str,
        versions: tuple[str, str],
        metrics: tuple[str | None, str | None],
        spec: ComparisonSpec,
    ) -> Comparison:
        """Compare ``versions`` (A, B) of ``model`` on the views on ``con``."""
        ...
