"""The one exception tree of lineage-ledger.

Every error the library raises on purpose is a :class:`LedgerError`; its message
says what went wrong and what to do about it. The CLI turns any ``LedgerError``
into one line and exit code 2; anything else is a bug and keeps its traceback.

    LedgerError
    ├── ContractError        an event breaks the contract (refused at the producer,
    │   │                    dead-lettered in the pipeline); carries field/expected/got
    │   ├── UnknownModelVersion   the model version was never registered
    │   └── MisroutedEvent        its record key is not its entity / subject id
    ├── WireError            bytes on the wire are not a ledger event
    │   ├── UnknownSchema         a valid frame whose fingerprint no schema has
    │   └── CorruptMessage        bad marker, short frame, or a body that does not decode
    ├── BrokerError          no Kafka-protocol broker could be reached or started
    ├── StoreError           DuckDB failed (``transient`` says whether a retry may help)
    │   └── ShardBusy             another live process is the writer of that shard
    ├── LogGapError          stored offsets point outside the log: events would be skipped
    ├── ArtifactError        an index artifact cannot be built, read or trusted
    │   └── ChecksumMismatch      files differ from what the manifest recorded
    ├── ServingError         the serving pointer is missing or names an artifact it must refuse
    │   └── RollbackInProgress    another process holds the model's rollback lock (``pid``)
    └── GateSpecError        an operator's gate spec (``"agreement>=0.95,overlap>=0.6"``)
                             does not parse; the message shows a valid one
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error lineage-ledger raises on purpose."""


class ContractError(LedgerError):
    """An event violates the event contract.

    Args:
        message: what is wrong and what to do.
        field: the offending field, e.g. ``"vector"``.
        expected: what the contract asks for.
        got: what was given (shortened).
        event_id: the event, when it has one.

    Example:
        >>> ContractError("vector has NaN", field="vector", expected="finite", got="nan")
        ContractError('vector has NaN')
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        expected: str | None = None,
        got: str | None = None,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.expected = expected
        self.got = got
        self.event_id = event_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    @property
    def reason(self) -> str:
        """One line for a dead-letter row: the message plus the structured data."""
        parts = [str(self)]
        if self.field is not None:
            parts.append(f"field={self.field}")
        if self.expected is not None:
            parts.append(f"expected={self.expected}")
        if self.got is not None:
            parts.append(f"got={self.got}")
        return "; ".join(parts)


class UnknownModelVersion(ContractError):
    """An event names a model version that was never registered."""


class MisroutedEvent(ContractError):
    """An event whose record key is not its entity / subject id: it may sit on another
    partition than the entity's other events, so the log's order per entity breaks.
    Re-sending it with the right key is the only fix (a re-drive never passes it)."""


class WireError(LedgerError):
    """Bytes that are not a decodable ledger event."""

    @property
    def reason(self) -> str:
        return str(self)


class UnknownSchema(WireError):
    """A well-formed single-object frame whose schema fingerprint is not known."""

    def __init__(self, fingerprint: bytes) -> None:
        super().__init__(
            f"unknown schema fingerprint {fingerprint.hex()}: the writer used a schema this "
            "ledger does not have; add it to schemas/history/ (old versions) or upgrade"
        )
        self.fingerprint = fingerprint


class CorruptMessage(WireError):
    """A frame with a bad marker, too short, or with a body that does not decode."""


class BrokerError(LedgerError):
    """No Kafka-protocol broker could be reached or started."""


class StoreError(LedgerError):
    """DuckDB failed. ``transient`` is True when retrying may succeed (e.g. a lock)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class ShardBusy(StoreError):
    """Another live materialiser process is the one writer of this shard (``shard``)."""

    def __init__(self, message: str, *, shard: str) -> None:
        super().__init__(message)
        self.shard = shard


class LogGapError(LedgerError):
    """The log no longer holds events the store has not materialised (or lost its log)."""


class ArtifactError(LedgerError):
    """An index artifact cannot be built, read or trusted (bad input, missing files, conflict)."""


class ChecksumMismatch(ArtifactError):
    """Files of an artifact differ from the sha256 its manifest recorded.

    Example:
        >>> ChecksumMismatch("artifact a/b is corrupt", files=("shard-0.ann",)).files
        ('shard-0.ann',)
    """

    def __init__(self, message: str, *, files: tuple[str, ...]) -> None:
        super().__init__(message)
        self.files = files


class ServingError(LedgerError):
    """The serving pointer is missing, or names an artifact that must not be served."""


class RollbackInProgress(ServingError):
    """Another process holds the rollback lock of the model; ``pid`` names it (None if unknown)."""

    def __init__(self, message: str, *, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class GateSpecError(LedgerError):
    """A gate spec given by an operator does not parse.

    Args:
        message: what is wrong, and what a valid spec looks like.
        spec: the whole spec as given.
        item: the offending comma-separated part (``None`` when the spec is empty).

    Example:
        >>> GateSpecError("bad gate", spec="agreement=>1", item="agreement=>1").item
        'agreement=>1'
    """

    def __init__(self, message: str, *, spec: str, item: str | None = None) -> None:
        super().__init__(message)
        self.spec = spec
        self.item = item
