"""The rollback lock of each model: one holder at a time, across processes."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from ledger.artifacts.manifest import path_part
from ledger.errors import RollbackInProgress

LOCKS_DIR = "locks"


@contextlib.contextmanager
def flock(path: Path, *, blocking: bool) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> tuple[int | None, str | None]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return int(data["pid"]), str(data["since"])
    except (ValueError, KeyError, TypeError, OSError):
        return None, None  # the holder has not written its name yet; say "unknown"


@contextlib.contextmanager
def rollback_lock(home: Path | str, model: str) -> Iterator[Path]:
    """Hold ``model``'s rollback lock for the ``with`` block; yields the lock file.

    Non-blocking: if another holder (process or open file) has it,
    :class:`RollbackInProgress` names its pid. The kernel drops the lock when the holder
    dies, so a crash never leaves a model locked.

    Example:
        >>> with rollback_lock(".ledger", "embedder"):  # doctest: +SKIP
        ...     ...  # plan, rebuild, verify, switch
    """
    path = Path(home) / LOCKS_DIR / f"{path_part(model)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _locked(path, model)
    try:
        os.ftruncate(fd, 0)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": since}).encode(), 0)
        yield path
    finally:
        # Remove the file while still holding the lock, so no lock file outlives its use
        # (e.g. for a model name that turned out not to exist). A contender that opened
        # the old file meanwhile finds it unlinked after locking and opens the path again.
        path.unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _locked(path: Path, model: str) -> int:
    """An open descriptor of ``path`` holding its exclusive lock (non-blocking)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, since = _holder(fd)
            os.close(fd)
            who = f"pid {pid}, since {since}" if pid is not None else "pid unknown"
            raise RollbackInProgress(
                f"a rollback of model {model!r} is already running ({who}); wait for it to "
                f"finish (lock {path})",
                pid=pid,
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass  # the holder removed it as we locked: try the new file
        os.close(fd)


@contextlib.contextmanager
def rollback_locks(home: Path | str, models: Iterable[str]) -> Iterator[None]:
    """Hold the rollback lock of every model in ``models`` for the ``with`` block, taken in
    sorted order, so two holders of overlapping model sets cannot deadlock."""
    with contextlib.ExitStack() as stack:
        for model in sorted(set(models)):
            stack.enter_context(rollback_lock(home, model))
        yield
