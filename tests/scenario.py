"""The seed's incident, played through the real producer, with its expected outcome
computed independently in plain Python (a model of DESIGN.md's rules, not the SQL).

v1 serves; v2 is deployed, re-embeds part of the corpus and makes decisions; some
content changes; some entities are deleted (one is revived); v2 is pulled by a naive
redeploy of v1; v2 keeps deciding in shadow afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ledger import Producer, content_hash

EMBEDDER = "text-embedder"
CLASSIFIER = "spam-filter"
LABELS = ("ham", "spam")


@dataclass
class Expected:
    """What a rollback to each version must produce."""

    # per entity: ordered list of ("write", version, sha, vector) / ("delete", version)
    history: dict[str, list[tuple]] = field(default_factory=dict)
    # per subject: ordered list of (version, label, served_by_version_at_that_time)
    decisions: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    serving: str = "v1"

    def live(self) -> set[str]:
        return {e for e, h in self.history.items() if h[-1][0] == "write"}

    def latest_write(self, entity: str, version: str | None = None) -> tuple | None:
        writes = [h for h in self.history[entity] if h[0] == "write" and version in (None, h[1])]
        return writes[-1] if writes else None

    def items(self, version: str) -> dict[str, np.ndarray]:
        out = {}
        for e in self.live():
            w = self.latest_write(e, version)
            if w is not None:
                out[e] = w[3]
        return out

    def gap(self, version: str) -> set[str]:
        return {e for e in self.live() if self.latest_write(e, version) is None}

    def stale(self, version: str) -> set[str]:
        return {
            e
            for e in self.live()
            if (w := self.latest_write(e, version)) is not None and self.latest_write(e)[2] != w[2]
        }

    def decision_table(self, version: str) -> dict[str, str]:
        out = {}
        for s, ds in self.decisions.items():
            mine = [d for d in ds if d[0] == version]
            if mine:
                out[s] = mine[-1][1]
        return out

    def redecide(self, version: str) -> set[str]:
        return {s for s, ds in self.decisions.items() if all(d[0] != version for d in ds)}

    def blast_radius(self, version: str, outgoing: str) -> set[str]:
        table = self.decision_table(version)
        return {
            s
            for s, ds in self.decisions.items()
            for v, label, serving in ds
            if v == outgoing and serving == outgoing and s in table and table[s] != label
        }


def play_incident(producer: Producer, *, n: int = 200, dim: int = 16, seed: int = 3) -> Expected:
    """Produce the incident on ``producer``'s topics; return what rollbacks must give."""
    rng = np.random.default_rng(seed)
    exp = Expected()

    def write(version: str, ids: list[str], texts: dict[str, str]) -> None:
        vecs = rng.standard_normal((len(ids), dim)).astype("<f4")
        shas = [content_hash(texts[e]) for e in ids]
        producer.write_embeddings(EMBEDDER, version, ids, vecs, content_sha256s=shas)
        for e, sha, v in zip(ids, shas, vecs, strict=True):
            exp.history.setdefault(e, []).append(("write", version, sha, v))

    def delete(version: str, e: str) -> None:
        producer.delete_entity(EMBEDDER, version, e)
        exp.history[e].append(("delete", version))

    def decide(version: str, subject: str, label: str, *, shadow: bool = False) -> None:
        producer.record_decision(
            CLASSIFIER,
            version,
            subject,
            label,
            score=0.75,
            input_sha256=content_hash(subject),
            shadow=shadow,
        )
        # a shadow decision was never acted on: it is nobody's serving decision
        exp.decisions.setdefault(subject, []).append(
            (version, label, "shadow" if shadow else exp.serving)
        )

    def deploy(version: str, previous: str | None, reason: str) -> None:
        producer.flush()  # decisions before the switch are decided under the old version
        for model in (EMBEDDER, CLASSIFIER):
            producer.record_deployment(
                model, to_version=version, from_version=previous, reason=reason, actor="oncall"
            )
        exp.serving = version

    for version in ("v1", "v2"):
        producer.register_model_version(
            EMBEDDER, version, kind="embedding", dimension=dim, metric="angular"
        )
        producer.register_model_version(CLASSIFIER, version, kind="classifier", labels=list(LABELS))
    deploy("v1", None, "initial")
    ids = [f"doc-{i:05d}" for i in range(n)]
    texts = {e: f"text of {e}" for e in ids}
    write("v1", ids, texts)
    for i, s in enumerate(ids):
        decide("v1", s, LABELS[i % 2])

    deploy("v2", "v1", "new model")
    reembed = ids[: int(n * 0.6)]
    write("v2", reembed, texts)
    changed = ids[int(n * 0.5) : int(n * 0.7)]  # content edited while v2 served: v2 embeds it
    texts.update({e: f"edited text of {e}" for e in changed})
    write("v2", changed, texts)
    new = [f"new-{i:04d}" for i in range(n // 10)]  # only v2 ever saw these: v1's gap
    texts.update({e: f"text of {e}" for e in new})
    write("v2", new, texts)
    for e in ids[::17]:
        delete("v2", e)
    write("v2", [ids[17]], texts)  # revived
    for i, s in enumerate(ids[: int(n * 0.6)]):
        decide("v2", s, LABELS[(i + (1 if i % 5 == 0 else 0)) % 2])  # every 5th disagrees with v1
    for s in new:
        decide("v2", s, "spam")  # only v2 decided: v1 must re-decide
    for s in ids[int(n * 0.6) : int(n * 0.65)]:
        decide("v2", s, "spam", shadow=True)  # a shadow run of v2's pipeline: never acted on

    deploy("v1", "v2", "quality drop: naive redeploy")
    for s in ids[:10]:
        decide("v2", s, "spam")  # shadow decisions after the pull are not blast radius
    producer.flush()
    return exp
