"""lineage-ledger: safe, verified, one-command rollbacks of ML models, rebuilt from an event log."""

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
