"""Auditor and health commands: ``sql``, ``lineage``, ``versions``, ``export openlineage``,
``doctor``. Thin click layer over :mod:`ledger.ops.audit`, :mod:`ledger.ops.doctor` and
:func:`ledger.store.open_views`; registered on the ``ledger`` group by :mod:`ledger.cli`.

All but ``doctor`` work offline: the views read the shards in ``--home``, not the broker.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ledger.cli.context import Context, CouldNotRun, emit, json_option, pass_context
from ledger.errors import StoreError

#: A DuckDB file of the tool's own in home (the demo's figures), attached as ``demo``.
_EXTRA_FILES = {"demo": "demo.duckdb"}
_CELL = 60  # widest cell in a table for people; --json / --csv give everything


@contextlib.contextmanager
def home_views(home: Path) -> Iterator[Any]:
    """The views of ``home`` (read-only), with ``demo.duckdb`` attached as ``demo`` if present.

    Example:
        >>> with home_views(Path(".ledger")) as con:  # doctest: +SKIP
        ...     read_only_query(con, "SELECT * FROM serving_now")
    """
    from ledger.store import attach_read_only, open_views

    _require_state(home)
    con = open_views(home)
    try:
        for alias, name in _EXTRA_FILES.items():
            if (home / name).is_file():
                attach_read_only(con, home / name, alias)
        yield con
    finally:
        con.close()


@contextlib.contextmanager
def sql_views(home: Path) -> Iterator[Any]:
    """The views ``ledger sql`` queries: copies of ``home``'s shards (and ``demo.duckdb``
    as ``demo``), on a connection that cannot write or reach other files.

    Example:
        >>> with sql_views(Path(".ledger")) as con:  # doctest: +SKIP
        ...     read_only_query(con, "SELECT * FROM serving_now", time_limit=60)
    """
    from ledger.store import query_views

    _require_state(home)
    with query_views(home, files={a: home / name for a, name in _EXTRA_FILES.items()}) as con:
        yield con


def _require_state(home: Path) -> None:
    if not home.is_dir():
        raise CouldNotRun(
            f"no ledger state in {home}: run `ledger demo` or `ledger consume`, or pass --home"
        )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= _CELL else text[: _CELL - 3] + "..."


def render_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned with spaces, a rule under the header, numbers right-aligned.

    Example:
        >>> print(render_table(["model", "n"], [["embedder", 12], ["clf", 3]]))
        model      n
        --------  --
        embedder  12
        clf        3
    """
    cells = [[_text(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        bool(rows)
        and all(
            (isinstance(r[i], int | float) and not isinstance(r[i], bool)) or r[i] is None
            for r in rows
        )
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        out = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _records(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


@click.command("sql")
@click.argument("query")
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="CSV output (header row first).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Stop the query after this many seconds (exit 2).",
)
@pass_context
def sql_cmd(c: Context, query: str, as_json: bool, as_csv: bool, timeout: float) -> None:
    """Run one read-only SQL query on the ledger's views (writes are refused).

    One SELECT (or EXPLAIN of one); it reads copies of the shards, so the materialisers
    never wait for it, and cannot write or read other files. The views and macros are
    documented in docs/sql.md; the demo's figures are in demo.demo_runs. Works offline:
    it reads the shards in --home, not the broker.

    \b
    Example:
        ledger sql "SELECT * FROM version_counts"
        ledger sql "SELECT * FROM serving_history" --json
        ledger sql "FROM live_entities('text-embedder') LIMIT 5" --csv --timeout 30
    """
    from ledger.store import check_read_only, read_only_query

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    try:
        check_read_only(query)  # before copying anything: a refusal costs nothing
        with sql_views(c.home) as con:
            result = read_only_query(con, query, time_limit=timeout)
    except StoreError as exc:
        raise CouldNotRun(str(exc).splitlines()[0]) from exc
    if as_csv:
        click.echo(_csv(result.columns, result.rows), nl=False)
    else:
        emit(
            _records(result.columns, result.rows),
            as_json=as_json,
            human=lambda _: click.echo(render_table(result.columns, result.rows)),
        )


@click.command("lineage")
@click.argument("entity_id")
@click.option("--model", default=None, help="Only this model's events.")
@json_option
@pass_context
def lineage_cmd(c: Context, entity_id: str, model: str | None, as_json: bool) -> None:
    """Every event about an entity or subject, across models and versions.

    Embeddings, deletions and decisions, oldest first, each with the version of its model
    that was serving at that moment (from the deployments in the log).

    \b
    Example:
        ledger lineage doc-000001
        ledger lineage doc-000001 --model spam-filter --json
    """
    from ledger.ops.audit import lineage

    with home_views(c.home) as con:
        table = lineage(con, entity_id, model=model)
    if table.num_rows == 0:
        raise CouldNotRun(f"no events about {entity_id!r}" + (f" of {model}" if model else ""))
    shown = [
        "event_time",
        "event",
        "model",
        "model_version",
        "serving_version",
        "detail",
        "producer",
    ]
    emit(
        table.to_pylist(),
        as_json=as_json,
        human=lambda rows: click.echo(render_table(shown, [[r[k] for k in shown] for r in rows])),
    )


@click.command("versions")
@click.option("--model", required=True, help="The model.")
@click.option("--version", "version", default=None, help="Only this version.")
@json_option
@pass_context
def versions_cmd(c: Context, model: str, version: str | None, as_json: bool) -> None:
    """A model's versions: counts of embeddings / decisions and serving windows.

    current_vectors / current_decisions: how much of the current state each version
    produced (two versions with current vectors: a mixed state); *_events: all events.

    \b
    Example:
        ledger versions --model text-embedder
        ledger versions --model spam-filter --version v2 --json
    """
    from ledger.ops.audit import versions

    with home_views(c.home) as con:
        rows = versions(con, model, version=version)

    def human(data: list[dict[str, Any]]) -> None:
        cols = [
            "version",
            "kind",
            "serving",
            "current_vectors",
            "current_decisions",
            "embedding_events",
            "decision_events",
        ]
        click.echo(render_table(cols, [[r[k] for k in cols] for r in data]))
        for r in data:
            for w in r["windows"]:
                until = _text(w["until"]) or "now"
                click.echo(f"{r['version']} served {_text(w['from'])} -> {until}  ({w['reason']})")

    emit(rows, as_json=as_json, human=human)


@click.group("export")
def export_cmd() -> None:
    """Export the ledger's history for other tools.

    \b
    Example:
        ledger export openlineage --out runs.jsonl
    """


@export_cmd.command("openlineage")
@click.option(
    "--out",
    type=click.File("w"),
    default="-",
    show_default=True,
    help="Where to write the JSON lines.",
)
@click.option(
    "--namespace",
    default=None,
    help="Namespace of the topic datasets (default kafka://<bootstrap>).",
)
@pass_context
def export_openlineage_cmd(c: Context, out: Any, namespace: str | None) -> None:
    """OpenLineage RunEvents (JSON lines) for every deployment and rollback.

    One COMPLETE event per DeploymentChanged: job <model>.rollback (made by `ledger
    rollback`, output: the artifact) or <model>.deployment; inputs: the topics. POST
    each line to Marquez's /api/v1/lineage to ingest them.

    \b
    Example:
        ledger export openlineage --out runs.jsonl
        ledger export openlineage | head -1 | python -m json.tool
    """
    from ledger.ops.audit import openlineage_events

    kafka = namespace or f"kafka://{(c.bootstrap or 'localhost:9092').split(',')[0]}"
    with home_views(c.home) as con:
        events = openlineage_events(
            con,
            topics=c.topics,
            kafka_namespace=kafka,
            artifacts_namespace=f"file://{c.home.resolve()}",
        )
    for event in events:
        out.write(json.dumps(event, sort_keys=True) + "\n")


@click.command("doctor")
@json_option
@pass_context
def doctor_cmd(c: Context, as_json: bool) -> None:
    """Check broker, topics, shards, serving artifacts, dead letters and lag.

    One line per check with a fix for each problem; exit 1 if a check fails.

    \b
    Example:
        ledger doctor
        ledger --bootstrap kafka:9092 --home /srv/ledger doctor --json
    """
    from ledger.ops.doctor import FAIL, doctor

    findings = doctor(c.bootstrap, c.topics, c.home)

    def human(_: Any) -> None:
        for f in findings:
            click.echo(f"{f.status:<4}  {f.check:<12} {f.detail}")
            if f.fix:
                click.echo(f"      fix: {f.fix}")

    emit([f.to_dict() for f in findings], as_json=as_json, human=human)
    if any(f.status == FAIL for f in findings):
        raise SystemExit(1)
