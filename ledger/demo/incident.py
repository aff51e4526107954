"""``ledger demo``: the seed's incident, played on a throwaway broker, then rolled back.

The scenario (real pipeline: :class:`~ledger.log.producer.Producer` -> broker ->
:func:`~consumers.catchup.catch_up` into ``home``):

1. v1 of a text embedder and of a spam classifier serve: every text of a synthetic
   corpus is embedded and decided by v1.
2. v2 is deployed: it re-embeds part of the corpus, embeds edited and new texts,
   decides; a few entities are deleted.
3. Quality drops, and v1 is naively redeployed (a ``DeploymentChanged`` back to v1). The
   "vector DB" still holds each live entity's latest vector of *any* version: the mixed
   index. v1 queries against it find wrong neighbours (measured as the same-topic rate).
4. :func:`ledger.ops.rollback.rollback` to v1: plan, embed the gap and stale texts with v1,
   re-decide with v1, rebuild, verify, switch.
5. The same queries against the serving index are right again.

Its claims are recorded in ``<home>/demo.duckdb``, table ``demo_runs`` (one row per run,
see :data:`RUN_COLUMNS`), so they can be checked from the file, not the printed text.
The home stays explorable offline (``ledger sql``): the views need the shards, not the
broker.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pyarrow as pa

from consumers.catchup import catch_up
from consumers.lag import true_ends
from ledger.artifacts.index_build import build_index
from ledger.artifacts.index_reader import IndexReader, open_artifact
from ledger.checks.exact import exact_topk, recall_at_k
from ledger.contract.events import Topics
from ledger.demo.textembed import Corpus, TextEmbedder, ToyClassifier, synthetic_corpus
from ledger.errors import UsageError
from ledger.log.producer import Producer, content_hash
from ledger.log.topics import init_topics
from ledger.ops.kinds import DecisionPlan, EmbeddingPlan, Hooks
from ledger.ops.rollback import RollbackOptions, rollback
from ledger.serving.open import open_index
from ledger.store import Connection, append_rows, arrow, open_views, shard_paths, vector_matrix
from ledger.store.queries import log_offsets

EMBEDDER = "text-embedder"
CLASSIFIER = "spam-filter"
DIMENSION = 64
DEMO_DB = "demo.duckdb"
RUNS_TABLE = "demo_runs"
K = 10
#: Share of the corpus v2 re-embeds before the incident; queries sampled for the figures.
REEMBED = 0.8
SAMPLE = 300
#: The example query the narration follows through the incident.
EXAMPLE_QUERY = "cheap flight to the island with a beach hotel"
# What the demo owns in its home; a home holding anything else is not the demo's.
# The marker is written first, so a demo that crashed half-way is still known as one.
_MARKER = ".demo"
_DEMO_STATE = ("shards", "artifacts", "serving", "reports", "locks", "rates.json", DEMO_DB, _MARKER)

# The "vector DB" before the rollback: every live entity's latest vector, of any version.
_MIXED_SQL = """
    SELECT e.entity_id, e.model_version, e.vector
    FROM embeddings e
    JOIN live_entities($model) l
      ON e.entity_id = l.entity_id AND e."partition" = l."partition" AND e."offset" = l."offset"
    WHERE e.model = $model
    ORDER BY e.entity_id
