"""The one exception tree of lineage-ledger.

Every error the library raises on purpose is a :class:`LedgerError`. Its message says
what is wrong, in the library's terms; ``hint`` says what to do next, in the library's
terms too (functions, arguments, settings); ``cli_hint``, when given, is the same advice
in the CLI's terms (flags, commands). ``str(error)`` is the message and the hint, so what
a Python caller sees never names a flag; only the CLI shows ``cli_hint``. The CLI turns
any ``LedgerError`` into one line and exit code 2; anything else is a bug and keeps its
traceback.

    LedgerError
    ├── UsageError           a library call got arguments it cannot work with
    ├── ContractError        an event breaks the contract (refused at the producer,
    │   │                    dead-lettered in the pipeline); carries field/expected/got
    │   ├── UnknownModelVersion   the model version was never registered
    │   └── MisroutedEvent        its record key is not its entity / subject id
    ├── WireError            bytes on the wire are not a ledger event
    │   ├── UnknownSchema         a valid frame whose fingerprint no schema has
    │   └── CorruptMessage        bad marker, short frame, or a body that does not decode
    ├── BrokerError          no Kafka-protocol broker could be reached or started, or it
    │                        did not acknowledge what was sent
    ├── StoreError           DuckDB failed (``transient`` says whether a retry may help)
    │   └── ShardBusy             another live process is the writer of that shard
    ├── LogGapError          stored offsets point outside the log: events would be skipped
    ├── ArtifactError        an index artifact cannot be built, read or trusted
    │   └── ChecksumMismatch      files differ from what the manifest recorded
    ├── ServingError         the serving pointer is missing or names an artifact it must refuse
    │   └── RollbackInProgress    another process holds the model's rollback lock (``pid``)
    ├── RollbackFailed       a check failed before the switch: nothing was switched
    ├── HookError            a plugin hook (``module:function``) cannot be imported or called
    └── GateSpecError        an operator's gate spec (``"agreement>=0.95,overlap>=0.6"``)
                             does not parse; the message shows a valid one

Example:
    >>> err = BrokerError("cannot reach a Kafka broker at k:9092",
    ...                   hint="start one, or check the bootstrap address",
    ...                   cli_hint="start one with `ledger broker`, or check --bootstrap")
    >>> str(err)
    'cannot reach a Kafka broker at k:9092 (start one, or check the bootstrap address)'
    >>> err.cli_hint
    'start one with `ledger broker`, or check --bootstrap'
"""

from __future__ import annotations

from typing import Any


def _restore(cls: type[LedgerError], args: tuple[Any, ...], state: dict[str, Any]) -> LedgerError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class LedgerError(Exception):
    """Root of every error lineage-ledger raises on purpose.

    Args:
        message: what is wrong, in the library's terms (no flags, no commands).
        hint: what to do next, in the library's terms.
        cli_hint: the same advice with the CLI's flag and command names; only the CLI
            renders it (in place of ``hint``).

    Example:
        >>> LedgerError("no shards in .ledger yet", hint="materialise the log first").hint
        'materialise the log first'
    """

    def __init__(
        self, message: str, *, hint: str | None = None, cli_hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.cli_hint = cli_hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (the index build's worker pool); the default
        # pickling calls cls(*args) and would lose the hints and keyword-only data.
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class UsageError(LedgerError):
    """A library call got arguments it cannot work with (e.g. no model named)."""


class ContractError(LedgerError):
    """An event violates the event contract.

    Args:
        message: what is wrong.
        field: the offending field, e.g. ``"vector"``.
        expected: what the contract asks for.
        got: what was given (shortened).
        event_id: the event, when it has one.
        hint, cli_hint: as for :class:`LedgerError`.

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
        hint: str | None = None,
        cli_hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, cli_hint=cli_hint)
        self.field = field
        self.expected = expected
        self.got = got
        self.event_id = event_id

    @property
    def reason(self) -> str:
        """One line for a dead-letter row: what is wrong plus the structured data."""
        parts = [self.message]
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
        """One line for a dead-letter row."""
        return self.message


class UnknownSchema(WireError):
    """A well-formed single-object frame whose schema fingerprint is not known."""

    def __init__(self, fingerprint: bytes) -> None:
        super().__init__(
            f"unknown schema fingerprint {fingerprint.hex()}: the writer used a schema this "
            "ledger does not have",
            hint="add the writer's schema to schemas/history/, or upgrade lineage-ledger",
        )
        self.fingerprint = fingerprint


class CorruptMessage(WireError):
    """A frame with a bad marker, too short, or with a body that does not decode."""


class BrokerError(LedgerError):
    """No Kafka-protocol broker could be reached or started, or it did not acknowledge
    events that were sent (the message says how many)."""


class StoreError(LedgerError):
    """DuckDB failed. ``transient`` is True when retrying may succeed (e.g. a lock)."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        hint: str | None = None,
        cli_hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, cli_hint=cli_hint)
        self.transient = transient


class ShardBusy(StoreError):
    """Another live materialiser process is the one writer of this shard (``shard``)."""

    def __init__(
        self, message: str, *, shard: str, hint: str | None = None, cli_hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint, cli_hint=cli_hint)
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

    def __init__(
        self,
        message: str,
        *,
        files: tuple[str, ...],
        hint: str | None = None,
        cli_hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, cli_hint=cli_hint)
        self.files = files


class ServingError(LedgerError):
    """The serving pointer is missing, or names an artifact that must not be served."""


class RollbackInProgress(ServingError):
    """Another process holds the rollback lock of the model; ``pid`` names it (None if unknown)."""

    def __init__(
        self,
        message: str,
        *,
        pid: int | None,
        hint: str | None = None,
        cli_hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, cli_hint=cli_hint)
        self.pid = pid


class RollbackFailed(LedgerError):
    """A check failed before the switch: nothing was switched."""


class HookError(LedgerError):
    """A plugin hook cannot be imported or called.

    Args:
        message: what is wrong.
        hook: the hook as given, ``"module:function"`` (e.g. the rollback's embedder).
        hint, cli_hint: as for :class:`LedgerError`.

    Example:
        >>> HookError("cannot import mymod:embed", hook="mymod:embed").hook
        'mymod:embed'
    """

    def __init__(
        self,
        message: str,
        *,
        hook: str | None = None,
        hint: str | None = None,
        cli_hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, cli_hint=cli_hint)
        self.hook = hook


class GateSpecError(LedgerError):
    """A gate spec given by an operator does not parse.

    Args:
        message: what is wrong, and what a valid spec looks like.
        spec: the whole spec as given.
        item: the offending comma-separated part (``None`` when the spec is empty).
        hint, cli_hint: as for :class:`LedgerError`.

    Example:
        >>> GateSpecError("bad gate", spec="agreement=>1", item="agreement=>1").item
        'agreement=>1'
    """

    def __init__(
        self,
        message: str,
        *,
        spec: str,
        item: str | None = None,
        hint: str | None = None,
        cli_hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, cli_hint=cli_hint)
        self.spec = spec
        self.item = item
