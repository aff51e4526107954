"""The five event types as frozen records, and where each travels in Kafka.

Field names and order match ``schemas/<Type>.avsc``. Every event carries the
envelope: ``event_id`` (UUID string), ``event_time`` (UTC microseconds), ``producer``,
``model``, ``model_version``.
"""

from __future__ import annotations

import collections
import os
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt


def new_event_id() -> str:
    """A fresh event id: a UUID4 string, as ``str(uuid.uuid4())`` gives.

    Ids are drawn from a pool filled by :func:`new_event_ids` (one ``os.urandom`` call per
    1,024 ids: the syscall alone cost ~10 µs per id on the single-event producer path). The
    pool is emptied in a forked child, so two processes never share ids.

    Example:
        >>> import uuid
        >>> uuid.UUID(new_event_id()).version
        4
    """
    try:
        return _id_pool.popleft()  # deque.popleft is atomic: safe across threads
    except IndexError:
        _id_pool.extend(new_event_ids(_ID_POOL_SIZE))
        return _id_pool.popleft()


def new_event_ids(n: int) -> list[str]:
    """``n`` fresh event ids (UUID4 strings), a batch at a time.

    Same format and randomness (``os.urandom``) as ``str(uuid.uuid4())``, 4x cheaper per id.

    Example:
        >>> import uuid
        >>> [uuid.UUID(e).version for e in new_event_ids(2)]
        [4, 4]
    """
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.tobytes().hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


_ID_POOL_SIZE = 1024
_id_pool: collections.deque[str] = collections.deque()
os.register_at_fork(after_in_child=_id_pool.clear)


def now_micros() -> int:
    """The current UTC time in microseconds, as events carry it."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class _Envelope:
    event_id: str
    event_time: int
    producer: str
    model: str
    model_version: str

    #: which topic of :class:`Topics` the event goes to, and which field keys it
    topic: ClassVar[str]
    key_field: ClassVar[str]

    @property
    def time(self) -> datetime:
        """``event_time`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.event_time / 1e6, tz=UTC)

    @property
    def key(self) -> str:
        """The Kafka message key: per-entity (or per-model) order follows from it."""
        return str(getattr(self, self.key_field))

    def to_record(self) -> dict[str, Any]:
        """The Avro record (a dict in schema field order)."""
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Any:
        """Build the event from a decoded Avro record."""
        # Avro arrays decode as lists; records hold tuples so that they stay immutable.
        values: dict[str, Any] = {
            f.name: tuple(v) if isinstance(v := record[f.name], list) else v for f in fields(cls)
        }
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ModelVersionRegistered(_Envelope):
    kind: str  # "embedding" | "classifier"
    dimension: int | None
    metric: str | None  # "angular" | "euclidean" | "dot"
    artifact_uri: str
    artifact_sha256: str
    labels: tuple[str, ...]

    topic = "models"
    key_field = "model"


@dataclass(frozen=True, slots=True)
class EmbeddingWritten(_Envelope):
    entity_id: str
    content_sha256: str
    dimension: int
    vector: bytes  # little-endian float32
    shadow: bool = False  # written by a candidate version that does not serve

    topic = "embeddings"
    key_field = "entity_id"

    @property
    def array(self) -> npt.NDArray[np.float32]:
        """The vector as a read-only float32 array."""
        return np.frombuffer(self.vector, dtype="<f4")


@dataclass(frozen=True, slots=True)
class EntityDeleted(_Envelope):
    entity_id: str

    topic = "embeddings"
    key_field = "entity_id"


@dataclass(frozen=True, slots=True)
class DecisionRecorded(_Envelope):
    subject_id: str
    label: str
    score: float
    input_sha256: str
    shadow: bool = False  # made by a candidate version that does not serve

    topic = "decisions"
    key_field = "subject_id"


@dataclass(frozen=True, slots=True)
class DeploymentChanged(_Envelope):
    """``model_version`` is the version serving after the change."""

    from_version: str | None
    reason: str
    actor: str
    summary: dict[str, str]

    topic = "models"
    key_field = "model"

    def __hash__(self) -> int:  # summary is a dict; events are compared, not hashed, by value
        return hash(self.event_id)


Event = (
    ModelVersionRegistered | EmbeddingWritten | EntityDeleted | DecisionRecorded | DeploymentChanged
)

EVENT_CLASSES: dict[str, type[_Envelope]] = {
    cls.__name__: cls
    for cls in (
        ModelVersionRegistered,
        EmbeddingWritten,
        EntityDeleted,
        DecisionRecorded,
        DeploymentChanged,
    )
}


@dataclass(frozen=True, slots=True)
class Topics:
    """The ledger's topic names under one prefix.

    ``models`` (one partition: registrations and deployments in one total order),
    ``embeddings`` (writes and deletions keyed by entity id), ``decisions`` (keyed by
    subject id).

    Example:
        >>> Topics("acme").embeddings
        'acme.embeddings'
    """

    prefix: str = "ledger"

    @property
    def models(self) -> str:
        return f"{self.prefix}.models"

    @property
    def embeddings(self) -> str:
        return f"{self.prefix}.embeddings"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}.decisions"

    @property
    def all(self) -> tuple[str, str, str]:
        return (self.models, self.embeddings, self.decisions)

    def of(self, event_type: type[_Envelope]) -> str:
        """The topic an event type travels on."""
        return str(getattr(self, event_type.topic))
