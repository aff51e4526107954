"""The public API is exactly what ``ledger.__all__`` lists, and every name in it exists."""

from __future__ import annotations

import ledger

PUBLIC = {
    "Check",
    "CompareReport",
    "ComparisonSpec",
    "Hooks",
    "IndexReader",
    "PromotionResult",
    "RecallSpec",
    "RollbackFailed",
    "RollbackOptions",
    "SearchK",
    "SwitchedBack",
    "VersionComparison",
    "compare",
    "promote",
    "switch_back",
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
    "HookError",
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
    "UsageError",
    "VerifyReport",
    "WireError",
    "content_hash",
    "init_topics",
    "load_registry",
    "open_index",
    "open_views",
    "rollback",
    "verify",
}


def test_all_is_exactly_the_public_api() -> None:
    assert set(ledger.__all__) == PUBLIC
    assert len(ledger.__all__) == len(PUBLIC)  # no duplicates


def test_every_exported_member_exists_and_is_public() -> None:
    for name in ledger.__all__:
        member = getattr(ledger, name)
        assert not name.startswith("_")
        assert getattr(member, "__module__", "").startswith("ledger."), name


def test_every_error_class_is_exported_and_is_a_ledger_error() -> None:
    import inspect

    import ledger.errors

    classes = {
        name
        for name, obj in inspect.getmembers(ledger.errors, inspect.isclass)
        if issubclass(obj, Exception) and obj.__module__ == "ledger.errors"
    }
    assert classes <= set(ledger.__all__)
    assert all(issubclass(getattr(ledger, n), ledger.LedgerError) for n in classes)
