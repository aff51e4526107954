"""Deterministic toy text models for ``ledger demo``: a corpus, two embedders, a classifier.

- :func:`synthetic_corpus` makes short texts in topical clusters, each with a stable
  id and its cluster, so "correct neighbours" can be measured as the same-cluster rate.
- :class:`TextEmbedder` hashes character 3-grams (``zlib.crc32``: stable across runs
  and machines, unlike ``hash()``) into 4096 buckets and maps the count vector through a
  fixed random +-1 projection seeded by the version name, then L2-normalises. Within one
  version similar texts are neighbours; across versions the projections are unrelated,
  so a v1 vector searched among v2 vectors finds noise: the mixed-index incident.
- :class:`ToyClassifier` labels texts ``ham`` / ``spam`` by topic; ``v2`` disagrees with
  ``v1`` on a stable, known share of texts.

Everything is a pure function of its arguments: same inputs, same bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

TOPICS: dict[str, tuple[str, ...]] = {
    "finance": (
        "bank",
        "loan",
        "interest",
        "mortgage",
        "savings",
        "credit",
        "budget",
        "invoice",
        "payment",
        "account",
        "deposit",
        "tax",
    ),
    "sports": (
        "football",
        "match",
        "goal",
        "league",
        "coach",
        "stadium",
        "tennis",
        "season",
        "tournament",
        "player",
        "referee",
        "score",
    ),
    "cooking": (
        "recipe",
        "oven",
        "garlic",
        "pasta",
        "simmer",
        "butter",
        "flour",
        "onion",
        "roast",
        "sauce",
        "kitchen",
        "spices",
    ),
    "travel": (
        "flight",
        "airport",
        "hotel",
        "passport",
        "beach",
        "luggage",
        "museum",
        "train",
        "itinerary",
        "island",
        "tourist",
        "visa",
    ),
    "health": (
        "doctor",
        "clinic",
        "vaccine",
        "symptom",
        "fever",
        "nurse",
        "therapy",
        "diet",
        "sleep",
        "exercise",
        "pharmacy",
        "allergy",
    ),
    "tech": (
        "laptop",
        "software",
        "server",
        "python",
        "database",
        "network",
        "cloud",
        "keyboard",
        "compiler",
        "kernel",
        "router",
        "upgrade",
    ),
    "garden": (
        "tomato",
        "compost",
        "seedling",
        "shovel",
        "hedge",
        "tulip",
        "watering",
        "greenhouse",
        "soil",
        "orchard",
        "lawn",
        "pruning",
    ),
    "offers": (
        "winner",
        "prize",
        "free",
        "discount",
        "voucher",
        "bonus",
        "claim",
        "exclusive",
        "jackpot",
        "cashback",
        "coupon",
        "urgent",
    ),
}
# Shared by every topic: they make texts of different topics look alike a little.
FILLER = (
    "the",
    "a",
    "about",
    "today",
    "with",
    "new",
    "my",
    "our",
    "some",
    "more",
    "after",
    "before",
    "this",
    "week",
    "great",
    "quick",
)
SPAM_TOPICS = frozenset({"offers", "finance"})
LABELS = ("ham", "spam")

NGRAM = 3
BUCKETS = 4096
_CHUNK = 1024  # documents per dense count matrix


@dataclass(frozen=True, slots=True)
class Corpus:
    """Texts with stable ids and their cluster (an index into ``topics``)."""

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    clusters: tuple[int, ...]
    topics: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def same_cluster_rate(self, queries: npt.ArrayLike, neighbours: npt.ArrayLike) -> float:
        """Share of ``neighbours[i]`` (corpus rows) in the cluster of row ``queries[i]``.

        The demo's measure of search quality: near 1 for a sound index of one version,
        near ``1 / len(topics)`` when the vectors come from another version.

        Example:
            >>> synthetic_corpus(16).same_cluster_rate([0, 1], [[8, 0], [9, 2]])
            0.75
        """
        cluster = np.asarray(self.clusters, np.int64)
        rows = np.asarray(neighbours, np.int64)
        query = np.asarray(queries, np.int64).reshape(-1, 1)
        valid = rows >= 0
        same = (cluster[np.where(valid, rows, 0)] == cluster[query]) & valid
        return float(same.sum() / max(int(valid.sum()), 1))

    def to_table(self) -> pa.Table:
        """Columns ``entity_id``, ``text``, ``topic``."""
        return pa.table(
            {
                "entity_id": pa.array(self.ids, pa.string()),
                "text": pa.array(self.texts, pa.string()),
                "topic": pa.array([self.topics[c] for c in self.clusters], pa.string()),
            }
        )


def synthetic_corpus(n: int, *, seed: int = 0, words: int = 8) -> Corpus:
    """``n`` short texts, ``words`` words each, in clusters by topic.

    Text ``i`` has id ``doc-{i:06d}`` and topic ``i % len(TOPICS)``; its words are drawn
    (seeded) mostly from the topic's vocabulary, the rest from shared filler words. The
    first ``m`` texts of a corpus of ``n > m`` are the corpus of ``m``.

    Example:
        >>> c = synthetic_corpus(3)
        >>> c.ids, [c.topics[k] for k in c.clusters]
        (('doc-000000', 'doc-000001', 'doc-000002'), ['finance', 'sports', 'cooking'])
        >>> synthetic_corpus(3).texts == c.texts
        True
    """
    if n < 0 or words < 1:
        raise ValueError("need n >= 0 and words >= 1")
    topics = tuple(TOPICS)
    vocab = np.array([w for t in topics for w in TOPICS[t]] + list(FILLER), dtype=object)
    per_topic = len(TOPICS[topics[0]])
    clusters = np.arange(n) % len(topics)
    texts: list[str] = []
    # Drawn per chunk of rows from (seed, chunk): a longer corpus extends a shorter one.
    for start in range(0, n, _CHUNK):
        rows = min(_CHUNK, n - start)
        rng = np.random.default_rng([seed, start // _CHUNK])
        # Five words in eight from the topic: same-topic texts share about two topic words.
        topical = rng.random((_CHUNK, words))[:rows] < 0.625
        topic_word = rng.integers(0, per_topic, (_CHUNK, words))[:rows]
        topic_word += clusters[start : start + rows, None] * per_topic
        filler_word = len(topics) * per_topic + rng.integers(0, len(FILLER), (_CHUNK, words))
        chosen = vocab[np.where(topical, topic_word, filler_word[:rows])]
        texts.extend(" ".join(row) for row in chosen.tolist())
    return Corpus(
        ids=tuple(f"doc-{i:06d}" for i in range(n)),
        texts=tuple(texts),
        clusters=tuple(int(c) for c in clusters),
        topics=topics,
    )


class TextEmbedder:
    """Embed texts as L2-normalised ``dimension``-d float32 vectors; seeded by version.

    Args:
        version: model version name; it alone picks the projection (``crc32`` of it).
        dimension: output dimension.

    Example:
        >>> v1, v2 = TextEmbedder("v1"), TextEmbedder("v2")
        >>> a, b = v1.embed(["cheap flight deals", "cheap flights deal"])
        >>> bool(a @ b > 0.5), bool(abs(a @ v2.embed(["cheap flight deals"])[0]) < 0.5)
        (True, True)
    """

    def __init__(self, version: str, *, dimension: int = 64) -> None:
        self.version = version
        self.dimension = dimension
        rng = np.random.default_rng(zlib.crc32(f"textembed/{version}".encode()))
        # Random signs, not Gaussians: counts times +-1 sum to integers, exact in float32
        # in any order, so a text's vector is bit-identical whatever batch it comes in.
        signs = rng.integers(0, 2, (BUCKETS, dimension), dtype=np.int8) * 2 - 1
        self._projection = signs.astype(np.float32)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """``(len(texts), dimension)`` float32, unit rows (a text with no 3-gram: zeros).

        A text's vector does not depend on the rest of the batch (bit for bit).
        """
        docs, buckets = _ngram_buckets(texts)
        out = np.empty((len(texts), self.dimension), np.float32)
        bounds = np.searchsorted(docs, np.arange(0, len(texts) + _CHUNK, _CHUNK))
        for n, start in enumerate(range(0, len(texts), _CHUNK)):
            rows = min(_CHUNK, len(texts) - start)
            lo, hi = bounds[n], bounds[n + 1]
            # Counts of a chunk, dense (rows x BUCKETS, 16 MB at most), times the projection.
            flat = (docs[lo:hi] - start) * BUCKETS + buckets[lo:hi]
            counts = np.bincount(flat, minlength=rows * BUCKETS).astype(np.float32)
            out[start : start + rows] = counts.reshape(rows, BUCKETS) @ self._projection
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


class ToyClassifier:
    """Label texts ``ham`` / ``spam``: spam when most topic words are from a spam topic.

    The base rule labels by topic words. A version flips the base decision on a stable
    share ``flip`` of texts (chosen by ``crc32`` of version and text), as a retrained
    model disagrees on a minority of subjects. ``flip`` defaults to 0 for ``"v1"`` and
    0.07 for any other version, so v2 disagrees with v1 on about 7% of texts.

    Example:
        >>> texts = synthetic_corpus(2000).texts
        >>> a = ToyClassifier("v1").classify(texts)[0]
        >>> b = ToyClassifier("v2").classify(texts)[0]
        >>> 0.05 < sum(x != y for x, y in zip(a, b)) / len(texts) < 0.09
        True
    """

    def __init__(self, version: str, *, flip: float | None = None) -> None:
        flip = (0.0 if version == "v1" else 0.07) if flip is None else flip
        if not 0.0 <= flip <= 1.0:
            raise ValueError(f"flip is a share in [0, 1], got {flip}")
        self.version = version
        self.flip = flip
        self._spam_words = frozenset(w for t in SPAM_TOPICS for w in TOPICS[t])
        self._topic_words = frozenset(w for t in TOPICS for w in TOPICS[t])

    def classify(self, texts: Sequence[str]) -> tuple[tuple[str, ...], npt.NDArray[np.float64]]:
        """``(labels, scores)``: one label of :data:`LABELS` and a spam score per text."""
        spam_share = np.empty(len(texts), np.float64)
        flipped = np.zeros(len(texts), np.bool_)
        bar = int(self.flip * 2**32)
        for i, text in enumerate(texts):
            words = text.split()
            topical = sum(w in self._topic_words for w in words)
            spam_share[i] = sum(w in self._spam_words for w in words) / max(topical, 1)
            flipped[i] = zlib.crc32(f"{self.version}/{text}".encode()) < bar
        is_spam = (spam_share > 0.5) ^ flipped
        score = np.where(flipped, 1.0 - spam_share, spam_share)
        return tuple(LABELS[int(s)] for s in is_spam), score


def _ngram_buckets(texts: Sequence[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(document, bucket) of every character 3-gram of every padded, lower-cased text."""
    encoded = [f" {t.lower()} ".encode() for t in texts]
    lengths = np.fromiter((len(e) for e in encoded), np.int64, len(encoded))
    buf = np.frombuffer(b"".join(encoded), np.uint8).astype(np.int64)
    doc = np.repeat(np.arange(len(encoded), dtype=np.int64), lengths)
    if buf.size < NGRAM:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # A 3-gram of bytes is exactly a 24-bit code; keep those inside one document.
    code = (buf[:-2] << 16) | (buf[1:-1] << 8) | buf[2:]
    inside = doc[:-2] == doc[2:]
    code, doc = code[inside], doc[:-2][inside]
    # crc32 only the distinct 3-grams (a few thousand), so a batch stays vectorised.
    distinct, inverse = np.unique(code, return_inverse=True)
    bucket_of = np.fromiter(
        (zlib.crc32(int(c).to_bytes(3, "big")) % BUCKETS for c in distinct),
        np.int64,
        distinct.size,
    )
    return doc, bucket_of[inverse]
