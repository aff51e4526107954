"""One fixed record of each event type (fixed event id and time), shared by the wire tests.

The golden files in ``tests/golden/`` are these records encoded with the current schemas;
``tests/golden/history/<Type>.<n>.bin`` are :data:`HISTORY` encoded with the schemas of
``schemas/history/`` (bytes written before a field was added: they must keep decoding).
"""

from __future__ import annotations

import struct
from typing import Any

_ENVELOPE = {
    "event_time": 1_767_225_600_123_456,  # 2026-01-01T00:00:00.123456Z
    "producer": "golden-test",
    "model": "text-embedder",
    "model_version": "v1",
}

SAMPLES: dict[str, dict[str, Any]] = {
    "ModelVersionRegistered": {
        "event_id": "00000000-0000-4000-8000-000000000001",
        **_ENVELOPE,
        "kind": "embedding",
        "dimension": 4,
        "metric": "angular",
        "artifact_uri": "s3://models/text-embedder/v1",
        "artifact_sha256": "a" * 64,
        "labels": [],
    },
    "EmbeddingWritten": {
        "event_id": "00000000-0000-4000-8000-000000000002",
        **_ENVELOPE,
        "entity_id": "doc-1",
        "content_sha256": "b" * 64,
        "dimension": 4,
        "vector": struct.pack("<4f", 0.5, -1.0, 2.0, 0.25),
        "shadow": True,
    },
    "EntityDeleted": {
        "event_id": "00000000-0000-4000-8000-000000000003",
        **_ENVELOPE,
        "entity_id": "doc-1",
    },
    "DecisionRecorded": {
        "event_id": "00000000-0000-4000-8000-000000000004",
        **_ENVELOPE,
        "model": "spam-filter",
        "subject_id": "user-7",
        "label": "spam",
        "score": 0.875,
        "input_sha256": "c" * 64,
        "shadow": True,
    },
    "DeploymentChanged": {
        "event_id": "00000000-0000-4000-8000-000000000005",
        **_ENVELOPE,
        "model_version": "v2",
        "from_version": "v1",
        "reason": "canary passed",
        "actor": "ops@example.com",
        "summary": {"items": "3"},
    },
}


#: Records as written with an earlier schema, ``"<Type>.<n>"`` -> (record, the fields the
#: current schema fills with their defaults when it reads them).
HISTORY: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "EmbeddingWritten.1": (
        {k: v for k, v in SAMPLES["EmbeddingWritten"].items() if k != "shadow"},
        {"shadow": False},
    ),
    "DecisionRecorded.1": (
        {k: v for k, v in SAMPLES["DecisionRecorded"].items() if k != "shadow"},
        {"shadow": False},
    ),
}
