"""Batch-wide checks of decoded events from any producer: the envelope (event id, event
time), the ids and hashes, and the record key (which decides the partition).

Each check runs over a whole Arrow column at once; only the rows it flags are judged
again, one by one, by the contract's own rule (:mod:`ledger.contract.rules`), which
gives the dead letter its reason.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ledger.contract.rules import (
    EVENT_TIME_MAX,
    EVENT_TIME_MIN,
    SHA256_PATTERN,
    UUID_PATTERN,
    check_event_id,
    check_event_time,
    check_id,
    check_record_key,
    check_sha256,
)
from ledger.errors import ContractError

#: Tables of events keyed by an entity or subject id -> that id's column. Their events
#: are many; they are checked here a batch at a time.
KEYED_BY = {"embeddings": "entity_id", "deletions": "entity_id", "decisions": "subject_id"}
#: Tables with a content hash -> its column.
HASHED_BY = {"embeddings": "content_sha256", "decisions": "input_sha256"}

#: A record key that is not known (a re-drive reads dead letters, which keep no key):
#: the key check is passed over.
UNKNOWN_KEY = object()

_NOT_CONTENT = frozenset({"_raw", "_key"})

#: One row of a batch: (decoded record, topic, partition, offset).
Row = tuple[dict[str, Any], str, int, int]


def content_of(record: dict[str, Any]) -> dict[str, Any]:
    """The decoded fields of an event, without what the builder keeps beside them."""
    return {k: v for k, v in record.items() if k not in _NOT_CONTENT}


def screen_envelope(record: dict[str, Any]) -> None:
    """One event's envelope (for the few events not checked a batch at a time)."""
    try:
        check_event_id(record["event_id"])
        check_event_time(record["event_time"])
    except ContractError as exc:
        exc.event_id = str(record["event_id"])
        raise


def _judge(name: str, record: dict[str, Any], known_key: bool) -> ContractError | None:
    """The first rule ``record`` breaks, by the contract's own checks (None: it passes)."""
    id_field = KEYED_BY[name]
    try:
        screen_envelope(record)
        check_id(id_field, record[id_field])
        if name in HASHED_BY:
            check_sha256(HASHED_BY[name], record[HASHED_BY[name]])
        if known_key:
            check_record_key(id_field, record["_key"], record[id_field])
    except ContractError as exc:
        exc.event_id = str(record["event_id"])
        return exc
    return None


def screen(name: str, table: pa.Table, rows: list[Row]) -> tuple[pa.Table, list[tuple[int, Any]]]:
    """Check the rows of ``table`` (built from ``rows``, in order); returns the table
    without the rows that fail and, for those, ``(index in rows, the error)``.

    Example:
        >>> kept, failed = screen("embeddings", table, rows)  # doctest: +SKIP
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
    known_key = rows[0][0]["_key"] is not UNKNOWN_KEY
    if known_key:
        keys = pa.array([r[0]["_key"] for r in rows], pa.binary())
        ok = pc.and_(ok, pc.fill_null(pc.equal(keys, pc.cast(id_col, pa.binary())), False))
    ok = pc.fill_null(ok, False)
    if pc.all(ok).as_py():
        return table, []
    failed: list[tuple[int, Any]] = []
    keep = ok.to_numpy(zero_copy_only=False).copy()
    for i in (~keep).nonzero()[0]:
        exc = _judge(name, rows[int(i)][0], known_key)
        if exc is None:
            keep[i] = True  # the column check was stricter than the rule: the rule decides
        else:
            failed.append((int(i), exc))
    return table.filter(pa.array(keep)), failed
