"""A shard worker process: ``python -P -m ledger.artifacts.shard_worker``.

Reads one :class:`~ledger.artifacts.shard_jobs.ShardJob` as a JSON line on stdin, builds
the shard, prints ``{"sha256": ...}`` on stdout and exits 0 (a failure: traceback on
stderr, exit 1). :mod:`ledger.artifacts.shard_jobs` describes the protocol; nothing
imports this module, so ``-m`` runs it once.

It dies with its parent, which never has to be there to stop it:
1. on Linux, first of all, the kernel is asked to SIGKILL it when the parent dies
   (PR_SET_PDEATHSIG): immediate, even while Annoy builds;
2. everywhere, a thread reads stdin to its end after the job: the parent holds the only
   write end and never closes it before the result, so end of file means the parent is
   gone (or gave up), and the worker exits at once. Annoy's build releases the GIL, so
   the thread runs during it. A parent that died before sending the job gives an empty
   first line: exit.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
from pathlib import Path

from ledger.artifacts.shard_jobs import ShardJob, build_shard_file

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
#: Exit code of a worker whose parent went away (nobody reads it: for ``ps`` and tests).
EXIT_ORPHANED = 3


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0)
    except (OSError, AttributeError):
        pass  # no prctl in this libc: the stdin watch (step 2) still ends the worker


def _exit_at_end_of_stdin() -> None:
    # The file descriptor, not sys.stdin: a daemon thread blocked in a buffered reader holds
    # its lock, and the interpreter aborts when it meets that lock at shutdown.
    while os.read(sys.stdin.fileno(), 1 << 16):
        pass
    os._exit(EXIT_ORPHANED)  # at once: the parent (and its staging folder) are gone


def main() -> int:
    _die_with_parent()
    line = sys.stdin.buffer.readline()
    if not line:
        return EXIT_ORPHANED
    job = ShardJob.from_json(line)
    threading.Thread(target=_exit_at_end_of_stdin, name="parent-watch", daemon=True).start()
    digest = build_shard_file(Path(job.input_path), Path(job.output_path), job.params)
    sys.stdout.write(json.dumps({"sha256": digest}) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
