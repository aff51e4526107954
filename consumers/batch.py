"""Turn a poll's messages into Arrow tables: decode, validate, and sort out dead letters.

One :class:`BatchBuilder` per transaction. Rows are gathered column by column and
become one Arrow table per event table; vectors are joined into one float32 buffer
and wrapped as a list column without copying row by row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

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

#: Event type -> the table its rows go to.
TABLE_OF = {
    "ModelVersionRegistered": "model_versions",
    "EmbeddingWritten": "embeddings",
    "EntityDeleted": "deletions",
    "DecisionRecorded": "decisions",
    "DeploymentChanged": "deployments",
}


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
        self._seen: set[str] = set()
        self.rejected: list[Rejected] = []
        self.messages = 0
        self.duplicates = 0

    def add(self, topic: str, partition: int, offset: int, raw: bytes | None) -> Rejected | None:
        """Decode and check one message; returns the rejection when it is dead-lettered.

        Vectors with NaN/inf are found for the whole batch in :meth:`build`; their
        rejections appear in :attr:`rejected` then.
        """
        self.messages += 1
        data = raw if raw is not None else b""
        try:
            name, record = self._check(topic, data)
        except LedgerError as exc:
            reason = getattr(exc, "reason", str(exc))
            rejected = Rejected(topic, partition, offset, data, str(reason), type(exc).__name__)
            self.rejected.append(rejected)
            return rejected
        event_id = record["event_id"]
        if event_id in self._seen:
            self.duplicates += 1  # a producer retry inside this batch
            return None
        self._seen.add(event_id)
        if name == "EmbeddingWritten":
            record["_raw"] = data  # for a dead letter, should its vector fail in build()
        self._rows[TABLE_OF[name]].append((record, topic, partition, offset))
        return None

    def _check(self, topic: str, data: bytes) -> tuple[str, dict[str, Any]]:
        if not data:
            raise CorruptMessage("empty message (a tombstone or a null value)")
        name, record = decode(self._schemas, data)
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
                raw = record.pop("_raw", b"")
                self.rejected.append(
                    Rejected(topic, partition, offset, raw, exc.reason, type(exc).__name__)
                )
                continue
            kept.append((record, topic, partition, offset))  # pragma: no cover - finite after all
        self._rows["embeddings"] = kept

    def build(
        self,
        offsets: dict[tuple[str, int], int] | None = None,
        *,
        dead_letters: bool = True,
        redriven: list[tuple[str, int, int]] | None = None,
    ) -> Batch:
        """The transaction: one Arrow table per table with rows, and the next offsets."""
        self._check_vectors()
        tables: dict[str, pa.Table] = {}
        for name, rows in self._rows.items():
            if rows:
                tables[name] = _table(name, rows)
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
        return Batch(tables, dict(offsets or {}), tuple(redriven or ()))


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
