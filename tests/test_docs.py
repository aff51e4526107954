"""The README's code runs, and CI runs exactly the README's test command."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from ledger.events import Topics
from ledger.log import read_to_end
from ledger.schemas import default_store
from ledger.wire import decode

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
