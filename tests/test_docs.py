"""The README's code runs, and CI runs exactly the README's test command."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from ledger.contract.events import Topics
from ledger.contract.schemas import default_store
from ledger.contract.wire import decode
from ledger.log.reading import read_to_end

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.M | re.S)


@pytest.mark.kafka
def test_readme_python_example_writes_its_embedding(bootstrap: str) -> None:
    (source,) = _blocks("python")
    topics = Topics(f"readme{uuid.uuid4().hex[:10]}")
    assert '"localhost:9092"' in source and 'Topics("ledger")' in source
    source = source.replace('"localhost:9092"', repr(bootstrap))
    source = source.replace('Topics("ledger")', f"Topics({topics.prefix!r})")

    exec(compile(source, "README.md", "exec"), {})  # noqa: S102 - our own README

    events = [decode(default_store(), m.value) for m in read_to_end(bootstrap, list(topics.all))]
    assert sorted((name, rec.get("entity_id"), rec["dimension"]) for name, rec in events) == [
        ("EmbeddingWritten", "doc-1", 384),
        ("ModelVersionRegistered", None, 384),
    ]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    demo, tests = (block.strip() for block in _blocks("bash"))
    assert demo.endswith("ledger demo")
    assert tests.endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci


def _sql_examples() -> list[tuple[str, str, str | None]]:
    """(file, sql, documented output or None) for every ```sql block of docs/ and README."""
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        pattern = r"^```sql\n(?P<sql>.*?)^```\n(?:\n?```text\n(?P<out>.*?)^```\n)?"
        for m in re.finditer(pattern, text, flags=re.M | re.S):
            out.append((path.name, m["sql"], m["out"]))
    return out


@pytest.mark.kafka
def test_every_sql_example_in_the_docs_runs_on_the_demo_home(demo_home) -> None:
    from ledger.cli.audit import render_table, sql_views
    from ledger.store import read_only_query

    examples = _sql_examples()
    assert len(examples) >= 20
    with sql_views(demo_home.home) as con:  # as `ledger sql` runs them
        for name, sql, documented in examples:
            result = read_only_query(con, sql)  # raises on an example that does not run
            if documented is not None:
                # Same columns (widths depend on the data: topic names, times).
                header = render_table(result.columns, result.rows).splitlines()[0]
                assert documented.splitlines()[0].split() == header.split(), f"{name}: {sql}"


_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@pytest.mark.kafka
def test_readme_rollback_transcript_is_the_real_output(bootstrap, tmp_path) -> None:
    import shlex

    from click.testing import CliRunner

    from ledger.cli import cli
    from ledger.demo.incident import play
    from ledger.log.topics import init_topics

    (block,) = [b for b in _blocks("text") if b.startswith("$ ledger rollback")]
    command, *expected = block.splitlines()
    topics = Topics(f"readme{uuid.uuid4().hex[:10]}")
    init_topics(bootstrap, topics)
    play(bootstrap, topics)
    args = ["--bootstrap", bootstrap, "--home", str(tmp_path), "--topic-prefix", topics.prefix]
    result = CliRunner().invoke(cli, [*args, *shlex.split(command)[2:]])
    assert result.exit_code == 0, result.output
    assert [_TIME.sub("T", x) for x in result.stdout.splitlines()] == [
        _TIME.sub("T", x) for x in expected
    ]
