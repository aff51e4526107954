"""Every ``sql`` block of docs/sql.md runs against the views (empty and populated)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from consumers.catchup import catch_up
from ledger.store import open_views
from tests.test_views import _history

DOC = Path(__file__).resolve().parent.parent / "docs" / "sql.md"
# Blocks on the demo's own record (demo.demo_runs) run in tests/test_docs.py, on a demo home.
BLOCKS = [
    b for b in re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S) if "demo." not in b
]


def test_the_doc_has_an_example_for_every_view_and_macro():
    text = "\n".join(BLOCKS)
    for name in (
        "model_versions",
        "embeddings",
        "deletions",
        "decisions",
        "deployments",
        "dead_letters",
        "offsets",
        "serving_history",
        "serving_now",
        "serving_version(",
        "live_entities(",
        "version_embeddings(",
        "latest_embeddings(",
        "version_decisions(",
        "latest_decisions(",
        "version_counts",
        "list_cosine_similarity",
    ):
        assert name in text, name


@pytest.mark.kafka
def test_every_sql_example_runs(bootstrap, topics, tmp_path):
    empty = open_views(tmp_path)
    try:
        for sql in BLOCKS:
            empty.execute(sql).fetchall()
    finally:
        empty.close()
    _history(bootstrap, topics)
    catch_up(bootstrap, topics, tmp_path)
    con = open_views(tmp_path)
    try:
        for sql in BLOCKS:
            con.execute(
                sql.replace("text-embedder", "emb")
                .replace("spam-filter", "clf")
                .replace("'v1'", "'c1'" if "decisions(" in sql else "'v1'")
            ).fetchall()
        assert (
            len(
                con.execute(
                    "SELECT model, list(model_version || ':' || current_vectors) AS mix "
                    "FROM version_counts WHERE current_vectors > 0 "
                    "GROUP BY model HAVING count(*) > 1"
                ).fetchall()
            )
            == 1
        )  # emb: v1 and v2 both current for some entities
    finally:
        con.close()
