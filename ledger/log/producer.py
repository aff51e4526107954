"""The producer API that ML services call next to their own writes.

Every call validates first and sends only when the whole call is valid: bad input
raises a :class:`~ledger.errors.ContractError` and nothing reaches the log.
Messages are keyed by entity / subject id (per-entity order) and sent with
``acks=all``. Registrations are flushed before the call returns, so any event
that uses a version is in the log after the version's registration.

A broker that cannot be reached, or does not acknowledge, raises
:class:`~ledger.errors.BrokerError` within the producer's ``connect_timeout`` /
``flush_timeout``; nothing else escapes from the Kafka client.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import numpy as np

from ledger.contract.events import (
    DeploymentChanged,
    ModelVersionRegistered,
    Topics,
    new_event_id,
    new_event_ids,
    now_micros,
)
from ledger.contract.rules import (
    ModelVersion,
    Registry,
    check_flag,
    check_id,
    check_ids,
    check_label,
    check_registration,
    check_sequence,
    check_sha256,
    check_sha256s,
    check_text,
    check_vector,
    check_vectors,
)
from ledger.contract.schemas import SchemaStore, default_store
from ledger.contract.wire import RowTemplate, encode, encode_batch, row_template
from ledger.errors import ContractError, UsageError
from ledger.log.reading import read_to_end
from ledger.log.sending import Sender
from ledger.log.timeouts import BrokerTimeouts, current_timeouts, using_timeouts
from ledger.log.topics import check_single_partition

_F32 = np.dtype("<f4")


def content_hash(content: str | bytes) -> str:
    """sha256 hex of the content an embedding or decision was computed from (str as UTF-8).

    Example:
        >>> content_hash("hello")[:12]
        '2cf24dba5fb0'
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    return hashlib.sha256(data).hexdigest()


def load_registry(bootstrap: str, topics: Topics, *, store: SchemaStore | None = None) -> Registry:
    """Every model version registered in the log (reads the models topic to its end)."""
    registry = Registry()
    registry.add_registrations(
        (m.value for m in read_to_end(bootstrap, [topics.models])), store or default_store()
    )
    return registry


