"""One strategy per model kind behind one protocol (:class:`ModelKind`): an embedding
model (an Annoy index) and a classifier (a decision table).

Callers reach a kind by its registered name (:func:`kind_named`), by an artifact's manifest
(:func:`kind_of_artifact`), or from a plan (``plan.kind``), and never branch on which it is.
"""

from __future__ import annotations

from ledger.errors import ContractError
from ledger.ops.kinds.base import (
    BuildContext,
    Classifier,
    Comparison,
    Embedder,
    Hooks,
    ModelKind,
    ModelPlan,
    Progress,
    no_progress,
)
from ledger.ops.kinds.classifier import CLASSIFIER, DecisionPlan
from ledger.ops.kinds.embedding import EMBEDDING, EmbeddingPlan

KINDS: dict[str, ModelKind] = {k.name: k for k in (EMBEDDING, CLASSIFIER)}


def kind_named(name: str) -> ModelKind:
    """The kind a model version was registered as (``"embedding"``, ``"classifier"``)."""
    try:
        return KINDS[name]
    except KeyError:
        raise ContractError(
            f"unknown model kind {name!r}", field="kind", expected=" or ".join(KINDS), got=name
        ) from None


def kind_of_artifact(artifact: str) -> ModelKind:
    """The kind whose artifacts a manifest of kind ``artifact`` (``"index"``...) describes."""
    for kind in KINDS.values():
        if kind.artifact == artifact:
            return kind
    raise ContractError(f"unknown artifact kind {artifact!r}", field="kind", got=artifact)


__all__ = [
    "CLASSIFIER",
    "EMBEDDING",
    "KINDS",
    "BuildContext",
    "Classifier",
    "Comparison",
    "DecisionPlan",
    "Embedder",
    "EmbeddingPlan",
    "Hooks",
    "ModelKind",
    "ModelPlan",
    "Progress",
    "kind_named",
    "kind_of_artifact",
    "no_progress",
]