"""


@dataclass(frozen=True, slots=True)
class Neighbour:
    """One search result of the example query."""

    entity_id: str
    topic: str
    text: str


@dataclass(frozen=True, slots=True)
class DemoRun:
    """The demo's figures; one row of ``demo_runs``.

    ``mixed_before``: items of the naive "vector DB" that are not v1 vectors;
    ``mixed_after``: items of the serving index after the rollback that are not the
    entity's latest v1 vector (from the purity check); ``recall_*``: the share of the
    right top-10 (exact search over v1 vectors of the current texts) that search finds
    for sample queries; ``same_topic_*``: the share of found neighbours on the query's
    topic; ``example_right_*``: right neighbours of :data:`EXAMPLE_QUERY` found.
    """

    run_id: str
    started_at: datetime
    texts: int
    events: int
    live: int
    mixed_before: int
    mixed_after: int
    gap: int
    stale: int
    redecide: int
    blast_radius: int
    recall_v2_serving: float
    recall_naive_redeploy: float
    recall_after: float
    same_topic_naive_redeploy: float
    same_topic_after: float
    example_right_before: int
    example_right_after: int
    verify_passed: bool
    checks: int
    switched: bool
    serving_version: str
    artifact: str
    seconds: float


RUN_COLUMNS = tuple(DemoRun.__slots__)


def _ensure_demo_home(home: Path) -> None:
    """Clear a previous demo's state; refuse a home that holds anything else's."""
    if home.exists() and ((home / DEMO_DB).exists() or (home / _MARKER).exists()):
        for name in _DEMO_STATE:
            path = home / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    elif shard_paths(home):
        raise UsageError(
            f"{home} holds a ledger state that is not a demo's",
            hint="give the demo another home folder",
            cli_hint="pass another --home",
        )
    home.mkdir(parents=True, exist_ok=True)
    (home / _MARKER).write_text("a ledger demo's home: `ledger demo` replaces it\n")


def _ensure_empty_topics(bootstrap: str, topics: Topics) -> None:
    init_topics(bootstrap, topics)
    if any(true_ends(bootstrap, topics.all).values()):
        raise UsageError(
            f"the topics {topics.prefix}.* already hold events",
            hint="give the demo a fresh topic prefix",
            cli_hint="pass a fresh --topic-prefix",
        )


class _Texts:
    """The corpus as the services see it: current text of each entity, its topic."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.current = dict(zip(corpus.ids, corpus.texts, strict=True))
        self.row = {e: i for i, e in enumerate(corpus.ids)}

    def topic(self, entity: str) -> str:
        return self.corpus.topics[self.corpus.clusters[self.row[entity]]]

    def embed(self, version: str, ids: Sequence[str]) -> tuple[Any, list[str]]:
        texts = [self.current[e] for e in ids]
        return TextEmbedder(version, dimension=DIMENSION).embed(texts), [
            content_hash(t) for t in texts
        ]

    def classify(self, version: str, ids: Sequence[str]) -> list[tuple[str, float, str]]:
        texts = [self.current[e] for e in ids]
        labels, scores = ToyClassifier(version).classify(texts)
        return [
            (label, float(s), content_hash(t))
            for label, s, t in zip(labels, scores, texts, strict=True)
        ]


def _decide(producer: Producer, texts: _Texts, version: str, ids: Sequence[str]) -> None:
    for subject, (label, score, sha) in zip(ids, texts.classify(version, ids), strict=True):
        producer.record_decision(CLASSIFIER, version, subject, label, score=score, input_sha256=sha)


def _deploy(producer: Producer, to: str, previous: str | None, reason: str) -> None:
    producer.flush()  # what came before the switch was decided under the old version
    for model in (EMBEDDER, CLASSIFIER):
        producer.record_deployment(
            model, to_version=to, from_version=previous, reason=reason, actor="demo"
        )
    producer.flush()


