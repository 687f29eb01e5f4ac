"""The process side of the local servers: a pid file, whether it runs, stopping it.

Each server (``kafka_broker``, ``connect``, ``object_store``, ``rest_catalog``)
writes its process id to a pid file when it starts, so that ``status`` and
``down`` of a later command find it. A server this process started is its child:
once it exits it stays a zombie until reaped, and a zombie still answers
``kill(pid, 0)``, so every check here reaps first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def reap(pid: int) -> None:
    """Collect ``pid`` if it is a child of this process that has exited."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a child that has exited is reaped, and does not)."""
    reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def running_pid(pid_file: Path) -> int | None:
    """The process ``pid_file`` names, if it runs."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to end; whether it did."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def stop(pid_file: Path, timeout: float, *, group: bool = False) -> None:
    """Stop the process ``pid_file`` names, if it runs, and remove the file.

    SIGTERM first (a server shuts down cleanly), SIGKILL if it still runs after
    ``timeout`` seconds. With ``group``, the signals go to the process group the
    server leads (started with ``start_new_session``), its children included.
    """
    pid = running_pid(pid_file)
    if pid is not None:
        send = os.killpg if group else os.kill
        with contextlib.suppress(ProcessLookupError):
            send(pid, signal.SIGTERM)
        if not wait_gone(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                send(pid, signal.SIGKILL)
            wait_gone(pid, 10.0)
    pid_file.unlink(missing_ok=True)


def kill(pid_file: Path) -> None:
    """``kill -9`` of the process ``pid_file`` names, if it runs; wait until it is gone.

    The file stays: what a crash leaves behind, for fault tests."""
    pid = running_pid(pid_file)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 10.0)
