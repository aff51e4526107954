"""The public API is exactly what ``ledger.__all__`` lists, and every name in it exists."""

from __future__ import annotations

import ledger

PUBLIC = {
    "BrokerError",
    "ContractError",
    "CorruptMessage",
    "DecisionRecorded",
    "DeploymentChanged",
    "EmbeddedBroker",
    "EmbeddingWritten",
    "EntityDeleted",
    "LedgerError",
    "LogGapError",
    "ModelVersion",
    "ModelVersionRegistered",
    "Producer",
    "Registry",
    "StoreError",
    "Topics",
    "UnknownModelVersion",
    "UnknownSchema",
    "WireError",
    "content_hash",
    "init_topics",
    "load_registry",
}


def test_all_is_exactly_the_public_api() -> None:
    assert set(ledger.__all__) == PUBLIC
    assert len(ledger.__all__) == len(PUBLIC)  # no duplicates


def test_every_exported_member_exists_and_is_public() -> None:
    for name in ledger.__all__:
        member = getattr(ledger, name)
        assert not name.startswith("_")
        assert getattr(member, "__module__", "").startswith("ledger."), name


def test_every_exception_is_a_ledger_error() -> None:
    errors = [
        getattr(ledger, n)
        for n in ledger.__all__
        if n.endswith("Error") or n.startswith("Unknown") or n == "CorruptMessage"
    ]
    errors = [e for e in errors if isinstance(e, type)]
    assert all(issubclass(e, ledger.LedgerError) for e in errors)
    assert len(errors) == 9
