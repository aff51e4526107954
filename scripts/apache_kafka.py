"""A real single-node Apache Kafka (4.x, KRaft, broker and controller in one process) for
tests and benchmarks.

Not part of the product: the ledger's default broker stays the embedded one, and nothing
here is needed to run the README's commands. The broker's jars come from Maven Central,
resolved by Maven from ``scripts/kafka-broker/pom.xml`` into the user's Maven cache (so
only the first run downloads them). A broker formats a KRaft storage folder in a
temporary directory, listens on a free loopback port, and can be stopped and started
again on the same folder (:meth:`ApacheKafka.restart`): the log survives, unlike the
embedded broker's.

    with ApacheKafka() as bootstrap:          # 127.0.0.1:PORT, ready for clients
        ...

``scripts/kafka`` is the command line over this module.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

POM_DIR = Path(__file__).resolve().parent / "kafka-broker"
ENV_HEAP = "LEDGER_KAFKA_HEAP"
STATE_FILE = "broker.json"  # in the storage folder: ports and cluster id, for a restart
READY_LINE = b"Kafka Server started"  # logged once the broker is registered and unfenced

#: Settings fit for tests on a small machine: one replica of everything, no delay before the
#: first group rebalance, retention checked every second (the retention tests), and few
#: partitions for the internal topics (50 offsets partitions take seconds to create).
TEST_SETTINGS = {
    "num.partitions": "1",
    "default.replication.factor": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "log.retention.check.interval.ms": "1000",
    "log.segment.delete.delay.ms": "1000",
    "num.network.threads": "2",
    "num.io.threads": "4",
}


class BrokerStartError(RuntimeError):
    """The broker could not be resolved, formatted, started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def tools_available() -> bool:
    """Whether ``java`` and ``mvn`` are on PATH (what :func:`classpath` and a start need)."""
    return shutil.which("java") is not None and shutil.which("mvn") is not None


def classpath() -> str:
    """The broker's classpath, resolved by Maven from the pom (cached next to it).

    The cached list is used while the pom is older than it and every jar it names is
    still in the Maven cache; otherwise Maven resolves it again (downloading what the
    cache lacks).
    """
    pom = POM_DIR / "pom.xml"
    cached = POM_DIR / "target" / "classpath.txt"
    if cached.exists() and cached.stat().st_mtime >= pom.stat().st_mtime:
        text = cached.read_text().strip()
        if text and all(Path(jar).exists() for jar in text.split(os.pathsep)):
            return text
    cached.parent.mkdir(exist_ok=True)
    done = subprocess.run(  # noqa: S603 - fixed arguments
        [
            shutil.which("mvn") or "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:build-classpath",
            f"-Dmdep.outputFile={cached}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not cached.exists():
        raise BrokerStartError(
            f"mvn could not resolve the broker's jars:\n{done.stdout}{done.stderr}"
        )
    return cached.read_text().strip()


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class ApacheKafka:
    """One Apache Kafka broker+controller process on loopback ports, its log in ``log_dir``.

    Args:
        host: the interface to listen on.
        port: the client port (default: a free one); kept across restarts.
        log_dir: the KRaft storage folder; default a temporary one, removed by
            :meth:`close`. An existing, formatted folder is started as it is (a restart from
            another process: its ports come from the folder's ``broker.json``).
        settings: server properties on top of :data:`TEST_SETTINGS`.
        heap: the JVM's maximum heap (default ``$LEDGER_KAFKA_HEAP`` or ``1g``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_dir: Path | None = None,
        settings: Mapping[str, str] | None = None,
        heap: str | None = None,
    ) -> None:
        self.host = host
        self._own_dir = log_dir is None
        self.dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp("-kafka"))
        state = self._read_state()
        self.port = port or state.get("port") or free_port(host)
        self.controller_port = state.get("controller_port") or free_port(host)
        self.cluster_id = str(state.get("cluster_id") or _cluster_id())
        self.settings = {**TEST_SETTINGS, **(settings or {})}
        self.heap = heap or os.environ.get(ENV_HEAP, "1g")
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def server_log(self) -> Path:
        return self.dir / "server.log"

    def _read_state(self) -> dict[str, int | str]:
        path = self.dir / STATE_FILE
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def _properties(self) -> Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},"
            f"CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            **self.settings,
        }
        path = self.dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _java(self, main: str, *args: str, heap: str) -> list[str]:
        return [
            shutil.which("java") or "java",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            # The broker logs to the console, which goes to server.log in the folder.
            f"-Dlog4j.configuration={(POM_DIR / 'log4j.properties').as_uri()}",
            "-cp",
            classpath(),
            main,
            *args,
        ]

    def _format(self, properties: Path) -> None:
        """Format the storage folder once (``kafka-storage format``)."""
        if (self.data_dir / "meta.properties").exists():
            return
        cmd = self._java(
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={self.cluster_id}",  # one word: an id may start with "-"
            f"--config={properties}",
            heap="256m",
        )
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            raise BrokerStartError(
                f"formatting the KRaft storage failed:\n{done.stdout}{done.stderr}"
            )
        state = {
            "port": self.port,
            "controller_port": self.controller_port,
            "cluster_id": self.cluster_id,
        }
        (self.dir / STATE_FILE).write_text(json.dumps(state))

    def start(self, *, timeout: float = 120.0) -> str:
        """Format (first start only), start the broker and wait until it answers a metadata
        request with itself as a live broker; returns the bootstrap."""
        if self.process is not None:
            return self.bootstrap
        properties = self._properties()
        self._format(properties)
        with self.server_log.open("ab") as out:
            log_from = out.tell()
            self.process = subprocess.Popen(  # noqa: S603 - fixed arguments
                self._java("kafka.Kafka", str(properties), heap=self.heap),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us; we stop it
            )
        self.starts += 1
        try:
            self._wait_ready(timeout, log_from)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def _wait_ready(self, timeout: float, log_from: int) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise BrokerStartError(f"the broker exited at start:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise BrokerStartError(f"the broker did not answer in {timeout:g}s:\n{self.tail()}")
            if self._started(log_from) and _port_open(self.host, self.port):
                return
            time.sleep(0.2)

    def _started(self, log_from: int) -> bool:
        """The broker logged that it started, after ``log_from`` (the log's size when this
        start began). The listener accepts connections before the broker is registered
        and unfenced; the line comes after both."""
        with self.server_log.open("rb") as f:
            f.seek(log_from)
            return READY_LINE in f.read()

    def tail(self, lines: int = 30) -> str:
        """The last lines of the broker's own log (for error messages)."""
        try:
            return "\n".join(self.server_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self, *, timeout: float = 60.0) -> None:
        """Stop the broker cleanly (SIGTERM: a controlled shutdown that flushes the log),
        SIGKILL after ``timeout`` seconds. The storage folder is kept."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def kill(self) -> None:
        """Stop the broker at once (SIGKILL), as a crash would; the storage folder is kept."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def restart(self, *, timeout: float = 120.0) -> str:
        """Stop the broker cleanly and start it again on the same storage folder and port."""
        self.stop()
        return self.start(timeout=timeout)

    def close(self) -> None:
        """Stop the broker; remove the storage folder if this object made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> str:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
