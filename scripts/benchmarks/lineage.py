"""lineage: `ledger lineage ID` (ledger.ops.audit.lineage) of one entity over >= 10M stored
events, against the goal of 50 ms; EXPLAIN ANALYZE of the query.

The store is written straight into one shard with ``ledger.store.Shard.write`` (Arrow
batches of the shape the materialiser writes), not through the broker: 10M events through
Kafka would take ~10 minutes on 2 cores and measure the materialiser, not the query. Events
are in log order (rounds over all entities, shuffled within a round), not grouped by entity,
as a real log is: per entity ``--per-entity`` embeddings and as many decisions, over three
versions of each model, 1% of the entities deleted once, and four deployments per model.

    scripts/bench.py lineage --events 200000      # a smoke test
    scripts/bench.py lineage                      # 10M events (~3 min to write)
    scripts/bench.py lineage --keep DIR --reuse --compact --tail 100000,1000000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks._common import entity_id, figure, load
from benchmarks._lineage_compaction import (
    add_compaction_arguments,
    compact_store,
    parse_tails,
    print_tails,
    tail_figures,
)

NEEDS_BROKER = False
PREFIX = "bench"
PARTITIONS = 4
VERSIONS = ("v1", "v2", "v3")
EMB, CLF = "bench-embedder", "bench-classifier"
#: ART indexes on the id columns, which make one entity's lineage an index lookup (measured
#: here, not in the shard DDL: see BENCHMARKS.md, "Lineage at 10M").
LINEAGE_INDEXES = """
CREATE INDEX IF NOT EXISTS embeddings_entity_id ON embeddings (entity_id);
CREATE INDEX IF NOT EXISTS decisions_subject_id ON decisions (subject_id);
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=10_000_000, help="stored events (>= 10M)")
    parser.add_argument("--per-entity", type=int, default=5, help="embeddings (and decisions)")
    parser.add_argument("--dim", type=int, default=8, help="vector width of the embeddings")
    parser.add_argument("--queries", type=int, default=30, help="entities looked up")
    parser.add_argument("--keep", type=Path, default=None, help="build the home here and keep it")
    parser.add_argument(
        "--reuse", action="store_true", help="with --keep: use the store already there"
    )
    parser.add_argument(
        "--what-if",
        default="index,sorted",
        help="changed copies of the shard to time the query on: index (ART indexes on the id "
        "columns, LINEAGE_INDEXES), sorted (tables rewritten in id order); '' for none",
    )
    parser.add_argument("--plan", type=Path, default=None, help="write EXPLAIN ANALYZE here")
    add_compaction_arguments(parser)
    parser.add_argument(
        "--insert-cost",
        type=int,
        default=0,
        metavar="ROWS",
        help="instead: the lineage indexes' cost on inserts, ROWS 384-d embeddings written in "
        "5,000-row transactions into two fresh shards, with and without them, interleaved",
    )


