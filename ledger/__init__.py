"""lineage-ledger: safe, verified, one-command rollbacks of ML models, rebuilt from an event log."""

from ledger.broker import EmbeddedBroker
from ledger.contract import ModelVersion, Registry
from ledger.errors import (
    ArtifactError,
    BrokerError,
    ChecksumMismatch,
    ContractError,
    CorruptMessage,
    GateSpecError,
    LedgerError,
    LogGapError,
    RollbackInProgress,
    ServingError,
    ShardBusy,
    StoreError,
    UnknownModelVersion,
    UnknownSchema,
    WireError,
)
from ledger.events import (
    DecisionRecorded,
    DeploymentChanged,
    EmbeddingWritten,
    EntityDeleted,
    ModelVersionRegistered,
    Topics,
)
from ledger.log import init_topics
from ledger.producer import Producer, content_hash, load_registry
from ledger.rollback import RollbackPlan, RollbackResult, rollback
from ledger.serving import open_index
from ledger.store import open_views
from ledger.verify import VerifyReport, verify

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