class Producer:
    """Emit ledger events to Kafka.

    Args:
        bootstrap: Kafka bootstrap servers, e.g. ``"kafka-1:9092"``.
        name: this service's name, recorded in every event's ``producer`` field.
        topics: the topic names (prefix) of the ledger.
        shadow: mark this producer's embeddings and decisions as shadow writes (a candidate
            version running beside the serving one); each call can override it.
        connect_timeout: seconds to wait for the broker to answer (at the start, and for
            topic metadata) before :class:`~ledger.errors.BrokerError`; default: the
            connect timeout in force (:mod:`ledger.log.timeouts`, 10 s unless set).
        flush_timeout: seconds :meth:`flush` waits without any acknowledgement before it
            raises :class:`~ledger.errors.BrokerError` naming how many events were not
            acknowledged; default: the flush timeout in force (30 s unless set).
        **kafka_config: producer options in kafka-python's names (e.g. ``linger_ms``), for
            the client in use (:mod:`ledger.log.clients`; librdkafka translates them).

    Example:
        >>> with Producer(bootstrap=bs, name="search-api") as p:  # doctest: +SKIP
        ...     p.register_model_version("text-embedder", "v1", kind="embedding",
        ...                              dimension=384, metric="angular")
        ...     p.write_embedding("text-embedder", "v1", "doc-1", vector,
        ...                       content_sha256=content_hash(text))
        >>> with Producer(bootstrap=bs, name="canary", shadow=True) as p:  # doctest: +SKIP
        ...     p.write_embedding("text-embedder", "v2", "doc-1", vector_v2,
        ...                       content_sha256=content_hash(text))
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        name: str = "ledger",
        topics: Topics | None = None,
        shadow: bool = False,
        connect_timeout: float | None = None,
        flush_timeout: float | None = None,
        **kafka_config: Any,
    ) -> None:
        if not isinstance(bootstrap, str) or not bootstrap.strip():
            raise UsageError(
                f"bootstrap must name the Kafka servers, got {bootstrap!r}",
                hint='pass bootstrap="host:port" (several: comma-separated)',
            )
        self.bootstrap = bootstrap
        self.shadow = check_flag("shadow", shadow)
        self.name = check_id("name", name)
        self.topics = topics or Topics()
        ambient = current_timeouts()
        self.timeouts = BrokerTimeouts(
            connect=ambient.connect if connect_timeout is None else connect_timeout,
            flush=ambient.flush if flush_timeout is None else flush_timeout,
        )
        self._store = default_store()
        self._schemas = {n: self._store.current[n] for n in self._store.current}
        self._registry: Registry | None = None
        self._embedding_targets: dict[
            tuple[str, str, bool], tuple[ModelVersion, RowTemplate | None]
        ] = {}
        self._sender = Sender(bootstrap, self.timeouts, **kafka_config)

    # -- registry -----------------------------------------------------------------

    def _known(self, model: str, version: str) -> Registry:
        check_id("model", model)
        check_id("version", version)
        if self._registry is None or (model, version) not in self._registry:
            if self._registry is None:
                partitions = self._sender.partitions_for(self.topics.models)
                check_single_partition(self.topics.models, partitions)
            # Another service may have registered it: the log is the registry. Read it
            # with this producer's connect timeout.
            with using_timeouts(self.timeouts):
                self._registry = load_registry(self.bootstrap, self.topics, store=self._store)
        return self._registry

    def _version(self, model: str, version: str, kind: str | None = None) -> ModelVersion:
        return self._known(model, version).get(model, version, kind=kind)

    # -- sending ------------------------------------------------------------------

    def _send(self, event_type: str, topic: str, key: str, record: dict[str, Any]) -> None:
        value = encode(self._schemas[event_type], record)
        self._sender.send_one(topic, key.encode("utf-8"), value)

    def _envelope(self, model: str, version: str) -> dict[str, Any]:
        return {
            "event_id": new_event_id(),
            "event_time": now_micros(),
            "producer": self.name,
            "model": model,
            "model_version": version,
        }

    # -- public API -----------------------------------------------------------------

    def register_model_version(
        self,
        model: str,
        version: str,
        *,
        kind: str,
        dimension: int | None = None,
        metric: str | None = None,
        labels: Sequence[str] = (),
        artifact_uri: str = "",
        artifact_sha256: str | None = None,
    ) -> ModelVersionRegistered:
        """Register a model version (idempotent for the same contract); flushed on return.

        Embedding models need ``dimension`` and ``metric`` (angular|euclidean|dot);
        classifiers need ``labels``. Re-registering with a different contract is refused:
        publish a new version instead.
        """
        check_id("model", model)
        check_id("version", version)
        check_registration(kind=kind, dimension=dimension, metric=metric, labels=labels)
        check_text("artifact_uri", artifact_uri)
        sha = check_sha256("artifact_sha256", artifact_sha256 or content_hash(artifact_uri))
        wanted = ModelVersion(
            model,
            version,
            kind,
            int(dimension) if kind == "embedding" and dimension is not None else None,
            metric if kind == "embedding" else None,
            tuple(labels) if kind == "classifier" else (),
        )
        registry = self._known(model, version)
        existing = registry.find(model, version)
        if existing is not None and existing != wanted:
            raise ContractError(
                f"{model} {version} is already registered with a different contract "
                f"({existing.kind}, dimension={existing.dimension})",
                field="model_version",
                expected=str(existing),
                got=str(wanted),
                hint="register a new version",
            )
        event = ModelVersionRegistered(
            **self._envelope(model, version),
            kind=wanted.kind,
            dimension=wanted.dimension,
            metric=wanted.metric,
            artifact_uri=artifact_uri,
            artifact_sha256=sha,
            labels=wanted.labels,
        )
        self._send("ModelVersionRegistered", self.topics.models, model, event.to_record())
        self.flush()
        registry.add(wanted)
        return event

    def write_embedding(
        self,
        model: str,
        version: str,
        entity_id: str,
        vector: Any,
        *,
        content_sha256: str,
        shadow: bool | None = None,
    ) -> str:
        """Record that ``entity_id``'s content was embedded by ``model`` ``version``.

        ``shadow`` (default: the producer's) marks a write by a version that does not serve.
        Returns the event id. For many vectors at once, :meth:`write_embeddings` is faster.
        """
        shadow = self.shadow if shadow is None else check_flag("shadow", shadow)
        target = self._embedding_targets.get((model, version, shadow))
        if target is None:
            mv = self._version(model, version, "embedding")
            # Versions never change their contract, so the lookup and template are kept.
            target = self._embedding_targets[(model, version, shadow)] = (
                mv,
                row_template(
                    self._schemas["EmbeddingWritten"],
                    {
                        "producer": self.name,
                        "model": model,
                        "model_version": version,
                        "dimension": mv.dimension,
                        "shadow": shadow,
                    },
                ),
            )
        mv, template = target
        if not (
            isinstance(vector, np.ndarray)
            and vector.dtype == _F32
            and vector.shape == (mv.dimension,)
            and vector.flags.c_contiguous
            # Finite iff the sum of squares is (3x cheaper than isfinite().all()); a finite
            # vector whose sum overflows takes the general path, which accepts it.
            and vector @ vector < math.inf
        ):
            vector = check_vector(mv, vector)  # the general path: converts or says what's wrong
        check_id("entity_id", entity_id)
        check_sha256("content_sha256", content_sha256)
        event_id = new_event_id()
        row = {
            "event_id": event_id,
            "event_time": now_micros(),
            "entity_id": entity_id,
            "content_sha256": content_sha256,
            "vector": vector.tobytes(),
        }
        if template is not None:  # only id, time, entity, hash and vector are encoded
            value = template.encode_one(row)
        else:  # the schema gained a non-primitive field: the general encoder
            record = {
                **self._envelope(model, version),
                **row,
                "dimension": mv.dimension,
                "shadow": shadow,
            }
            value = encode(self._schemas["EmbeddingWritten"], record)
        self._sender.send_one(self.topics.embeddings, entity_id.encode("utf-8"), value)
        return event_id

    def write_embeddings(
        self,
        model: str,
        version: str,
        entity_ids: Sequence[str],
        vectors: Any,
        *,
        content_sha256s: Sequence[str],
        shadow: bool | None = None,
    ) -> list[str]:
        """The batch fast path: ``vectors`` is an ``(n, d)`` array, one row per id.

        The whole batch is validated before anything is sent. ``shadow`` as in
        :meth:`write_embedding`. Returns the event ids.
        """
        entity_ids = check_sequence("entity_ids", entity_ids)
        content_sha256s = check_sequence("content_sha256s", content_sha256s)
        shadow = self.shadow if shadow is None else check_flag("shadow", shadow)
        if len(entity_ids) == 0 and len(content_sha256s) == 0 and np.size(vectors) == 0:
            return []  # an empty batch (e.g. the tail of a chunked loop) sends nothing
        mv = self._version(model, version, "embedding")
        matrix = check_vectors(mv, vectors)
        if not (len(entity_ids) == len(content_sha256s) == matrix.shape[0]):
            raise ContractError(
                f"{len(entity_ids)} ids, {len(content_sha256s)} hashes and {matrix.shape[0]} "
                "vectors",
                field="entity_ids",
                expected=str(matrix.shape[0]),
                got=str(len(entity_ids)),
                hint="give one id, one hash and one vector per entity",
            )
        check_ids("entity_id", entity_ids)
        check_sha256s("content_sha256", content_sha256s)
        # The hot path: the batch shares its envelope and time, so those fields are
        # encoded once (wire.encode_batch); rows add id, entity, hash and vector.
        n, dim = matrix.shape
        width = 4 * dim
        flat = matrix.tobytes()
        event_ids = new_event_ids(n)
        values = encode_batch(
            self._schemas["EmbeddingWritten"],
            {
                "event_time": now_micros(),
                "producer": self.name,
                "model": model,
                "model_version": version,
                "dimension": dim,
                "shadow": shadow,
            },
            {
                "event_id": event_ids,
                "entity_id": entity_ids,
                "content_sha256": content_sha256s,
                "vector": [flat[i : i + width] for i in range(0, n * width, width)],
            },
        )
        keys = [entity_id.encode("utf-8") for entity_id in entity_ids]
        self._sender.send_all(self.topics.embeddings, keys, values)
        return event_ids

    def delete_entity(self, model: str, version: str, entity_id: str) -> str:
        """Record that ``entity_id`` was deleted (it leaves every version's index)."""
        self._version(model, version, "embedding")
        check_id("entity_id", entity_id)
        record = self._envelope(model, version)
        record["entity_id"] = entity_id
        self._send("EntityDeleted", self.topics.embeddings, entity_id, record)
        return str(record["event_id"])

    def record_decision(
        self,
        model: str,
        version: str,
        subject_id: str,
        label: str,
        *,
        score: float,
        input_sha256: str,
        shadow: bool | None = None,
    ) -> str:
        """Record a classifier decision about ``subject_id``. Returns the event id.

        ``shadow`` (default: the producer's) marks a decision by a version that does not
        serve (it was not acted upon).
        """
        shadow = self.shadow if shadow is None else check_flag("shadow", shadow)
        mv = self._version(model, version, "classifier")
        check_id("subject_id", subject_id)
        label, score = check_label(mv, label, score)
        check_sha256("input_sha256", input_sha256)
        record = self._envelope(model, version)
        record.update(
            subject_id=subject_id,
            label=label,
            score=score,
            input_sha256=input_sha256,
            shadow=shadow,
        )
        self._send("DecisionRecorded", self.topics.decisions, subject_id, record)
        return str(record["event_id"])

    def record_deployment(
        self,
        model: str,
        *,
        to_version: str,
        from_version: str | None,
        reason: str,
        actor: str,
        summary: Mapping[str, str] | None = None,
    ) -> DeploymentChanged:
        """Record that ``model`` now serves ``to_version``; flushed on return."""
        self._version(model, to_version)
        if from_version is not None:
            self._version(model, from_version)
        check_id("reason", reason)
        check_id("actor", actor)
        summary = {
            check_text("summary", str(k)): check_text("summary", str(v))
            for k, v in (summary or {}).items()
        }
        event = DeploymentChanged(
            **self._envelope(model, to_version),
            from_version=from_version,
            reason=reason,
            actor=actor,
            summary=summary,
        )
        self._send("DeploymentChanged", self.topics.models, model, event.to_record())
        self.flush()
        return event

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every sent event is acknowledged; raise if any send failed.

        Waits as long as acknowledgements keep coming; raises :class:`BrokerError` naming
        how many events are not acknowledged once ``timeout`` seconds (default: the
        producer's ``flush_timeout``) pass without one.
        """
        self._sender.flush(timeout)

    def close(self) -> None:
        """Flush and release the connection (also when the flush fails)."""
        try:
            self._sender.flush()
        except BaseException:
            self._sender.close(graceful=False)  # the flush already waited its time
            raise
        self._sender.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
