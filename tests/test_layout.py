"""The layout holds: imports run one way, no module imports itself round a cycle, modules
and the operator verbs stay small. (The stage order itself is the import-linter contract
in pyproject.toml, run by scripts/check.)"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import grimp
import pytest

import ledger
from ledger.ops.rollback import rollback

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "ledger").rglob("*.py"), *(ROOT / "consumers").rglob("*.py")])


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("ledger", "consumers", cache_dir=None)


@pytest.fixture(scope="module")
def graph_with_libraries() -> grimp.ImportGraph:
    return grimp.build_graph("ledger", "consumers", cache_dir=None, include_external_packages=True)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    # Tarjan's strongly connected components over module imports.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in graph.find_modules_directly_imported_by(m):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.append(n)
                if n == m:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_is_part_of_an_import_cycle(graph):
    assert _cycles(graph) == []


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("consumers", "ledger.ops"),
        ("consumers", "ledger.cli"),
        ("consumers", "ledger.artifacts"),
        ("consumers", "ledger.serving"),
        ("consumers", "ledger.checks"),
        ("ledger.contract", "consumers"),
        ("ledger.log", "consumers"),
        ("ledger.store", "consumers"),
    ],
)
def test_lower_stages_never_import_higher_ones(graph, importer, imported):
    assert not graph.chain_exists(importer, imported, as_packages=True)


def test_duckdb_is_imported_by_the_store_alone_and_kafka_by_the_log_alone(graph_with_libraries):
    g = graph_with_libraries
    duckdb = g.find_modules_that_directly_import("duckdb")
    assert duckdb and all(m.startswith("ledger.store.") for m in duckdb)
    kafka = g.find_modules_that_directly_import("kafka")
    assert kafka and all(m.startswith("ledger.log.") for m in kafka)  # consumers/ included


def test_the_consumers_reach_a_kafka_client_only_through_the_seam(graph_with_libraries):
    g = graph_with_libraries
    # librdkafka is known to its implementation of the seam alone.
    assert g.find_modules_that_directly_import("confluent_kafka") == {
        "ledger.log.clients.librdkafka"
    }
    # Only the log stage imports the client implementations; the others see the seam.
    for impl in ("ledger.log.clients.kafka_python", "ledger.log.clients.librdkafka"):
        importers = g.find_modules_that_directly_import(impl)
        assert importers and all(m.startswith("ledger.log.") for m in importers), impl
    # kafka-python's private parts (the sender's force close, the topic ids in its cluster
    # metadata) are used by its implementation alone.
    private = ("force_close(", "cluster.topic_id(", "._client.cluster")
    using = {str(p.relative_to(ROOT)) for p in SOURCES if any(u in p.read_text() for u in private)}
    assert using == {"ledger/log/clients/kafka_python.py"}


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in SOURCES if (n := p.read_text().count("\n")) > 500}
    assert long == {}


def test_no_operator_verb_function_is_over_60_lines():
    long = {}
    for path in (ROOT / "ledger" / "ops").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > 60:
                    long[f"{path.relative_to(ROOT)}:{node.name}"] = lines
    assert long == {}


def test_rollback_takes_at_most_eight_parameters():
    assert len(inspect.signature(rollback).parameters) <= 8
    assert ledger.rollback is rollback


def _resolve(dotted: str) -> object:
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def test_the_architecture_page_names_only_what_exists():
    import re

    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`(ledger\.[a-z_]+(?:\.[A-Za-z_]+)+)", text))
    assert len(named) > 15
    missing = []
    for dotted in sorted(named):
        try:
            _resolve(dotted)
        except (ImportError, AttributeError):
            missing.append(dotted)
    assert missing == []


@pytest.mark.parametrize(
    "module",
    ["consumers", "consumers.materialiser", "ledger.store", "ledger.artifacts.shard_worker"],
)
def test_each_stage_imports_on_its_own_in_a_fresh_interpreter(module):
    import subprocess
    import sys

    # The public API of ledger/__init__.py loads lazily, so no stage imports the others.
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
