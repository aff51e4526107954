"""The rules every event must follow, shared by the producer (refuse at the call) and
the materialiser (dead-letter what slipped through, e.g. from another producer).

Checks on vectors are vectorised: a batch is validated with a few numpy calls.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ledger.contract.events import ModelVersionRegistered
from ledger.contract.schemas import SchemaStore
from ledger.contract.wire import decode
from ledger.errors import ContractError, LedgerError, MisroutedEvent, UnknownModelVersion

KINDS = ("embedding", "classifier")
METRICS = ("angular", "euclidean", "dot")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: A dimension is an Avro ``int`` on the wire.
MAX_DIMENSION = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """What the ledger knows of a registered model version."""

    model: str
    version: str
    kind: str
    dimension: int | None
    metric: str | None
    labels: tuple[str, ...]

    @classmethod
    def from_event(cls, event: ModelVersionRegistered) -> ModelVersion:
        return cls(
            event.model,
            event.model_version,
            event.kind,
            event.dimension,
            event.metric,
            event.labels,
        )


class Registry:
    """Registered model versions, looked up by ``(model, version)``.

    Example:
        >>> r = Registry()
        >>> r.get("m", "v1")
        Traceback (most recent call last):
        ...
        ledger.errors.UnknownModelVersion: model m version v1 is not registered (...)
    """

    def __init__(self, versions: Iterable[ModelVersion] = ()) -> None:
        """``versions`` in log order; a later conflicting one is passed over (first wins),
        so stores written before conflicts were refused still load."""
        self._versions: dict[tuple[str, str], ModelVersion] = {}
        for mv in versions:
            self._versions.setdefault((mv.model, mv.version), mv)

    def add(self, mv: ModelVersion) -> None:
        """Register ``mv``; the same contract again is a no-op (retries, re-registrations).

        Raises:
            ContractError: the version is registered with a different contract. The first
                registration in log order is the version's contract; a later, different one
                is refused (the producer) or dead-lettered (the materialiser).
        """
        existing = self._versions.get((mv.model, mv.version))
        if existing is not None and existing != mv:
            raise ContractError(
                f"{mv.model} {mv.version} is already registered as {existing.kind} "
                f"(dimension={existing.dimension}, metric={existing.metric}, "
                f"labels={list(existing.labels)}); a version's contract never changes",
                field="model_version",
                expected=str(existing),
                got=str(mv),
                hint="register a new version",
            )
        self._versions[(mv.model, mv.version)] = mv

    def add_registrations(self, values: Iterable[bytes | None], store: SchemaStore) -> None:
        """Add the ``ModelVersionRegistered`` events among framed ``values`` (models topic
        messages, in log order). Anything else is passed over: undecodable messages and
        conflicting registrations are the materialiser's to dead-letter, and one bad message
        must not stop every producer (DESIGN decision 5)."""
        for value in values:
            try:
                name, record = decode(store, value or b"")
                if name == "ModelVersionRegistered":
                    self.add(ModelVersion.from_event(ModelVersionRegistered.from_record(record)))
            except LedgerError:
                continue

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._versions

    def versions(self) -> list[ModelVersion]:
        """Every registered version, in the order they were added."""
        return list(self._versions.values())

    def __len__(self) -> int:
        return len(self._versions)

    def find(self, model: str, version: str) -> ModelVersion | None:
        return self._versions.get((model, version))

    def get(self, model: str, version: str, *, kind: str | None = None) -> ModelVersion:
        """The registered version, or :class:`UnknownModelVersion` / a kind mismatch error."""
        mv = self._versions.get((model, version))
        if mv is None:
            raise UnknownModelVersion(
                f"model {model} version {version} is not registered",
                field="model_version",
                expected="a registered version",
                got=f"{model}/{version}",
                hint="call register_model_version() for it first",
            )
        if kind is not None and mv.kind != kind:
            raise ContractError(
                f"model {model} version {version} is a {mv.kind} model, not {kind}",
                field="kind",
                expected=kind,
                got=mv.kind,
                hint=f"name a version of a {kind} model",
            )
        return mv


def check_text(field: str, value: Any) -> str:
    """A string that encodes as UTF-8 (Avro strings and Kafka keys are UTF-8)."""
    if not isinstance(value, str):
        raise ContractError(
            f"{field} must be a string, got {type(value).__name__}",
            field=field,
            expected="str",
            got=repr(value)[:40],
            hint=f"pass {field} as a str",
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _not_utf8(field, value, exc) from exc
    return value


def _not_utf8(field: str, value: str, exc: UnicodeEncodeError) -> ContractError:
    return ContractError(
        f"{field} is not valid Unicode text: it holds a lone surrogate "
        f"{value[exc.start]!r} at position {exc.start}",
        field=field,
        expected="UTF-8 encodable str",
        got=repr(value)[:40],
        hint="such text comes from decoding with errors='surrogateescape': decode the bytes "
        "with errors='replace' instead, or use another id",
    )


def check_id(field: str, value: Any) -> str:
    """A non-empty string id that encodes as UTF-8."""
    if not isinstance(value, str) or not value.strip():
        raise ContractError(
            f"{field} must be a non-empty string",
            field=field,
            expected="non-empty str",
            got=repr(value)[:40],
            hint=f"pass {field} as a non-empty str",
        )
    return check_text(field, value)


def check_sequence(field: str, values: Any) -> list[Any]:
    """A list, tuple or 1-d array of values (one per row); a plain string, a generator, a
    set or None is refused rather than taken apart. Returns the values as a list."""
    if (
        isinstance(values, str | bytes | Mapping)
        or not hasattr(values, "__len__")
        or not hasattr(values, "__getitem__")
        or (isinstance(values, np.ndarray) and values.ndim != 1)
    ):
        raise ContractError(
            f"{field} must be a list (one value per row), got {type(values).__name__}",
            field=field,
            expected="list",
            got=repr(values)[:40],
            hint=f"pass a list or tuple, e.g. [{field[:-1]}]",
        )
    return list(values)


def check_sha256(field: str, value: Any) -> str:
    """A lowercase hex sha256 (use ``ledger.content_hash`` to make one)."""
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ContractError(
            f"{field} must be 64 lowercase hex characters",
            field=field,
            expected="sha256 hex",
            got=repr(value)[:40],
            hint="make it with hashlib.sha256(...).hexdigest(), or ledger.content_hash(content)",
        )
    return value


def check_ids(field: str, values: Sequence[Any]) -> None:
    """Every value a non-empty UTF-8 string id (one pass; names the first bad one)."""
    for value in values:
        if type(value) is not str or not value.strip():
            check_id(field, value)  # raises with the message and data
    try:
        "".join(values).encode("utf-8")  # one pass over the batch
    except UnicodeEncodeError:
        for value in values:
            check_id(field, value)


_SHA256_RUN = re.compile(r"(?:[0-9a-f]{64})*")


def check_sha256s(field: str, values: Sequence[Any]) -> None:
    """Every value a lowercase hex sha256: one regex over the batch, then the first bad one."""
    if all(type(v) is str and len(v) == 64 for v in values) and _SHA256_RUN.fullmatch(
        "".join(values)
    ):
        return
    for value in values:
        check_sha256(field, value)


def check_registration(
    *, kind: str, dimension: int | None, metric: str | None, labels: Sequence[str]
) -> None:
    """A registration must be complete for its kind."""
    if kind not in KINDS:
        raise ContractError(
            f"kind must be one of {KINDS}",
            field="kind",
            expected="|".join(KINDS),
            got=repr(kind)[:40],
            hint="pass kind='embedding' or kind='classifier'",
        )
    if kind == "embedding":
        if (
            not isinstance(dimension, numbers.Integral)
            or isinstance(dimension, bool | np.bool_)
            or not 0 < dimension <= MAX_DIMENSION
        ):
            raise ContractError(
                f"an embedding model needs a dimension from 1 to {MAX_DIMENSION}, "
                f"got {dimension!r}"[:120],
                field="dimension",
                expected=f"int in 1..{MAX_DIMENSION}",
                got=repr(dimension)[:40],
                hint="pass dimension=<the length of the model's vectors>",
            )
        if metric not in METRICS:
            raise ContractError(
                f"an embedding model needs a metric, one of {METRICS}",
                field="metric",
                expected="|".join(METRICS),
                got=repr(metric)[:40],
                hint="pass metric='angular', 'euclidean' or 'dot'",
            )
    else:
        if (
            isinstance(labels, str | bytes)
            or not isinstance(labels, Sequence)
            or not labels
            or any(not isinstance(x, str) or not x for x in labels)
        ):
            raise ContractError(
                "a classifier needs labels: a list of the non-empty labels it may emit",
                field="labels",
                expected="non-empty list of str",
                got=repr(labels)[:40],
                hint='pass labels=["ham", "spam"], not one string',
            )
        for label in labels:
            check_text("labels", label)
        if len(set(labels)) != len(labels):
            raise ContractError(
                "labels must be distinct",
                field="labels",
                got=repr(labels)[:40],
                hint="name each label once",
            )


def check_vectors(mv: ModelVersion, vectors: Any) -> npt.NDArray[np.float32]:
    """Validate a batch of vectors for ``mv``; returns a C-contiguous ``(n, d)`` float32 array.

    Refuses non-numeric input, a wrong dimension, and NaN/inf, naming the first bad row.
    """
    try:
        arr = np.asarray(vectors)
    except (ValueError, TypeError) as exc:  # ragged lists and the like
        raise ContractError(
            f"vectors must be numeric arrays of dimension {mv.dimension}: {exc}",
            field="vector",
            expected=f"float[{mv.dimension}]",
            got="ragged or non-array",
            hint=f"pass an (n, {mv.dimension}) float array, one row per vector",
        ) from exc
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise ContractError(
            f"vectors must be numeric (float32/float64), got dtype {arr.dtype}",
            field="vector",
            expected="float",
            got=str(arr.dtype),
            hint="pass the model's float output, e.g. np.asarray(v, dtype=np.float32)",
        )
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != mv.dimension:
        raise ContractError(
            f"{mv.model} {mv.version} takes {mv.dimension}-d vectors, got shape {tuple(arr.shape)}",
            field="dimension",
            expected=str(mv.dimension),
            got=str(arr.shape[-1] if arr.ndim else 0),
            hint="embed with the model version you name",
        )
    out = np.ascontiguousarray(arr, dtype="<f4")
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise ContractError(
            f"vector {row} has NaN or inf values",
            field="vector",
            expected="finite floats",
            got="nan/inf",
            hint="fix the embedding before writing it",
        )
    return out


def check_vector(mv: ModelVersion, vector: Any) -> npt.NDArray[np.float32]:
    """Validate one vector for ``mv``: 1-d, ``(d,)``; returns it as C-contiguous float32.

    A 2-d array is refused even when it holds one row: it is a batch (``write_embeddings``).
    """
    try:
        shape = np.shape(vector)
    except (ValueError, TypeError):  # ragged lists and the like: check_vectors says so
        shape = (-1,)
    if len(shape) != 1:
        raise ContractError(
            f"write_embedding takes one vector of shape ({mv.dimension},), got shape {shape}",
            field="vector",
            expected=f"float[{mv.dimension}]",
            got=f"shape {shape}",
            hint="pass one row, or write several with write_embeddings()",
        )
    row: npt.NDArray[np.float32] = check_vectors(mv, vector)[0]
    return row


def check_label(mv: ModelVersion, label: Any, score: Any) -> tuple[str, float]:
    """A decision's label must be one of the classifier's labels; the score a finite real
    number (a Python or numpy float or int, not a bool)."""
    if not isinstance(label, str) or label not in mv.labels:
        raise ContractError(
            f"label {label!r} is not a label of {mv.model} {mv.version} (labels: "
            f"{', '.join(mv.labels)})",
            field="label",
            expected="|".join(mv.labels),
            got=repr(label)[:40],
            hint="record one of the registered labels, or register a new version with it",
        )
    if (
        isinstance(score, bool | np.bool_)
        or not isinstance(score, numbers.Real)
        or not math.isfinite(score)
    ):
        raise ContractError(
            "score must be a finite number",
            field="score",
            expected="finite float",
            got=repr(score)[:40],
            hint="pass the classifier's score as a float",
        )
    return str(label), float(score)


def check_flag(field: str, value: Any) -> bool:
    """A real bool (``True``/``False``, or a numpy bool): ``"no"`` would be truthy."""
    if not isinstance(value, bool | np.bool_):
        raise ContractError(
            f"{field} must be True or False, got {value!r}"[:120],
            field=field,
            expected="bool",
            got=repr(value)[:40],
            hint=f"pass {field}=True or {field}=False",
        )
    return bool(value)


def check_embedding_record(registry: Registry, record: dict[str, Any]) -> None:
    """The materialiser's check of a decoded ``EmbeddingWritten`` record."""
    mv = registry.get(record["model"], record["model_version"], kind="embedding")
    dim, vec = record["dimension"], record["vector"]
    if dim != mv.dimension or len(vec) != 4 * dim:
        raise ContractError(
            f"vector has {len(vec) // 4} values (dimension field {dim}), "
            f"{mv.model} {mv.version} takes {mv.dimension}",
            field="dimension",
            expected=str(mv.dimension),
            got=str(len(vec) // 4),
            event_id=record["event_id"],
        )
    if not np.isfinite(np.frombuffer(vec, dtype="<f4")).all():
        raise ContractError(
            "vector has NaN or inf values",
            field="vector",
            expected="finite floats",
            got="nan/inf",
            event_id=record["event_id"],
        )


def check_decision_record(registry: Registry, record: dict[str, Any]) -> None:
    """The materialiser's check of a decoded ``DecisionRecorded`` record."""
    mv = registry.get(record["model"], record["model_version"], kind="classifier")
    try:
        check_label(mv, record["label"], record["score"])
    except ContractError as exc:
        exc.event_id = record["event_id"]
        raise


# -- envelope and routing checks of the materialiser (events from any producer) ------------

#: An event id is a UUID in its canonical text form, lowercase (``str(uuid.uuid4())``):
#: ids are compared as text, so one UUID must have one spelling.
UUID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID = re.compile(UUID_PATTERN)
SHA256_PATTERN = _SHA256.pattern

#: Event times, microseconds since the epoch (UTC), from 1970-01-01 up to the end of year
#: 9999: earlier times come from a clock that was never set, and later ones do not fit a
#: datetime (the lineage queries crashed on int64 max).
EVENT_TIME_MIN = 0
EVENT_TIME_MAX = 253_402_300_800_000_000  # 10000-01-01T00:00:00Z, excluded


def check_event_id(value: Any) -> str:
    """A lowercase canonical UUID string, as :func:`ledger.contract.events.new_event_id` makes."""
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise ContractError(
            "event_id must be a lowercase UUID (str(uuid.uuid4())); give each event its own",
            field="event_id",
            expected="uuid",
            got=repr(value)[:40],
        )
    return value


def check_event_time(value: Any) -> int:
    """Microseconds since the epoch, from 1970 to the end of year 9999 (UTC)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not EVENT_TIME_MIN <= value < EVENT_TIME_MAX
    ):
        raise ContractError(
            "event_time must be microseconds since 1970-01-01 UTC, before year 10000 "
            "(time.time_ns() // 1000); is the producer's clock set?",
            field="event_time",
            expected="1970..9999 in microseconds",
            got=repr(value)[:40],
        )
    return value


def check_record_key(field: str, key: bytes | None, value: str) -> None:
    """An event travels keyed by its entity / subject id, so that all events of one
    entity share a partition (the log's order per entity). Raises
    :class:`MisroutedEvent` when the record key is another."""
    if key != value.encode("utf-8"):
        raise MisroutedEvent(
            f"the record key is not the event's {field}, so it may sit on another "
            f"partition than the entity's other events; send it keyed by {field}",
            field="key",
            expected=f"{field} {value!r}"[:60],
            got=repr(key)[:40],
        )
