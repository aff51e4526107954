"""One Annoy shard per job: the build itself, and running jobs in worker processes.

A worker is a fresh interpreter, ``python -P -m ledger.artifacts.shard_worker``, started
with :mod:`subprocess`: it imports nothing of the caller's (no ``__main__`` re-import, so a
script without an ``if __name__ == "__main__":`` guard runs once) and nothing of it is
pickled. The protocol, per shard:

1. the shard's vectors are in its input file (raw float32 rows in item order, see
   :mod:`ledger.artifacts.shard_inputs`; the worker reads it in chunks); the parent
   starts the worker with stdin and stdout pipes to itself and stderr to ``<stem>.log``
   in staging, so that a worker never holds the parent's own stdout/stderr (a wrapper
   waiting for their end of file would wait for orphans);
2. the parent writes the job (:class:`ShardJob`) as one JSON line on the worker's stdin and
   keeps stdin open: its end of file tells the worker that the parent is gone;
3. the worker builds the shard and prints ``{"sha256": ...}``; the parent reads it, reaps
   the worker, deletes the input and the log. A failed worker's last stderr line becomes
   the :class:`ArtifactError`; the other workers are killed and reaped.

Workers die with their parent: each watches its stdin (and, on Linux, has the kernel send
it SIGKILL when the parent dies). The parent kills and reaps its workers on any exception,
and :func:`sigterm_raises` turns a SIGTERM into one, so that a terminated build also
removes its staging folder.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Literal, cast

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

from ledger.artifacts.manifest import fsync_path, remember_sha256, sha256_file
from ledger.errors import ArtifactError

#: The module a worker process runs (``python -P -m`` it).
WORKER_MODULE = "ledger.artifacts.shard_worker"

Vectors = npt.NDArray[np.float32]
_READ_ROWS = 4_096  # rows per read of a shard's input file (6 MB at 384-d)
AnnoyMetric = Literal["angular", "euclidean", "dot"]


@dataclass(frozen=True, slots=True)
class ShardParams:
    """What every shard of an artifact is built with (Annoy's parameters)."""

    dimension: int
    metric: str
    trees: int
    seed: int


@dataclass(frozen=True, slots=True)
class ShardJob:
    """One shard for a worker: its vectors (``.npy``, item order), where to write the index."""

    input_path: str
    output_path: str
    params: ShardParams

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ShardJob:
        data = json.loads(raw)
        return cls(data["input_path"], data["output_path"], ShardParams(**data["params"]))


def build_shard_file(input_path: Path, output: Path, params: ShardParams) -> str:
    """Build one shard from its input file (raw float32 rows, item order) with n_jobs=1;
    fsync, rename into place; its sha256.

    The index is built in its file (Annoy's ``on_disk_build``): its nodes live in a file
    mapping that the kernel can write back, not in anonymous memory, and the bytes are the
    ones an in-memory build would save. The input is read in chunks, not memory-mapped, so
    it never counts in the worker's resident memory.
    """
    index = AnnoyIndex(params.dimension, cast(AnnoyMetric, params.metric))
    index.set_seed(params.seed)
    tmp = output.with_name(output.name + ".tmp")
    index.on_disk_build(str(tmp))
    chunk = np.empty((_READ_ROWS, params.dimension), dtype="<f4")
    item = 0
    with input_path.open("rb", buffering=0) as f:
        while size := f.readinto(chunk.data):
            if size % (4 * params.dimension):
                raise ArtifactError(f"{input_path.name} does not hold whole rows")
            # Rows as array('f'): Annoy reads them 2x faster than lists of floats (the float
            # objects cost more than the adding) and 2x faster than numpy rows (measured, 384-d).
            for row in chunk[: size // (4 * params.dimension)]:
                index.add_item(item, array("f", row.tobytes()))
                item += 1
    index.build(params.trees, n_jobs=1)
    index.unload()
    fsync_path(tmp)
    os.replace(tmp, output)
    return sha256_file(output)


# -- the parent's side ------------------------------------------------------------------------


@dataclass(eq=False)
class _Worker:
    name: str
    proc: subprocess.Popen[bytes]
    input_path: Path
    log_path: Path
    output_path: Path

    @property
    def stdout(self) -> IO[bytes]:
        return cast(IO[bytes], self.proc.stdout)  # Popen(stdout=PIPE)


def _worker_env() -> dict[str, str]:
    # The worker imports from this process's sys.path (made absolute; -P keeps the worker's
    # cwd out): the same ledger, a source checkout too, as multiprocessing would give it.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in sys.path if isinstance(p, str))
    return env


def _start(staging: Path, name: str, input_path: Path) -> _Worker:
    log_path = staging / f"{Path(name).stem}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - this interpreter, a module of ours, no shell
            [sys.executable, "-P", "-m", WORKER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=_worker_env(),
        )
    return _Worker(name, proc, input_path, log_path, staging / name)


def _send(worker: _Worker, params: ShardParams) -> None:
    job = ShardJob(str(worker.input_path.resolve()), str(worker.output_path.resolve()), params)
    stdin = cast(IO[bytes], worker.proc.stdin)  # Popen(stdin=PIPE)
    try:
        stdin.write(job.to_json() + b"\n")
        stdin.flush()
    except BrokenPipeError:
        pass  # it died at start: _finish reports its exit code and log


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(nothing on stderr)"


def _finish(worker: _Worker) -> str:
    """Reap a worker whose stdout is readable (it printed its result, or it died); sha256."""
    out = worker.stdout.read()  # to end of file: the worker has exited or is exiting
    code = worker.proc.wait()
    _close(worker)
    try:
        digest = str(json.loads(out)["sha256"]) if code == 0 else None
    except (ValueError, KeyError, TypeError):
        digest = None
    if digest is None:
        raise ArtifactError(
            f"building {worker.name} failed in its worker process (exit {code}): "
            f"{_last_line(worker.log_path)}"
        )
    worker.input_path.unlink()
    worker.log_path.unlink()
    remember_sha256(worker.output_path, digest)  # verify needs not read it again
    return digest


def _close(worker: _Worker) -> None:
    for pipe in (worker.proc.stdin, worker.proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except BrokenPipeError:
                pass  # the worker is gone; nothing was left to send


def _stop(worker: _Worker) -> None:
    if worker.proc.poll() is None:
        worker.proc.kill()  # it holds nothing the parent needs: the staging folder goes anyway
    worker.proc.wait()
    _close(worker)


def build_in_workers(
    staging: Path, shards: Iterable[tuple[str, Path]], params: ShardParams, *, workers: int
) -> dict[str, str]:
    """Build each ``(file name, input file)`` of ``shards`` into ``staging``, at most
    ``workers`` processes at a time; sha256 by file name. A worker deletes nothing: the
    parent removes a shard's input once its worker is done.

    On any exception (a failed worker, :class:`Terminated`, KeyboardInterrupt) the running
    workers are killed and reaped before it propagates.

    Example:
        >>> build_in_workers(staging, [("shard-0000.ann", in0), ("shard-0001.ann", in1)],
        ...                  ShardParams(32, "angular", 50, 1), workers=2)  # doctest: +SKIP
        {'shard-0000.ann': '9c1e...', 'shard-0001.ann': '04ab...'}
    """
    pending = iter(shards)
    running: list[_Worker] = []
    digests: dict[str, str] = {}
    try:
        with selectors.DefaultSelector() as ready:
            while True:
                while len(running) < workers and (shard := next(pending, None)) is not None:
                    worker = _start(staging, *shard)
                    running.append(worker)  # first: from here on, an exception stops it
                    ready.register(worker.stdout, selectors.EVENT_READ, worker)
                    _send(worker, params)
                if not running:
                    return digests
                for key, _ in ready.select():
                    done = cast(_Worker, key.data)
                    ready.unregister(key.fileobj)
                    running.remove(done)
                    digests[done.name] = _finish(done)
    finally:
        for worker in running:
            _stop(worker)


# -- SIGTERM ----------------------------------------------------------------------------------


class Terminated(BaseException):
    """SIGTERM arrived while :func:`sigterm_raises` was active (a BaseException, so that
    ``except Exception`` on the way up does not swallow it)."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the block runs, the first SIGTERM raises :class:`Terminated` (so the build kills
    its workers and removes its staging folder); then the previous handler is back. The
    caller re-sends the signal once it has cleaned up (:func:`resend_sigterm`).

    Python can set handlers only in the main thread; elsewhere, or when SIGTERM is ignored or
    handled outside Python, the block runs as is (workers still die with the process).
    """
    previous = signal.getsignal(signal.SIGTERM)
    in_main = threading.current_thread() is threading.main_thread()
    if not in_main or not (previous == signal.SIG_DFL or callable(previous)):
        yield
        return
    state = {"armed": True, "received": False}

    def handler(signum: int, frame: FrameType | None) -> None:
        first = not state["received"]
        state["received"] = True
        if first and state["armed"]:
            raise Terminated

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        state["armed"] = False
        # signal.signal runs a pending handler first: a SIGTERM that arrived as the block
        # ended is recorded (not raised) and re-sent below, never lost.
        signal.signal(signal.SIGTERM, previous)
    if state["received"]:
        resend_sigterm()


def resend_sigterm() -> None:
    """Send SIGTERM to this process again, to the handler :func:`sigterm_raises` restored: by
    default the process ends here, killed by the signal, as it would have without us."""
    os.kill(os.getpid(), signal.SIGTERM)