def play(bootstrap: str, topics: Topics, *, texts: int = 3000) -> int:
    """Only the incident (steps 1-3, up to the naive redeploy of v1) on ``topics``; the
    number of events. For trying ``ledger rollback --dry-run`` on the incident.

    Example:
        >>> play(bs, Topics("incident"))  # doctest: +SKIP
        11470
    """
    return _play(bootstrap, topics, _Texts(synthetic_corpus(texts + texts // 20)), texts)


def _play(bootstrap: str, topics: Topics, texts: _Texts, n: int) -> int:
    """Steps 1-3 of the module docstring, through the producer; the number of events."""
    ids = list(texts.corpus.ids[:n])
    new = list(texts.corpus.ids[n:])
    with Producer(bootstrap=bootstrap, name="search-api", topics=topics) as producer:
        for version in ("v1", "v2"):
            producer.register_model_version(
                EMBEDDER, version, kind="embedding", dimension=DIMENSION, metric="angular"
            )
            producer.register_model_version(
                CLASSIFIER, version, kind="classifier", labels=["ham", "spam"]
            )
        _deploy(producer, "v1", None, "initial deployment")
        vectors, hashes = texts.embed("v1", ids)
        producer.write_embeddings(EMBEDDER, "v1", ids, vectors, content_sha256s=hashes)
        _decide(producer, texts, "v1", ids)

        _deploy(producer, "v2", "v1", "new model: better on long texts")
        reembedded = ids[: int(n * REEMBED)]
        edited = ids[int(n * 0.7) : int(n * 0.85)]  # content edited while v2 served
        for e in edited:
            texts.current[e] += " update"
        touched = list(dict.fromkeys(reembedded + edited)) + new
        vectors, hashes = texts.embed("v2", touched)
        producer.write_embeddings(EMBEDDER, "v2", touched, vectors, content_sha256s=hashes)
        deleted = ids[::50]
        for e in deleted:
            producer.delete_entity(EMBEDDER, "v2", e)
        _decide(producer, texts, "v2", touched)

        _deploy(producer, "v1", "v2", "quality drop: naive redeploy of v1")
        producer.flush()
    return 4 + 6 + n * 2 + len(touched) * 2 + len(deleted)


@dataclass(frozen=True, slots=True)
class Quality:
    """Search quality of an index for sample queries: same-topic rate and recall@K
    against the right answer (exact search over v1 vectors of the current texts)."""

    same_topic: float
    recall: float


class _Truth:
    """The right answer: exact top-K among v1 embeddings of every live entity's text."""

    def __init__(self, texts: _Texts, live: Sequence[str], queries: Sequence[str]) -> None:
        self.texts, self.queries = texts, list(queries)
        self.rows = [texts.row[q] for q in queries]
        corpus, _ = texts.embed("v1", live)
        vectors, _ = texts.embed("v1", queries)
        position = {e: i for i, e in enumerate(live)}
        found, _ = exact_topk(corpus, vectors, K, exclude=[position[q] for q in queries])
        self.exact = [[texts.row[live[j]] for j in r] for r in found]

    def quality(self, index: IndexReader, version: str) -> Quality:
        """Queries embedded by ``version`` (what serves) against ``index``."""
        vectors, _ = self.texts.embed(version, self.queries)
        rows = []
        for q, hits in zip(self.queries, index.query_many(vectors, K + 1), strict=True):
            ids = [e for e, _ in hits if e != q][:K]
            rows.append([self.texts.row[e] for e in ids] + [-1] * (K - len(ids)))
        return Quality(
            self.texts.corpus.same_cluster_rate(self.rows, rows), recall_at_k(rows, self.exact)
        )


def _example(index: IndexReader, texts: _Texts) -> list[Neighbour]:
    (vector,) = TextEmbedder("v1", dimension=DIMENSION).embed([EXAMPLE_QUERY])
    return [Neighbour(e, texts.topic(e), texts.current[e]) for e, _ in index.query(vector, K)]


def _right_example(texts: _Texts, live: Sequence[str]) -> set[str]:
    corpus, _ = texts.embed("v1", live)
    vector = TextEmbedder("v1", dimension=DIMENSION).embed([EXAMPLE_QUERY])
    found, _ = exact_topk(corpus, vector, K)
    return {live[j] for j in found[0]}


def _mixed_index(con: Connection, folder: Path, offsets: dict[str, int]) -> tuple[IndexReader, int]:
    """The naive "vector DB" as an Annoy index, and how many of its items are not v1."""
    table = arrow(con, _MIXED_SQL, model=EMBEDDER)
    versions = table.column("model_version").to_pylist()
    manifest = build_index(
        folder,
        model=EMBEDDER,
        version="mixed",
        entity_ids=table.column("entity_id").to_pylist(),
        vectors=vector_matrix(table, DIMENSION),
        metric="angular",
        log_offsets=offsets,
        shards=1,
    )
    index = open_artifact(folder / str(manifest.relative_path))
    return index, sum(v != "v1" for v in versions)


def run_demo(
    bootstrap: str,
    topics: Topics,
    home: Path,
    *,
    texts: int = 3000,
    echo: Callable[[str], None] | None = print,
) -> DemoRun:
    """Play the incident and the rollback; record and return the figures.

    Args:
        bootstrap: a reachable broker (the CLI starts a throwaway embedded one).
        topics: the demo's topics; they must hold no events yet.
        home: the state folder; a previous demo's state in it is replaced, any other
            ledger state is refused (checked before anything is changed).
        texts: corpus size (5% more texts appear only under v2).
        echo: where the narration goes (``None``: silent).

    Example:
        >>> run = run_demo(bs, Topics("demo"), Path(".ledger"), echo=None)  # doctest: +SKIP
        >>> run.mixed_before > 0 and run.mixed_after == 0 and run.verify_passed  # doctest: +SKIP
        True
    """
    say = echo or (lambda _line: None)
    started, clock = datetime.now(UTC), time.perf_counter()
    _ensure_empty_topics(bootstrap, topics)
    _ensure_demo_home(home)
    corpus = synthetic_corpus(texts + texts // 20)
    state = _Texts(corpus)
    models = [EMBEDDER, CLASSIFIER]

    say(f"1. v1 serves: {texts} texts embedded by {EMBEDDER} v1, decided by {CLASSIFIER} v1.")
    events = _play(bootstrap, topics, state, texts)
    say(
        f"2. v2 deployed: re-embeds {int(texts * REEMBED)} texts, embeds edited and "
        f"{len(corpus) - texts} new ones, decides; {len(range(0, texts, 50))} deleted."
    )
    catch_up(bootstrap, topics, home)
    tmp = Path(tempfile.mkdtemp(prefix="ledger-demo-"))
    try:
        with open_views(home) as con:
            mixed, mixed_before = _mixed_index(con, tmp, dict(log_offsets(con)))
            live = (
                arrow(con, "SELECT entity_id FROM live_entities($m) ORDER BY entity_id", m=EMBEDDER)
                .column("entity_id")
                .to_pylist()
            )
        truth = _Truth(state, live, live[:: max(1, len(live) // SAMPLE)])
        right = _right_example(state, live)
        with mixed:
            v2_serving = truth.quality(mixed, "v2")
            naive = truth.quality(mixed, "v1")
            before = _example(mixed, state)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(
        f"3. Quality drops. The vector DB mixes versions: {mixed_before} of {len(live)} "
        f"vectors are v2. With v2 serving, search finds {v2_serving.recall:.0%} of the right "
        f"top-{K}; after a naive redeploy of v1, {naive.recall:.0%} "
        f"({naive.same_topic:.0%} of what it finds is on the query's topic)."
    )
    say(
        f"   '{EXAMPLE_QUERY}' finds {len(right & {n.entity_id for n in before})} of its "
        f"{K} right neighbours (the mixed index hides them), e.g.:"
    )
    for n in before[:3]:
        say(f"     {'right' if n.entity_id in right else 'other'} {n.topic:<8} {n.text}")

    plan = rollback(bootstrap, topics, home, models, to="v1").plan
    by_model = {m.model: m for m in plan.models}  # the demo knows which model is of which kind
    emb, clf = cast(EmbeddingPlan, by_model[EMBEDDER]), cast(DecisionPlan, by_model[CLASSIFIER])
    say(
        f"4. ledger rollback --to v1. Plan: {emb.items} v1 vectors to index; gap {len(emb.gap)} "
        f"(never embedded by v1), stale {len(emb.stale)} (edited since); re-decide "
        f"{len(clf.redecide)}; blast radius {clf.blast_radius.num_rows} v2 decisions that v1 "
        "overturns."
    )
    result = rollback(
        bootstrap,
        topics,
        home,
        models,
        to="v1",
        dry_run=False,
        options=RollbackOptions(
            hooks=Hooks(
                embedder=lambda ids: state.embed("v1", ids),
                classifier=lambda ids: state.classify("v1", ids),
            ),
            actor="demo",
            reason="demo: roll back the mixed index",
        ),
    )
    # The rollback's own events (v1 gap fill, DeploymentChanged) into the home, so the
    # views show the whole story once the broker is gone.
    catch_up(bootstrap, topics, home)
    purity = next(c for c in result.checks if c.model == EMBEDDER and c.name == "purity")
    mixed_after = int(purity.figures["not_in_view"]) + int(purity.figures["vector_differs"])
    passed = sum(c.passed for c in result.checks)
    say(
        f"   Gap and stale embedded with v1, re-decided with v1, rebuilt, verified ({passed}/"
        f"{len(result.checks)} checks passed), switched to {result.artifacts[EMBEDDER]}."
    )
    with open_index(home, EMBEDDER) as index:
        after = truth.quality(index, "v1")
        fixed = _example(index, state)
    say(
        f"5. After the rollback search finds {after.recall:.0%} of the right top-{K} "
        f"({after.same_topic:.0%} on topic); the same query finds "
        f"{len(right & {n.entity_id for n in fixed})} of {K}:"
    )
    for n in fixed[:3]:
        say(f"     {'right' if n.entity_id in right else 'other'} {n.topic:<8} {n.text}")
    run = DemoRun(
        run_id=str(uuid.uuid4()),
        started_at=started,
        texts=texts,
        events=events,
        live=len(live),
        mixed_before=mixed_before,
        mixed_after=mixed_after,
        gap=len(emb.gap),
        stale=len(emb.stale),
        redecide=len(clf.redecide),
        blast_radius=clf.blast_radius.num_rows,
        recall_v2_serving=round(v2_serving.recall, 4),
        recall_naive_redeploy=round(naive.recall, 4),
        recall_after=round(after.recall, 4),
        same_topic_naive_redeploy=round(naive.same_topic, 4),
        same_topic_after=round(after.same_topic, 4),
        example_right_before=len(right & {n.entity_id for n in before}),
        example_right_after=len(right & {n.entity_id for n in fixed}),
        verify_passed=passed == len(result.checks) and bool(result.checks),
        checks=len(result.checks),
        switched=result.switched,
        serving_version=plan.to_version,
        artifact=result.artifacts[EMBEDDER],
        seconds=round(time.perf_counter() - clock, 2),
    )
    append_rows(home / DEMO_DB, RUNS_TABLE, pa.Table.from_pylist([asdict(run)]))
    say(f"Done in {run.seconds:.0f}s. The log was in memory; the state stays in {home}. Try:")
    for line in next_commands(home):
        say(f"  {line}")
    return run


def next_commands(home: Path) -> list[str]:
    """What to try after the demo (offline: the views need no broker)."""
    h = "" if home == Path(".ledger") else f"--home {home} "
    sql = f"ledger {h}sql"
    # Command lines for people to copy (S608: not SQL executed here).
    return [
        sql + ' "SELECT * FROM version_counts"',  # noqa: S608
        sql + ' "SELECT * FROM serving_history"',  # noqa: S608
        f"ledger {h}lineage doc-000001",
        f"ledger {h}versions --model {EMBEDDER}",
        f"ledger {h}verify --model {EMBEDDER} --model {CLASSIFIER} --offline",
        sql + f' "SELECT * FROM demo.{RUNS_TABLE}"',  # noqa: S608
        f"ledger {h}export openlineage",
    ]
