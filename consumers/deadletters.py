"""Dead letters: list, show, and re-drive the ones that now pass (exactly once).

A message is re-driven in its own shard, in one transaction that inserts its row and
marks the dead letter ``redriven_at``; a second re-drive finds nothing pending, and
a stored event id makes a repeated insert a no-op anyway (the shard skips it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers.batch import BatchBuilder
from ledger.contract.events import Topics
from ledger.contract.rules import Registry
from ledger.contract.schemas import default_store
from ledger.contract.wire import decode
from ledger.errors import LedgerError, MisroutedEvent, UsageError
from ledger.log.producer import load_registry
from ledger.store import Batch, DeadLetter, Shard, shard_paths


@dataclass(frozen=True, slots=True)
class RedriveReport:
    """Which dead letters were re-driven, and which still fail (with the reason now)."""

    redriven: tuple[str, ...]
    failing: tuple[tuple[str, str], ...]


def _shards(home: Path) -> list[Shard]:
    return [Shard(home, p.stem) for p in shard_paths(home)]


def list_dead_letters(home: Path, *, pending_only: bool = True) -> list[DeadLetter]:
    """Dead letters of every shard of ``home``, once each, in log order.

    Example:
        >>> [d.id for d in list_dead_letters(Path(".ledger"))]  # doctest: +SKIP
        ['ledger.embeddings:2:1017']
    """
    # Not the dead_letters view: it has no shard column (`ledger dlq list --json` shows the
    # shard), and it counts a message re-driven once any shard re-drove it, while a re-drive
    # works per shard, so here a copy still pending in its own shard is listed as pending.
    seen: dict[str, DeadLetter] = {}
    for shard in _shards(home):
        for dl in shard.dead_letters(pending_only=pending_only):
            # After a partition handover two shards may hold the same message: show it once.
            first = seen.get(dl.id)
            if first is None or (dl.redriven_at is not None and first.redriven_at is None):
                seen[dl.id] = dl
    return sorted(seen.values(), key=lambda d: (d.topic, d.partition, d.offset))


def show_dead_letter(home: Path, dead_letter_id: str) -> tuple[DeadLetter, dict[str, Any] | None]:
    """One dead letter by id (``topic:partition:offset``) and its decoded record, if it decodes."""
    for dl in list_dead_letters(home, pending_only=False):
        if dl.id == dead_letter_id:
            try:
                _, record = decode(default_store(), dl.raw)
            except LedgerError:
                return dl, None
            if isinstance(record.get("vector"), bytes):
                record["vector"] = f"<{len(record['vector'])} bytes>"
            return dl, record
    raise UsageError(
        f"no dead letter {dead_letter_id} in {home}",
        hint="list_dead_letters() lists them",
        cli_hint="see `ledger dlq list`",
    )


def redrive(
    home: Path,
    *,
    topics: Topics | None = None,
    bootstrap: str | None = None,
    ids: tuple[str, ...] = (),
) -> RedriveReport:
    """Re-check pending dead letters and materialise those that now pass, exactly once.

    The registry is every shard's ``model_versions``, plus the log's registrations when
    ``bootstrap`` is given. ``ids`` limits the re-drive to those dead letters.

    Example:
        >>> redrive(Path(".ledger"), bootstrap=bs).redriven  # doctest: +SKIP
        ('ledger.embeddings:2:1017',)
    """
    topics = topics or Topics()
    schemas = default_store()
    shards = _shards(home)
    logged = load_registry(bootstrap, topics, store=schemas) if bootstrap else Registry()
    # the log's registrations first, then the shards' (each in log order): first wins
    registry = Registry(
        [*logged.versions(), *(mv for shard in shards for mv in shard.model_versions())]
    )
    redriven: list[str] = []
    failing: list[tuple[str, str]] = []
    for shard in shards:
        pending = [d for d in shard.dead_letters() if not ids or d.id in ids]
        # A misrouted event stays on the wrong partition whatever a re-drive does (the
        # dead letter keeps no record key to check again): it must be sent again.
        failing.extend((d.id, d.reason) for d in pending if d.error == MisroutedEvent.__name__)
        pending = [d for d in pending if d.error != MisroutedEvent.__name__]
        if not pending:
            continue
        builder = BatchBuilder(schemas, registry, topics)
        for dl in pending:
            builder.add(dl.topic, dl.partition, dl.offset, dl.raw)
        batch = builder.build(dead_letters=False)  # judges the vectors too
        while True:
            still = {r.id: r.reason for r in builder.rejected}
            passed = [(d.topic, d.partition, d.offset) for d in pending if d.id not in still]
            if not passed:
                break
            _, conflicts = shard.write_checked(Batch(batch.tables, {}, tuple(passed)))
            if not conflicts:
                redriven.extend(f"{t}:{p}:{o}" for t, p, o in passed)
                break
            # Its event id is taken by another stored event: it stays a dead letter.
            builder.reject_conflicts(conflicts)
            batch = builder.build(dead_letters=False)
        failing.extend(still.items())
    return RedriveReport(tuple(redriven), tuple(failing))
