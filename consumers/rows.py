"""The Arrow tables of a transaction's rows: events decoded one by one, vectors as a float
list column over their bytes, dead letters, and the reason of a reused event id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ledger.errors import ContractError
from ledger.store import ARROW_SCHEMAS


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


def dead_letters_table(rej: list[Rejected]) -> pa.Table:
    now = datetime.now(UTC)
    return pa.Table.from_arrays(
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


def reused_id(
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


def records_table(name: str, rows: list[tuple[dict[str, Any], str, int, int]]) -> pa.Table:
    """The Arrow table of records decoded one by one (``(record, topic, partition, offset)``)."""
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
            vectors = pa.array([r[0]["vector"] for r in rows], pa.binary())
            arrays.append(vector_column(vectors, np.asarray([r[0]["dimension"] for r in rows])))
            continue
        else:
            values = [r[0][key] for r in rows]
        arrays.append(pa.array(values, fld.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def vector_column(vectors: pa.BinaryArray, dims: npt.NDArray[np.int64]) -> pa.Array:
    """Vectors (little-endian float32 bytes, each ``4 * dim`` long: validated) as a float
    list column over the same bytes; rows of different models may differ in length."""
    ends = np.frombuffer(vectors.buffers()[1], np.int32)[vectors.offset :][: len(vectors) + 1]
    data = np.frombuffer(vectors.buffers()[2] or b"", np.uint8)[ends[0] : ends[-1]]
    offsets = np.zeros(len(dims) + 1, dtype=np.int32)
    np.cumsum(np.asarray(dims, dtype=np.int32), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(data.view("<f4")))
