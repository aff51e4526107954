"""Turn a poll's messages into Arrow tables: decode, validate, and sort out dead letters.

One :class:`BatchBuilder` per transaction. The many events (embeddings, deletions,
decisions) are decoded a writer schema at a time, straight into Arrow columns
(:func:`ledger.contract.wire.decode_batch`), and checked a column at a time
(:mod:`consumers.screen`); a message that path is not sure of, and every message a
check flags, is judged again one by one by the contract's own rules, which give the
dead letter its reason. Registrations and deployments, few, go one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consumers.identity import record_sha256
from consumers.rows import (
    Rejected,
    dead_letters_table,
    records_table,
    reused_id,
    vector_column,
)
from consumers.screen import KEYED_BY, UNKNOWN_KEY, registry_ok, screen, screen_envelope
from ledger.contract.events import EVENT_CLASSES, Topics
from ledger.contract.rules import (
    ModelVersion,
    Registry,
    check_decision_record,
    check_embedding_record,
    check_registration,
)
from ledger.contract.schemas import SchemaStore
from ledger.contract.wire import HEADER_SIZE, MARKER, Columns, decode, decode_batch
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

#: One message as added: (topic, partition, offset, value, record key).
_Message = tuple[str, int, int, bytes, Any]


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
        self._messages: list[_Message] = []
        # After decoding (the first build): per table, the accepted rows as an Arrow table
        # and, per row, the index of its message in ``_messages``.
        self._tables: dict[str, tuple[pa.Table, npt.NDArray[np.int64]]] | None = None
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
    ) -> None:
        """Take one message; it is decoded and checked with the others in :meth:`build`.

        ``key`` is the record's key (an entity's events must be keyed by its id); leave it
        out when it is not known (a re-drive): then the key check is passed over.
        """
        self.messages += 1
        self._messages.append((topic, partition, offset, raw if raw is not None else b"", key))

    def add_records(self, records: Iterable[Any]) -> None:
        """:meth:`add` for each of ``records`` (objects with ``.topic .partition .offset
        .key .value``, as a consumer returns them)."""
        before = len(self._messages)
        self._messages.extend(
            (r.topic, r.partition, r.offset, r.value if r.value is not None else b"", r.key)
            for r in records
        )
        self.messages += len(self._messages) - before

    def reject(
        self, topic: str, partition: int, offset: int, raw: bytes, exc: LedgerError
    ) -> Rejected:
        """Dead-letter a message with the reason ``exc`` gives."""
        reason = getattr(exc, "reason", str(exc))
        rejected = Rejected(topic, partition, offset, raw, str(reason), type(exc).__name__)
        self.rejected.append(rejected)
        return rejected

    def _reject(self, i: int, exc: LedgerError) -> None:
        topic, partition, offset, raw, _ = self._messages[i]
        self.reject(topic, partition, offset, raw, exc)

    def reject_conflicts(self, conflicts: list[IdConflict]) -> None:
        """Move rows whose event id the shard holds with other content to the dead letters
        (:meth:`ledger.store.Shard.write_checked` found them); then build again."""
        bad = {(c.table, c.source): c for c in conflicts}
        tables = self._tables if self._tables is not None else {}
        for name, (table, index) in list(tables.items()):
            keep = np.ones(len(index), np.bool_)
            for row, i in enumerate(index.tolist()):
                source = self._messages[i][:3]
                conflict = bad.get((name, source))
                if conflict is not None:
                    keep[row] = False
                    self._reject(i, reused_id(conflict.event_id, conflict.stored, source))
            if not keep.all():
                tables[name] = (table.filter(pa.array(keep)), index[keep])

    # -- decoding ---------------------------------------------------------------------

    def _decode(self) -> dict[str, tuple[pa.Table, npt.NDArray[np.int64]]]:
        """Decode and check every message once; the accepted rows per table."""
        one_by_one: list[int] = []
        by_header: dict[tuple[str, bytes], list[int]] = {}
        for i, message in enumerate(self._messages):
            by_header.setdefault((message[0], message[3][:HEADER_SIZE]), []).append(i)
        groups: dict[tuple[str, bytes], list[int]] = {}
        for (topic, header), index in by_header.items():
            fp = header[2:]
            writer = self._schemas.by_fingerprint.get(fp) if header[:2] == MARKER else None
            if writer is None or writer.name in _ONE_BY_ONE:
                one_by_one.extend(index)
            else:
                groups[(topic, fp)] = index
        one_by_one.sort()  # in log order
        bulk: list[tuple[Columns, npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
        records: dict[int, tuple[str, dict[str, Any]]] = {}
        # Registrations come first: an event may use a version registered in this batch.
        for i in one_by_one:
            self._one(i, records)
        for (topic, fp), index in groups.items():
            cols = decode_batch(self._schemas, fp, [self._messages[i][3] for i in index])
            ok = self._bulk_ok(topic, cols) if cols is not None else np.zeros(len(index), bool)
            if cols is not None:
                rows = np.flatnonzero(ok)
                bulk.append((cols, rows, np.asarray(index, np.int64)[rows]))
            for row in np.flatnonzero(~ok):
                self._one(index[row], records)  # judged one by one, for its reason
        return self._dedupe(bulk, records)

    def _one(self, i: int, records: dict[int, tuple[str, dict[str, Any]]]) -> None:
        topic, _, _, raw, _ = self._messages[i]
        try:
            records[i] = self._check(topic, raw)
        except LedgerError as exc:
            self._reject(i, exc)

    def _bulk_ok(self, topic: str, cols: Columns) -> npt.NDArray[np.bool_]:
        """Rows of ``cols`` that pass the contract's checks of a decoded event as a batch
        (the registry, the topic); the others are judged one by one."""
        role = self._roles.get(topic)
        if role is not None and role != EVENT_CLASSES[cols.name].topic:
            return np.zeros(len(cols.ok), np.bool_)  # misrouted: each says so
        ok = cols.ok.copy()
        passed = registry_ok(self._registry, cols, ok)
        if not passed[ok].all() and self._refresh is not None and not self._refreshed:
            # A registration is in the log before any event that uses it, but maybe on a
            # partition not read yet: bring the registry to the end of the models topic.
            self._refreshed = True
            self._refresh()
            passed = registry_ok(self._registry, cols, ok)
        return ok & passed

    def _dedupe(
        self,
        bulk: list[tuple[Columns, npt.NDArray[np.int64], npt.NDArray[np.int64]]],
        records: dict[int, tuple[str, dict[str, Any]]],
    ) -> dict[str, tuple[pa.Table, npt.NDArray[np.int64]]]:
        """An event id once per batch, in log order: a second copy with the same content
        (a producer retry) is dropped, one with other content is a dead letter."""
        taken = [cols.columns["event_id"].take(pa.array(rows)) for cols, rows, _ in bulk]
        one = pa.array([r["event_id"] for _, r in records.values()], pa.string())
        every = pa.chunked_array([*taken, one], pa.string())
        dropped: set[int] = set()
        if pc.count_distinct(every).as_py() == len(every):
            return self._assemble(bulk, records, dropped)  # no event id twice: the usual case
        ids = {i: str(r["event_id"]) for i, (_, r) in records.items()}
        for (_, _, index), found in zip(bulk, taken, strict=True):
            ids.update(zip(index.tolist(), found.to_pylist(), strict=True))
        seen: dict[str, int] = {}
        for i in sorted(ids):
            event_id = ids[i]
            first = seen.get(event_id)
            if first is None:
                seen[event_id] = i
                continue
            dropped.add(i)
            if self._messages[first][3] == self._messages[i][3] or self._content(
                first, records
            ) == self._content(i, records):
                self.duplicates += 1  # a producer retry inside this batch
            else:
                source = self._messages[i][:3]
                self._reject(i, reused_id(event_id, self._messages[first][:3], source))
        return self._assemble(bulk, records, dropped)

    def _content(self, i: int, records: dict[int, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        found = records.get(i)
        return found[1] if found is not None else self._record(i)

    def _assemble(
        self,
        bulk: list[tuple[Columns, npt.NDArray[np.int64], npt.NDArray[np.int64]]],
        records: dict[int, tuple[str, dict[str, Any]]],
        dropped: set[int],
    ) -> dict[str, tuple[pa.Table, npt.NDArray[np.int64]]]:
        parts: dict[str, list[tuple[pa.Table, npt.NDArray[np.int64]]]] = {}
        for cols, rows, index in bulk:
            keep = np.ones(len(index), np.bool_)
            if dropped:
                keep = np.fromiter((i not in dropped for i in index.tolist()), np.bool_, len(index))
            if keep.any():
                name = TABLE_OF[cols.name]
                parts.setdefault(name, []).append(
                    (self._columns_table(name, cols, rows[keep], index[keep]), index[keep])
                )
        one: dict[str, list[int]] = {}
        for i, (name, _) in sorted(records.items()):
            if i not in dropped:
                one.setdefault(TABLE_OF[name], []).append(i)
        for name, taken in one.items():
            decoded = [(records[i][1], *self._messages[i][:3]) for i in taken]
            parts.setdefault(name, []).append(
                (records_table(name, decoded), np.asarray(taken, np.int64))
            )
        out = {}
        for name, found in parts.items():
            if len(found) == 1:
                out[name] = found[0]
                continue
            index = np.concatenate([ix for _, ix in found])
            order = np.argsort(index, kind="stable")  # log order, as the messages came
            table = pa.concat_tables([t for t, _ in found]).take(pa.array(order))
            out[name] = (table, index[order])
        return out

    def _columns_table(
        self, name: str, cols: Columns, rows: npt.NDArray[np.int64], index: npt.NDArray[np.int64]
    ) -> pa.Table:
        """The Arrow table of ``rows`` of ``cols`` in the columns of table ``name``."""
        take = pa.array(rows)
        arrays: list[pa.Array] = []
        for fld in ARROW_SCHEMAS[name]:
            key = fld.name
            if key in ("topic", "partition", "offset"):
                at = ("topic", "partition", "offset").index(key)
                arrays.append(pa.array([self._messages[i][at] for i in index.tolist()], fld.type))
            elif key == "vector":
                vectors = cols.columns["vector"].take(take)
                arrays.append(vector_column(vectors, cols.columns["dimension"][rows]))
            else:
                value = cols.columns[key]
                if isinstance(value, pa.Array):
                    arrays.append(value.take(take))
                else:
                    arrays.append(pa.array(value[rows]).cast(fld.type))
        return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMAS[name])

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

    def _record(self, i: int) -> dict[str, Any]:
        """The decoded record of message ``i`` (one by one: for a row a check flagged)."""
        return decode(self._schemas, self._messages[i][3])[1]

    def _check_vectors(self, tables: dict[str, tuple[pa.Table, npt.NDArray[np.int64]]]) -> None:
        """NaN/inf in any vector of the batch, with one numpy pass; the rows that fail are
        judged again by ``check_embedding_record`` (for its exact reason) and rejected."""
        if "embeddings" not in tables:
            return
        table, index = tables["embeddings"]
        vectors = table.column("vector").combine_chunks()
        finite = np.isfinite(vectors.values.to_numpy())
        if finite.all():
            return
        starts = vectors.offsets.to_numpy()[:-1]
        row_ok = np.logical_and.reduceat(finite, starts) if len(finite) else np.ones(0, bool)
        for row in np.flatnonzero(~row_ok):
            try:
                check_embedding_record(self._registry, self._record(int(index[row])))
            except ContractError as exc:
                self._reject(int(index[row]), exc)
                continue
            row_ok[row] = True  # pragma: no cover - finite after all
        tables["embeddings"] = (table.filter(pa.array(row_ok)), index[row_ok])

    def _screen(self, tables: dict[str, tuple[pa.Table, npt.NDArray[np.int64]]]) -> None:
        """The batch-wide checks of :func:`consumers.screen.screen`; failures are rejected."""
        for name, (table, index) in tables.items():
            if name not in KEYED_BY:
                continue
            keys = [self._messages[i][4] for i in index.tolist()]
            known = bool(keys) and keys[0] is not UNKNOWN_KEY

            def record_of(row: int, ix: npt.NDArray[np.int64] = index) -> dict[str, Any]:
                return self._record(int(ix[row]))

            kept, failed = screen(name, table, keys if known else None, record_of)
            if failed:
                for row, exc in failed:
                    self._reject(int(index[row]), exc)
                gone = np.ones(len(index), np.bool_)
                gone[[row for row, _ in failed]] = False
                tables[name] = (kept, index[gone])

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
        if self._tables is None:
            tables = self._decode()
            self._check_vectors(tables)
            self._screen(tables)
            # Registrations first, as the shard writes them (see TABLE_OF).
            self._tables = {n: tables[n] for n in TABLE_OF.values() if n in tables}
        out = {name: t for name, (t, _) in self._tables.items() if t.num_rows}
        if dead_letters and self.rejected:
            out["dead_letters"] = dead_letters_table(self.rejected)
        return Batch(out, dict(offsets or {}), tuple(redriven or ()), dict(marks or {}))


def poll_batch(builder: BatchBuilder, messages: list[Any], topic_ids: Mapping[str, str]) -> Batch:
    """The transaction of one poll's ``messages`` (objects with ``.topic .partition
    .offset .key .value``, each partition's in offset order): their rows, each partition's
    next offset, and its log mark (the last record's offset and hash, the topic's id)."""
    builder.add_records(messages)
    last = {(msg.topic, msg.partition): msg for msg in messages}
    offsets = {key: msg.offset + 1 for key, msg in last.items()}
    marks = {
        key: LogMark(msg.offset, record_sha256(msg.value), topic_ids.get(key[0]))
        for key, msg in last.items()
    }
    return builder.build(offsets, marks=marks)