class _Writer:
    """Builds Arrow batches in the shard's schema and writes them with their offsets."""

    def __init__(self, home: Path, shard: str = "main") -> None:
        from ledger.store import Shard

        self.shard = Shard(home, shard, hold=3600.0)  # one writer, held for the whole load
        self.next: dict[tuple[str, int], int] = {}
        self.rows = 0

    def _source(self, topic: str, parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.empty(len(parts), np.int64)
        for p in range(PARTITIONS):
            mask = parts == p
            start = self.next.get((topic, p), 0)
            offsets[mask] = np.arange(start, start + int(mask.sum()))
            self.next[(topic, p)] = start + int(mask.sum())
        return parts.astype(np.int32), offsets

    def write(self, table: str, topic: str, cols: dict[str, Any], parts: np.ndarray) -> None:
        from ledger.contract.events import new_event_ids
        from ledger.store import ARROW_SCHEMAS, Batch

        n = len(parts)
        partition, offset = self._source(topic, parts)
        data = {"event_id": new_event_ids(n), "producer": ["bench"] * n, **cols}
        data.update(topic=[topic] * n, partition=partition, offset=offset)
        schema = ARROW_SCHEMAS[table]
        arrays = [
            data[f.name] if isinstance(data[f.name], pa.Array) else pa.array(data[f.name], f.type)
            for f in schema
        ]
        batch = pa.Table.from_arrays(arrays, schema=schema)
        offsets = {k: v for k, v in self.next.items() if k[0] == topic}
        self.shard.write(Batch({table: batch}, offsets))
        self.rows += n

    def close(self) -> None:
        self.shard.release()


def _partition(ids: list[str]) -> np.ndarray:
    import zlib

    return np.fromiter((zlib.crc32(i.encode()) % PARTITIONS for i in ids), np.int64, len(ids))


def _models(w: _Writer, start: datetime) -> None:
    topic = f"{PREFIX}.models"
    for model, kind in ((EMB, "embedding"), (CLF, "classifier")):
        for v in VERSIONS:
            w.write(
                "model_versions",
                topic,
                {
                    "event_time": [start],
                    "model": [model],
                    "model_version": [v],
                    "kind": [kind],
                    "dimension": [8 if kind == "embedding" else None],
                    "metric": ["angular" if kind == "embedding" else None],
                    "artifact_uri": [""],
                    "artifact_sha256": ["0" * 64],
                    "labels": [[] if kind == "embedding" else ["ham", "spam"]],
                },
                np.zeros(1, np.int64),
            )


def _deployments(w: _Writer, start: datetime, rounds: int) -> None:
    # v1 serves, then v2, then v3, then a rollback to v1, spread over the rounds.
    steps = [("v1", None), ("v2", "v1"), ("v3", "v2"), ("v1", "v3")]
    for i, (to, frm) in enumerate(steps):
        when = start + timedelta(days=i * rounds / len(steps))
        for model in (EMB, CLF):
            w.write(
                "deployments",
                f"{PREFIX}.models",
                {
                    "event_time": [when],
                    "model": [model],
                    "model_version": [to],
                    "from_version": [frm],
                    "reason": ["bench"],
                    "actor": ["bench"],
                    "summary": pa.array(
                        [[("artifact", f"artifacts/{model}/{to}")]],
                        pa.map_(pa.string(), pa.string()),
                    ),
                },
                np.zeros(1, np.int64),
            )


def build_store(home: Path, entities: int, per_entity: int, dim: int) -> int:
    """Write the store; the number of events."""
    rng = np.random.default_rng(0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    w = _Writer(home)
    _models(w, start)
    _deployments(w, start, per_entity)
    ids = np.array([entity_id(i) for i in range(entities)])
    hashes = np.array([hashlib.sha256(i.encode()).hexdigest() for i in ids.tolist()])
    step = 250_000
    try:
        for r in range(per_entity):
            order = rng.permutation(entities)  # log order within a round, not by entity
            version = VERSIONS[min(r, len(VERSIONS) - 1)]
            for lo in range(0, entities, step):
                rows = order[lo : lo + step]
                n = len(rows)
                batch_ids = ids[rows].tolist()
                parts = _partition(batch_ids)
                t0 = start + timedelta(days=r)
                times = pa.array(
                    np.datetime64(t0.replace(tzinfo=None), "us") + np.arange(lo, lo + n),
                    pa.timestamp("us", tz="UTC"),
                )
                flat = pa.array(rng.standard_normal(n * dim, dtype=np.float32))
                vectors = pa.ListArray.from_arrays(
                    pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32)), flat
                )
                w.write(
                    "embeddings",
                    f"{PREFIX}.embeddings",
                    {
                        "event_time": times,
                        "model": [EMB] * n,
                        "model_version": [version] * n,
                        "entity_id": batch_ids,
                        "content_sha256": hashes[rows].tolist(),
                        "dimension": [dim] * n,
                        "vector": vectors,
                        "shadow": [False] * n,
                    },
                    parts,
                )
                labels = rng.choice(["ham", "spam"], n).tolist()
                w.write(
                    "decisions",
                    f"{PREFIX}.decisions",
                    {
                        "event_time": times,
                        "model": [CLF] * n,
                        "model_version": [version] * n,
                        "subject_id": batch_ids,
                        "label": labels,
                        "score": rng.random(n),
                        "input_sha256": hashes[rows].tolist(),
                        "shadow": [False] * n,
                    },
                    parts,
                )
            print(f"  round {r + 1}/{per_entity}: {w.rows:,} events", flush=True)
        deleted = np.sort(rng.choice(entities, entities // 100, replace=False))
        del_ids = ids[deleted].tolist()
        when = start + timedelta(days=per_entity)
        w.write(
            "deletions",
            f"{PREFIX}.embeddings",
            {
                "event_time": [when] * len(del_ids),
                "model": [EMB] * len(del_ids),
                "model_version": ["v1"] * len(del_ids),
                "entity_id": del_ids,
            },
            _partition(del_ids),
        )
    finally:
        w.close()
    return w.rows


def _explain(con: Any, sql: str, params: dict[str, Any]) -> str:
    """EXPLAIN ANALYZE of ``sql`` (the text tree DuckDB prints)."""
    rows = con.execute("EXPLAIN ANALYZE " + sql, params).fetchall()
    return "\n".join(str(r[1]) for r in rows)


def _profile(con: Any, sql: str, params: dict[str, Any], out: Path) -> list[str]:
    """The same profile as JSON, summarised: query time, planning, the costliest operators."""
    con.execute("PRAGMA enable_profiling = 'json'")
    con.execute("PRAGMA profiling_mode = 'detailed'")
    con.execute(f"PRAGMA profiling_output = '{out}'")
    try:
        con.execute(sql, params).fetchall()
    finally:
        con.execute("PRAGMA disable_profiling")
    report = json.loads(out.read_text())
    ops: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        ops.append(node)
        for child in node.get("children", []):
            walk(child)

    for node in report.get("operator", []):
        walk(node)
    query = report["query"]
    planning = sum(report[k]["total_time"] for k in ("planner", "optimizer", "physical_planner"))
    lines = [
        f"query total {query['total_time'] * 1000:.1f} ms, cpu {query['cpu_time'] * 1000:.1f} ms, "
        f"planning {planning * 1000:.1f} ms, rows scanned {query['total_rows_scanned']:,}, "
        f"row groups {query['total_row_groups_scanned']}/{query['total_row_groups_to_scan']}"
    ]
    for node in sorted(ops, key=lambda o: -o.get("timing", 0))[:6]:
        extra = node.get("extra_info", {})
        what = extra.get("Table", "") + (f" {extra['Filters']}" if "Filters" in extra else "")
        scanned = (
            f", {node['rows_scanned']:,} rows scanned in {node['row_groups_scanned']}/"
            f"{node['total_row_groups_to_scan']} row groups"
            if "rows_scanned" in node
            else ""
        )
        lines.append(
            f"  {node['name']:<14} {node.get('timing', 0) * 1000:7.1f} ms  {what}{scanned}"
        )
    return lines


def _lookups(home: Path, picks: list[str]) -> tuple[float, list[float], list[int]]:
    """open_views, then lineage() of each pick: (open seconds, ms per query, rows each)."""
    from ledger.ops.audit import lineage
    from ledger.store import open_views

    started = time.perf_counter()
    con = open_views(home)
    opened = time.perf_counter() - started
    times, found = [], []
    try:
        for eid in picks:
            t = time.perf_counter()
            table = lineage(con, eid)
            times.append((time.perf_counter() - t) * 1000)
            found.append(table.num_rows)
    finally:
        con.close()
    return opened, times, found


def _what_if(home: Path, tmp: Path, picks: list[str], how: str) -> float:
    """Median lineage ms on a copy of the shard changed by ``how``: ``index`` adds ART
    indexes on the id columns (``LINEAGE_INDEXES``); ``sorted`` rewrites the tables ordered
    by id (zone maps)."""
    import duckdb

    copy = tmp / f"what-if-{how}"
    shutil.copytree(home / "shards", copy / "shards", ignore=shutil.ignore_patterns("*.writer"))
    con = duckdb.connect(str(copy / "shards" / "main.duckdb"))
    try:
        for table, column in (("embeddings", "entity_id"), ("decisions", "subject_id")):
            if how == "index":
                con.execute(f"CREATE INDEX {table}_{column} ON {table} ({column})")
            else:
                # fixed table and column names, no input
                con.execute(f"CREATE TABLE s AS SELECT * FROM {table} ORDER BY {column}")  # noqa: S608
                con.execute(f"DROP TABLE {table}")
                con.execute(f"ALTER TABLE s RENAME TO {table}")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    _, times, _ = _lookups(copy, picks)
    shutil.rmtree(copy, ignore_errors=True)
    return statistics.median(times[1:])


def _insert_cost(tmp: Path, rows: int, dim: int = 384, batch: int = 5_000) -> None:
    """Shard.write of the same 384-d embeddings into a shard with the lineage indexes (the
    DDL plus ``LINEAGE_INDEXES``) and one without, one transaction each in turn."""
    import ledger.store.shards as shards

    rng = np.random.default_rng(2)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    order = rng.permutation(rows)
    full_ddl = shards.DDL
    writers = {}
    for variant in ("indexed", "plain"):
        shards.DDL = full_ddl + LINEAGE_INDEXES if variant == "indexed" else full_ddl
        writers[variant] = _Writer(tmp / variant)
        _models(writers[variant], start)  # the first write runs the DDL
    shards.DDL = full_ddl
    seconds: dict[str, list[float]] = {v: [] for v in writers}
    for lo in range(0, rows, batch):
        n = min(batch, rows - lo)
        batch_ids = [entity_id(int(i)) for i in order[lo : lo + n]]
        flat = pa.array(rng.standard_normal(n * dim, dtype=np.float32))
        cols = {
            "event_time": [start] * n,
            "model": [EMB] * n,
            "model_version": ["v1"] * n,
            "entity_id": batch_ids,
            "content_sha256": ["0" * 64] * n,
            "dimension": [dim] * n,
            "vector": pa.ListArray.from_arrays(
                pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32)), flat
            ),
            "shadow": [False] * n,
        }
        parts = _partition(batch_ids)
        turn = ("indexed", "plain") if (lo // batch) % 2 == 0 else ("plain", "indexed")
        for variant in turn:
            t = time.perf_counter()
            writers[variant].write("embeddings", f"{PREFIX}.embeddings", cols, parts)
            seconds[variant].append(time.perf_counter() - t)
    closed = {}
    for variant, w in writers.items():
        t = time.perf_counter()
        w.close()  # the checkpoint
        closed[variant] = time.perf_counter() - t
    tenth = max(1, len(seconds["plain"]) // 10)
    for variant, times in seconds.items():
        size = sum(f.stat().st_size for f in (tmp / variant / "shards").glob("*.duckdb"))
        figure(
            f"insert_{variant}",
            f"{rows / sum(times):,.0f} rows/s ({rows:,} x {dim}-d rows, {batch:,}-row "
            f"transactions); first tenth {batch * tenth / sum(times[:tenth]):,.0f}/s, last tenth "
            f"{batch * tenth / sum(times[-tenth:]):,.0f}/s; close {closed[variant]:.2f} s; "
            f"{size / 2**30:.2f} GiB",
        )
    figure(
        "insert_indexed_vs_plain",
        f"{sum(seconds['indexed']) / sum(seconds['plain']):.3f} (time with the indexes / without)",
    )


def run(args: argparse.Namespace) -> None:
    from ledger.ops.audit import LINEAGE_SQL
    from ledger.store import open_views

    if args.insert_cost:
        print(f"machine: load average {load()}")
        with tempfile.TemporaryDirectory(prefix="bench-insert-") as tmp_name:
            _insert_cost(Path(tmp_name), args.insert_cost)
        print(f"load average at the end: {load()}")
        return

    per_entity = args.per_entity
    entities = -(-args.events // (2 * per_entity))  # ceil: at least --events events
    print(f"machine: load average {load()}; {entities} entities x {2 * per_entity} events")
    with tempfile.TemporaryDirectory(prefix="bench-lineage-") as tmp_name:
        tmp = Path(tmp_name)
        home = args.keep or tmp / "home"
        if not (args.reuse and (home / "shards").is_dir()):
            started = time.perf_counter()
            events = build_store(home, entities, per_entity, args.dim)
            seconds = time.perf_counter() - started
            figure("setup_store", f"{events:,} events written in {seconds:.0f} s (Shard.write)")
        if args.compact:
            compact_store(home)
        size = sum(f.stat().st_size for f in (home / "shards").glob("*.duckdb"))
        rng = np.random.default_rng(1)
        picks = [entity_id(int(i)) for i in rng.choice(entities, args.queries, replace=False)]
        opened, times, found = _lookups(home, picks)
        con = open_views(home)
        try:
            ((stored,),) = con.execute(
                "SELECT (SELECT count(*) FROM embeddings) + (SELECT count(*) FROM decisions) "
                "+ (SELECT count(*) FROM deletions) + (SELECT count(*) FROM deployments) "
                "+ (SELECT count(*) FROM model_versions)"
            ).fetchall()
            params = {"id": picks[0], "model": None}
            plan = _explain(con, LINEAGE_SQL, params)
            summary = _profile(con, LINEAGE_SQL, params, tmp / "profile.json")
            planning = _timed(con, "EXPLAIN " + LINEAGE_SQL, picks, model=None)
            scans = {
                "embeddings": _timed(
                    con, "SELECT event_id FROM embeddings WHERE entity_id = $id", picks
                ),
                "decisions": _timed(
                    con, "SELECT event_id FROM decisions WHERE subject_id = $id", picks
                ),
            }
        finally:
            con.close()
        cli_ms = _cli(home, picks[1])
        what_if = {h: _what_if(home, tmp, picks, h) for h in args.what_if.split(",") if h}
        tails = tail_figures(
            home, tmp, picks, parse_tails(args.tail), entities, _lookups, args.tail_shard
        )
        if args.plan:
            args.plan.write_text(plan)

    figure("stored_events", f"{stored:,} ({size / 2**30:.2f} GiB of shard)", ">= 10M")
    figure("open_views_ms", f"{opened * 1000:.0f}", "n/a: once per `ledger lineage`")
    figure("lineage_rows", f"{statistics.median(found):.0f} per entity (median)")
    figure("lineage_first_ms", f"{times[0]:.1f}", "n/a: first query on the connection")
    figure("lineage_p90_ms", f"{np.percentile(times[1:], 90):.1f}")
    figure("cli_lineage_ms", f"{cli_ms:.0f}", "n/a: `ledger lineage ID` end to end, a process")
    figure("plan_only_ms", f"{planning:.1f}", "n/a: EXPLAIN of the query (parse, bind, optimise)")
    for table, ms in scans.items():
        figure(f"scan_{table}_ms", f"{ms:.1f}", "n/a: the id filter on that table alone")
    for how, ms in what_if.items():
        figure(f"what_if_{how}_lineage_ms", f"{ms:.1f}", "n/a: the same query on a changed copy")
    print_tails(tails, args.tail_shard)
    print("profile (EXPLAIN ANALYZE as JSON, first entity):")
    print("\n".join(summary), flush=True)
    figure("lineage_ms", f"{statistics.median(times[1:]):.1f} (median of {len(times) - 1})", "< 50")


def _timed(con: Any, sql: str, picks: list[str], **extra: Any) -> float:
    out = []
    for eid in picks:
        t = time.perf_counter()
        con.execute(sql, {"id": eid, **extra}).fetchall()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def _cli(home: Path, eid: str) -> float:
    cmd = [sys.executable, "-m", "ledger", "--home", str(home), "lineage", eid, "--json"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return (time.perf_counter() - t) * 1000
