"""lineage-ledger: safe, verified, one-command rollbacks of ML models, rebuilt from an event log."""

from ledger.checks.verify import VerifyReport, verify
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
    LedgerError,
    LogGapError,
    MisroutedEvent,
    RollbackInProgress,
    ServingError,
    ShardBusy,
    StoreError,
    UnknownModelVersion,
    UnknownSchema,
    WireError,
)
from ledger.log.broker import EmbeddedBroker
from ledger.log.producer import Producer, content_hash, load_registry
from ledger.log.topics import init_topics
from ledger.ops.rollback import RollbackPlan, RollbackResult, rollback
from ledger.serving.open import open_index
from ledger.store import open_views

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "BrokerError",
    "ChecksumMismatch",
    "ContractError",
    "CorruptMessage",
    "DecisionRecorded",
    "DeploymentChanged",
    "EmbeddedBroker",
    "EmbeddingWritten",
    "EntityDeleted",
    "GateSpecError",
    "LedgerError",
    "LogGapError",
    "MisroutedEvent",
    "ModelVersion",
    "ModelVersionRegistered",
    "Producer",
    "Registry",
    "RollbackInProgress",
    "RollbackPlan",
    "RollbackResult",
    "ServingError",
    "ShardBusy",
    "StoreError",
    "Topics",
    "UnknownModelVersion",
    "UnknownSchema",
    "VerifyReport",
    "WireError",
    "content_hash",
    "init_topics",
    "load_registry",
    "open_index",
    "open_views",
    "rollback",
    "verify",
]
