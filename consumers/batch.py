"""Turn a poll's messages into Arrow tables: decode, validate, and sort out dead letters.

One :class:`BatchBuilder` per transaction. Rows are gathered column by column and
become one Arrow table per event table; vectors are joined into one float32 buffer
and wrapped as a list column without copying row by row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from consumers.screen import KEYED_BY, UNKNOWN_KEY, content_of, screen, screen_envelope
from ledger.contract.events import EVENT_CLASSES, Topics
from ledger.contract.rules import (
    ModelVersion,
    Registry,
    check_decision_record,
    check_embedding_record,
    check_registration,
)
from ledger.contract.schemas import SchemaStore
from ledger.contract.wire import decode
from ledger.errors import ContractError, CorruptMessage, LedgerError, UnknownModelVersion
from ledger.store import ARROW_SCHEMAS, Batch
from ledger.store.positions import IdConflict, LogMark

#: Event type -> the table its rows go to.
TABLE_OF = {
    "ModelVersionRegistered": "model_versions",
    "EmbeddingWritten": "embeddings",
    "EntityDeleted": "deletions",
    "DecisionRecorded": "decisions",
    "DeploymentChanged": "deployments",
}

#: Events whose envelope is checked as each is added (the others: in build(), at once).
_ONE_BY_ONE = frozenset(name for name, table in TABLE_OF.items() if table not in KEYED_BY)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that goes to the dead letters, with why."""

    topic: str
    partition: int
    offset: int
    raw: bytes
    reason: str
    error: str

    @property
    def id(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


class BatchBuilder:
    """Collect the rows of one transaction.

    Args:
        schemas: the event contract (decoding).
        registry: registered model versions; registrations seen in the batch are added.
        topics: the ledger's topics (an event must travel on its type's topic).
        refresh: called once per batch on the first unknown model version; it brings the
            registry up to the end of the models topic. Then the event is checked again.

    Example:
        >>> b = BatchBuilder(default_store(), Registry(), Topics("t"))  # doctest: +SKIP
        >>> b.add("t.embeddings", 0, 17, raw)                           # doctest: +SKIP
        >>> batch = b.build({("t.embeddings", 0): 18})                  # doctest: +SKIP
    """

    def __init__(
        self,
        schemas: SchemaStore,
        registry: Registry,
        topics: Topics,
        *,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self._schemas = schemas
        self._registry = registry
        self._roles = {
            topics.models: "models",
            topics.embeddings: "embeddings",
            topics.decisions: "decisions",
        }
        self._refresh = refresh
        self._refreshed = False
        # Per table: the accepted records and where each came from; columns are cut at build().
        self._rows: dict[str, list[tuple[dict[str, Any], str, int, int]]] = {
            name: [] for name in TABLE_OF.values()
        }
        # event id -> (record, topic, partition, offset) of its first copy in this batch
        self._seen: dict[str, tuple[dict[str, Any], str, int, int]] = {}
        self.rejected: list[Rejected] = []
        self.messages = 0
        self.duplicates = 0

    def add(
        self,
        topic: str,
        partition: int,
        offset: int,
        raw: bytes | None,
        key: bytes | None | object = UNKNOWN_KEY,
    ) -> Rejected | None:
        """Decode and check one message; returns the rejection when it is dead-lettered.

        ``key`` is the record's key (an entity's events must be keyed by its id); leave it
        out when it is not known (a re-drive). Checks that run for the whole batch at
        once (NaN/inf vectors, envelope fields, record keys) add their rejections to
        :attr:`rejected` in :meth:`build`.
        """
        self.messages += 1
        data = raw if raw is not None else b""
        try:
            name, record = self._check(topic, data)
        except LedgerError as exc:
            return self.reject(topic, partition, offset, data, exc)
        event_id = record["event_id"]
        record["_raw"] = data  # for a dead letter, should a batch-wide check fail in build()
        record["_key"] = key
        first = self._seen.get(event_id)
        if first is not None:
            if first[0]["_raw"] == data or content_of(first[0]) == content_of(record):
                self.duplicates += 1  # a producer retry inside this batch
                return None
            return self.reject(
                topic,
                partition,
                offset,
                data,
                _reused_id(event_id, first[1:], (topic, partition, offset)),
            )
        row = (record, topic, partition, offset)
        self._seen[event_id] = row
        self._rows[TABLE_OF[name]].append(row)
        return None

    def reject(
        self, topic: str, partition: int, offset: int, raw: bytes, exc: LedgerError
    ) -> Rejected:
        """Dead-letter a message with the reason ``exc`` gives."""
        reason = getattr(exc, "reason", str(exc))
        rejected = Rejected(topic, partition, offset, raw, str(reason), type(exc).__name__)
        self.rejected.append(rejected)
        return rejected

    def reject_conflicts(self, conflicts: list[IdConflict]) -> None:
        """Move rows whose event id the shard holds with other content to the dead letters
        (:meth:`ledger.store.Shard.write_checked` found them); then build again."""
        bad = {(c.table, c.source): c for c in conflicts}
        for table, rows in self._rows.items():
            kept = []
            for row in rows:
                conflict = bad.get((table, row[1:]))
                if conflict is None:
                    kept.append(row)
                    continue
                self.reject(
                    *row[1:],
                    row[0]["_raw"],
                    _reused_id(conflict.event_id, conflict.stored, row[1:]),
                )
            self._rows[table] = kept

    def _check(self, topic: str, data: bytes) -> tuple[str, dict[str, Any]]:
        if not data:
            raise CorruptMessage("empty message (a tombstone or a null value)")
        name, record = decode(self._schemas, data)
        if name in _ONE_BY_ONE:
            # Registrations and deployments are few and change the registry at once:
            # judged here, one by one; the other events in build(), a batch at a time.
            screen_envelope(record)
        role = self._roles.get(topic)
        expected = EVENT_CLASSES[name].topic
        if role is not None and role != expected:
            raise ContractError(
                f"{name} travels on the {expected} topic, found on {topic}",
                field="topic",
                expected=expected,
                got=topic,
                event_id=record["event_id"],
            )
        try:
            self._validate(name, record)
        except UnknownModelVersion:
            if self._refresh is None or self._refreshed:
                raise
            # A registration is in the log before any event that uses it, but maybe on a
            # partition not read yet: bring the registry to the end of the models topic.
            self._refreshed = True
            self._refresh()
            self._validate(name, record)
        return name, record

    def _validate(self, name: str, record: dict[str, Any]) -> None:
        reg = self._registry
        if name == "EmbeddingWritten":
            mv = reg.find(record["model"], record["model_version"])
            dim = record["dimension"]
            if (
                mv is None
                or mv.kind != "embedding"
                or dim != mv.dimension
                or (len(record["vector"]) != 4 * dim)
            ):
                check_embedding_record(reg, record)  # raises the contract's own error
            # else: finite values are checked for the whole batch at once in build()
        elif name == "DecisionRecorded":
            check_decision_record(reg, record)
        elif name == "EntityDeleted":
            reg.get(record["model"], record["model_version"], kind="embedding")
        elif name == "DeploymentChanged":
            reg.get(record["model"], record["model_version"])
            if record["from_version"] is not None:
                reg.get(record["model"], record["from_version"])
        elif name == "ModelVersionRegistered":
            check_registration(
                kind=record["kind"],
                dimension=record["dimension"],
                metric=record["metric"],
                labels=record["labels"],
            )
            reg.add(
                ModelVersion(
                    record["model"],
                    record["model_version"],
                    record["kind"],
                    record["dimension"],
                    record["metric"],
                    tuple(record["labels"]),
                )
            )

    def _check_vectors(self) -> None:
        """NaN/inf in any vector of the batch, with one numpy pass; the rows that fail are
        judged again by ``check_embedding_record`` (for its exact reason) and rejected."""
        rows = self._rows["embeddings"]
        if not rows:
            return
        values = np.frombuffer(b"".join(r[0]["vector"] for r in rows), dtype="<f4")
        finite = np.isfinite(values)
        if finite.all():
            return
        dims = np.asarray([r[0]["dimension"] for r in rows], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(dims)[:-1]))
        row_ok = np.logical_and.reduceat(finite, starts)
        kept = []
        for ok, (record, topic, partition, offset) in zip(row_ok, rows, strict=True):
            if ok:
                kept.append((record, topic, partition, offset))
                continue
            try:
                check_embedding_record(self._registry, record)
            except ContractError as exc:
                self.reject(topic, partition, offset, record["_raw"], exc)
                continue
            kept.append((record, topic, partition, offset))  # pragma: no cover - finite after all
        self._rows["embeddings"] = kept

    def build(
        self,
        offsets: Mapping[tuple[str, int], int] | None = None,
        *,
        dead_letters: bool = True,
        redriven: list[tuple[str, int, int]] | None = None,
        marks: Mapping[tuple[str, int], LogMark] | None = None,
    ) -> Batch:
        """The transaction: one Arrow table per table with rows, the next offsets, and the
        log marks. It may be built again after :meth:`reject_conflicts`."""
        self._check_vectors()
        tables: dict[str, pa.Table] = {}
        for name, rows in self._rows.items():
            if not rows:
                continue
            table = _table(name, rows)
            if name in KEYED_BY:
                table, failed = screen(name, table, rows)
                if failed:
                    for i, exc in failed:
                        self.reject(*rows[i][1:], rows[i][0]["_raw"], exc)
                    gone = {i for i, _ in failed}
                    self._rows[name] = [r for i, r in enumerate(rows) if i not in gone]
            if table.num_rows:
                tables[name] = table
        if dead_letters and self.rejected:
            now = datetime.now(UTC)
            rej = self.rejected
            tables["dead_letters"] = pa.Table.from_arrays(
                [
                    pa.array([r.topic for r in rej], pa.string()),
                    pa.array([r.partition for r in rej], pa.int32()),
                    pa.array([r.offset for r in rej], pa.int64()),
                    pa.array([r.raw for r in rej], pa.binary()),
                    pa.array([r.reason for r in rej], pa.string()),
                    pa.array([r.error for r in rej], pa.string()),
                    pa.array([now] * len(rej), pa.timestamp("us", tz="UTC")),
                    pa.nulls(len(rej), pa.timestamp("us", tz="UTC")),
                ],
                schema=ARROW_SCHEMAS["dead_letters"],
            )
        return Batch(tables, dict(offsets or {}), tuple(redriven or ()), dict(marks or {}))


def _reused_id(
    event_id: str, stored: tuple[str, int, int], source: tuple[str, int, int]
) -> ContractError:
    # ``stored``: (topic, partition, offset) of the event that holds the id; ``source``
    # where this one, with other content, was read.
    first, second = (":".join(map(str, place)) for place in (stored, source))
    return ContractError(
        f"event id {event_id} at {second} is already the id of another event, with other "
        f"content, at {first}: each event needs its own event id",
        field="event_id",
        expected="an id no other event has",
        got=event_id,
        event_id=event_id,
    )


def _table(name: str, rows: list[tuple[dict[str, Any], str, int, int]]) -> pa.Table:
    schema = ARROW_SCHEMAS[name]
    arrays: list[pa.Array] = []
    for fld in schema:
        key = fld.name
        if key == "topic":
            values: list[Any] = [r[1] for r in rows]
        elif key == "partition":
            values = [r[2] for r in rows]
        elif key == "offset":
            values = [r[3] for r in rows]
        elif key == "summary":
            values = [list(r[0]["summary"].items()) for r in rows]
        elif key == "vector":
            arrays.append(
                _vector_column([r[0]["vector"] for r in rows], [r[0]["dimension"] for r in rows])
            )
            continue
        else:
            values = [r[0][key] for r in rows]
        arrays.append(pa.array(values, fld.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _vector_column(vectors: list[bytes], dims: list[int]) -> pa.Array:
    # One join + one frombuffer for the whole batch; the list offsets come from the
    # (already validated) dimensions, so rows of different models may differ in length.
    values = np.frombuffer(b"".join(vectors), dtype="<f4")
    offsets = np.zeros(len(dims) + 1, dtype=np.int32)
    np.cumsum(np.asarray(dims, dtype=np.int32), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float32()))
