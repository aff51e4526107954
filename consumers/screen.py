"""Batch-wide checks of decoded events from any producer: the envelope (event id, event
time), the ids and hashes, and the record key (which decides the partition).

Each check runs over a whole Arrow column at once; only the rows it flags are judged
again, one by one, by the contract's own rule (:mod:`ledger.contract.rules`), which
gives the dead letter its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ledger.contract.rules import (
    EVENT_TIME_MAX,
    EVENT_TIME_MIN,
    SHA256_PATTERN,
    UUID_PATTERN,
    Registry,
    check_event_id,
    check_event_time,
    check_id,
    check_record_key,
    check_sha256,
)
from ledger.contract.wire import Columns
from ledger.errors import ContractError

#: Tables of events keyed by an entity or subject id -> that id's column. Their events
#: are many; they are checked here a batch at a time.
KEYED_BY = {"embeddings": "entity_id", "deletions": "entity_id", "decisions": "subject_id"}
#: Tables with a content hash -> its column.
HASHED_BY = {"embeddings": "content_sha256", "decisions": "input_sha256"}

#: A record key that is not known (a re-drive reads dead letters, which keep no key):
#: the key check is passed over.
UNKNOWN_KEY = object()


def screen_envelope(record: dict[str, Any]) -> None:
    """One event's envelope (for the few events not checked a batch at a time)."""
    try:
        check_event_id(record["event_id"])
        check_event_time(record["event_time"])
    except ContractError as exc:
        exc.event_id = str(record["event_id"])
        raise


def _judge(name: str, record: dict[str, Any], key: Any) -> ContractError | None:
    """The first rule ``record`` breaks, by the contract's own checks (None: it passes);
    ``key`` is its record key, or UNKNOWN_KEY."""
    id_field = KEYED_BY[name]
    try:
        screen_envelope(record)
        check_id(id_field, record[id_field])
        if name in HASHED_BY:
            check_sha256(HASHED_BY[name], record[HASHED_BY[name]])
        if key is not UNKNOWN_KEY:
            check_record_key(id_field, key, record[id_field])
    except ContractError as exc:
        exc.event_id = str(record["event_id"])
        return exc
    return None


def screen(
    name: str,
    table: pa.Table,
    keys: list[Any] | None,
    record_of: Callable[[int], dict[str, Any]],
) -> tuple[pa.Table, list[tuple[int, Any]]]:
    """Check the rows of ``table``; returns the table without the rows that fail and, for
    those, ``(row, the error)``. ``keys`` are the rows' record keys (``None``: not known,
    a re-drive); ``record_of(row)`` decodes a flagged row for the rule's own check.

    Example:
        >>> kept, failed = screen("embeddings", table, keys, record_of)  # doctest: +SKIP
    """
    id_col = table.column(KEYED_BY[name])
    times = table.column("event_time").cast(pa.int64())
    ok = pc.and_(
        pc.match_substring_regex(table.column("event_id"), f"^{UUID_PATTERN}$"),
        pc.and_(
            pc.and_(pc.greater_equal(times, EVENT_TIME_MIN), pc.less(times, EVENT_TIME_MAX)),
            pc.not_equal(pc.utf8_trim_whitespace(id_col), ""),
        ),
    )
    if name in HASHED_BY:
        sha = pc.match_substring_regex(table.column(HASHED_BY[name]), f"^{SHA256_PATTERN}$")
        ok = pc.and_(ok, sha)
    if keys is not None:
        key_col = pa.array(keys, pa.binary())
        ok = pc.and_(ok, pc.fill_null(pc.equal(key_col, pc.cast(id_col, pa.binary())), False))
    ok = pc.fill_null(ok, False)
    if pc.all(ok).as_py():
        return table, []
    failed: list[tuple[int, Any]] = []
    keep = ok.to_numpy(zero_copy_only=False).copy()
    for i in (~keep).nonzero()[0]:
        exc = _judge(name, record_of(int(i)), UNKNOWN_KEY if keys is None else keys[i])
        if exc is None:
            keep[i] = True  # the column check was stricter than the rule: the rule decides
        else:
            failed.append((int(i), exc))
    return table.filter(pa.array(keep)), failed


def registry_ok(
    registry: Registry, cols: Columns, ok: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """Rows of a decoded batch that pass the registry's checks, a model version at a time:
    the version is registered for the event's kind, an embedding's dimension and vector
    length are the version's, a decision's label is one of its labels and its score finite.
    Rows that fail are judged again one by one (``check_embedding_record``, ...), which
    says why. ``ok`` masks the rows decoded at all."""
    n = len(ok)
    passed = np.zeros(n, np.bool_)
    c = cols.columns
    if not ok.any():
        return passed
    pairs = pc.binary_join_element_wise(c["model"], c["model_version"], "\x00")
    codes = pairs.dictionary_encode().indices.to_numpy(zero_copy_only=False)
    kind = _KIND_OF[cols.name]
    for code, first in zip(*np.unique(codes, return_index=True), strict=True):
        mv = registry.find(c["model"][first].as_py(), c["model_version"][first].as_py())
        if mv is None or mv.kind != kind:
            continue
        rows = codes == code
        if cols.name == "EmbeddingWritten":
            lengths = pc.binary_length(c["vector"]).to_numpy(zero_copy_only=False)
            rows &= (c["dimension"] == mv.dimension) & (lengths == 4 * c["dimension"])
        elif cols.name == "DecisionRecorded":
            labels = pc.is_in(c["label"], value_set=pa.array(mv.labels, pa.string()))
            rows &= labels.to_numpy(zero_copy_only=False) & np.isfinite(c["score"])
        passed |= rows
    return passed & ok


#: Event type -> the kind of model version its events name.
_KIND_OF = {
    "EmbeddingWritten": "embedding",
    "EntityDeleted": "embedding",
    "DecisionRecorded": "classifier",
}
