"""Building a plan's artifacts at its log position, and writing its report lists."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ledger.artifacts.manifest import path_part
from ledger.log.producer import Producer
from ledger.ops.kinds import BuildContext, Hooks, Progress, no_progress
from ledger.ops.plan import RollbackPlan
from ledger.serving.pointers import ARTIFACTS_DIR
from ledger.store import Connection

REPORTS_DIR = "reports"


def fill_gaps(producer: Producer, plan: RollbackPlan, hooks: Hooks, *, batch: int = 1024) -> int:
    """Publish V events for what each model's plan lacks (through ``hooks``); the count."""
    sent = sum(mp.kind.fill(producer, mp, hooks, batch=batch) for mp in plan.models)
    producer.flush()
    return sent


def build_artifacts(
    home: Path,
    con: Connection,
    plan: RollbackPlan,
    *,
    artifacts_root: Path | None = None,
    progress: Progress = no_progress,
) -> dict[str, Path]:
    """Build every model's artifact at the plan's log position; model -> artifact folder."""
    at = BuildContext(home, artifacts_root or home / ARTIFACTS_DIR, plan.log_offsets, progress)
    return {mp.model: mp.kind.build(con, mp, at) for mp in plan.models}


def write_reports(home: Path, plan: RollbackPlan) -> Path:
    """Gap, stale, re-decide and blast-radius lists as Parquet + CSV; the report folder."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = home / REPORTS_DIR / f"{stamp}-to-{path_part(plan.to_version)}"
    folder.mkdir(parents=True, exist_ok=True)
    for mp in plan.models:
        model = path_part(mp.model)  # a model name is not a safe file name ("team/emb")
        for name, table in mp.kind.reports(mp).items():
            pq.write_table(table, folder / f"{model}.{name}.parquet")
            pacsv.write_csv(table, folder / f"{model}.{name}.csv")
    (folder / "plan.json").write_text(json.dumps(plan.summary(), indent=2, default=str))
    return folder
