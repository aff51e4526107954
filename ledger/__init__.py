"""lineage-ledger: safe, verified, one-command rollbacks of ML models, rebuilt from an event log."""

# The names below load on first use (PEP 562): importing one stage (e.g. ``consumers``, or
# an index build worker) must not import every stage through this package's __init__.
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger.artifacts.index_reader import IndexReader
    from ledger.checks.check import Check
    from ledger.checks.recall import RecallSpec, SearchK
    from ledger.contract.events import (
        DecisionRecorded,
        DeploymentChanged,
        EmbeddingWritten,
        EntityDeleted,
        ModelVersionRegistered,
        Topics,
    )
    from ledger.contract.rules import ModelVersion, Registry
    from ledger.errors import (
        ArtifactError,
        BrokerError,
        ChecksumMismatch,
        ContractError,
        CorruptMessage,
        GateSpecError,
        HookError,
        LedgerError,
        LogGapError,
        MisroutedEvent,
        RollbackFailed,
        RollbackInProgress,
        ServingError,
        ShardBusy,
        StoreError,
        UnknownModelVersion,
        UnknownSchema,
        UsageError,
        WireError,
    )
    from ledger.log.broker import EmbeddedBroker
    from ledger.log.producer import Producer, content_hash, load_registry
    from ledger.log.topics import init_topics
    from ledger.ops.compare import CompareReport, VersionComparison
    from ledger.ops.compare import compare_log as compare
    from ledger.ops.kinds import Hooks
    from ledger.ops.metrics import ComparisonSpec
    from ledger.ops.plan import RollbackPlan
    from ledger.ops.promotion import PromotionResult, SwitchedBack, promote, switch_back
    from ledger.ops.rollback import RollbackOptions, RollbackResult, rollback
    from ledger.ops.verify import VerifyReport, verify
    from ledger.serving.open import open_index
    from ledger.store import open_views

_PUBLIC: dict[str, tuple[str, str]] = {
    "ArtifactError": ("ledger.errors", "ArtifactError"),
    "BrokerError": ("ledger.errors", "BrokerError"),
    "Check": ("ledger.checks.check", "Check"),
    "ChecksumMismatch": ("ledger.errors", "ChecksumMismatch"),
    "CompareReport": ("ledger.ops.compare", "CompareReport"),
    "ComparisonSpec": ("ledger.ops.metrics", "ComparisonSpec"),
    "ContractError": ("ledger.errors", "ContractError"),
    "CorruptMessage": ("ledger.errors", "CorruptMessage"),
    "DecisionRecorded": ("ledger.contract.events", "DecisionRecorded"),
    "DeploymentChanged": ("ledger.contract.events", "DeploymentChanged"),
    "EmbeddedBroker": ("ledger.log.broker", "EmbeddedBroker"),
    "EmbeddingWritten": ("ledger.contract.events", "EmbeddingWritten"),
    "EntityDeleted": ("ledger.contract.events", "EntityDeleted"),
    "GateSpecError": ("ledger.errors", "GateSpecError"),
    "HookError": ("ledger.errors", "HookError"),
    "Hooks": ("ledger.ops.kinds", "Hooks"),
    "IndexReader": ("ledger.artifacts.index_reader", "IndexReader"),
    "LedgerError": ("ledger.errors", "LedgerError"),
    "LogGapError": ("ledger.errors", "LogGapError"),
    "MisroutedEvent": ("ledger.errors", "MisroutedEvent"),
    "ModelVersion": ("ledger.contract.rules", "ModelVersion"),
    "ModelVersionRegistered": ("ledger.contract.events", "ModelVersionRegistered"),
    "Producer": ("ledger.log.producer", "Producer"),
    "PromotionResult": ("ledger.ops.promotion", "PromotionResult"),
    "RecallSpec": ("ledger.checks.recall", "RecallSpec"),
    "Registry": ("ledger.contract.rules", "Registry"),
    "RollbackFailed": ("ledger.errors", "RollbackFailed"),
    "RollbackInProgress": ("ledger.errors", "RollbackInProgress"),
    "RollbackOptions": ("ledger.ops.rollback", "RollbackOptions"),
    "RollbackPlan": ("ledger.ops.plan", "RollbackPlan"),
    "RollbackResult": ("ledger.ops.rollback", "RollbackResult"),
    "SearchK": ("ledger.checks.recall", "SearchK"),
    "ServingError": ("ledger.errors", "ServingError"),
    "ShardBusy": ("ledger.errors", "ShardBusy"),
    "StoreError": ("ledger.errors", "StoreError"),
    "SwitchedBack": ("ledger.ops.promotion", "SwitchedBack"),
    "Topics": ("ledger.contract.events", "Topics"),
    "UnknownModelVersion": ("ledger.errors", "UnknownModelVersion"),
    "UnknownSchema": ("ledger.errors", "UnknownSchema"),
    "UsageError": ("ledger.errors", "UsageError"),
    "VerifyReport": ("ledger.ops.verify", "VerifyReport"),
    "VersionComparison": ("ledger.ops.compare", "VersionComparison"),
    "WireError": ("ledger.errors", "WireError"),
    "compare": ("ledger.ops.compare", "compare_log"),
    "content_hash": ("ledger.log.producer", "content_hash"),
    "init_topics": ("ledger.log.topics", "init_topics"),
    "load_registry": ("ledger.log.producer", "load_registry"),
    "open_index": ("ledger.serving.open", "open_index"),
    "open_views": ("ledger.store", "open_views"),
    "promote": ("ledger.ops.promotion", "promote"),
    "rollback": ("ledger.ops.rollback", "rollback"),
    "switch_back": ("ledger.ops.promotion", "switch_back"),
    "verify": ("ledger.ops.verify", "verify"),
}

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "BrokerError",
    "Check",
    "ChecksumMismatch",
    "CompareReport",
    "ComparisonSpec",
    "ContractError",
    "CorruptMessage",
    "DecisionRecorded",
    "DeploymentChanged",
    "EmbeddedBroker",
    "EmbeddingWritten",
    "EntityDeleted",
    "GateSpecError",
    "HookError",
    "Hooks",
    "IndexReader",
    "LedgerError",
    "LogGapError",
    "MisroutedEvent",
    "ModelVersion",
    "ModelVersionRegistered",
    "Producer",
    "PromotionResult",
    "RecallSpec",
    "Registry",
    "RollbackFailed",
    "RollbackInProgress",
    "RollbackOptions",
    "RollbackPlan",
    "RollbackResult",
    "SearchK",
    "ServingError",
    "ShardBusy",
    "StoreError",
    "SwitchedBack",
    "Topics",
    "UnknownModelVersion",
    "UnknownSchema",
    "UsageError",
    "VerifyReport",
    "VersionComparison",
    "WireError",
    "compare",
    "content_hash",
    "init_topics",
    "load_registry",
    "open_index",
    "open_views",
    "promote",
    "rollback",
    "switch_back",
    "verify",
]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'ledger' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
