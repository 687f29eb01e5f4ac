"""The local servers' process handling (cdc_iceberg.local.process), on real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from cdc_iceberg.local import process

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"


def _start(pid_file: Path, code: str = "import time; time.sleep(60)") -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    pid_file.write_text(str(child.pid))
    return child


def test_a_running_server_is_found_and_stopped_by_sigterm(tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    assert process.running_pid(pid_file) is None  # no file
    child = _start(pid_file)
    assert process.running_pid(pid_file) == child.pid
    started = time.monotonic()
    process.stop(pid_file, timeout=10)
    assert not process.alive(child.pid)  # reaped by the stop: its status is gone with it
    assert time.monotonic() - started < 5, "SIGTERM ended it, no wait for the SIGKILL"
    assert not pid_file.exists()


def test_a_server_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    child = _start(pid_file, STUBBORN)
    time.sleep(0.5)  # its handler is in place
    started = time.monotonic()
    process.stop(pid_file, timeout=1, group=True)
    assert not process.alive(child.pid)
    assert 1 <= time.monotonic() - started < 10, "SIGKILL after the timeout"
    assert not pid_file.exists()


def test_an_exited_child_is_not_running_and_a_kill_leaves_the_file(tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    _start(pid_file, "pass")
    deadline = time.monotonic() + 10
    # a child that has exited is a zombie until reaped: not running all the same
    while process.running_pid(pid_file) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.running_pid(pid_file) is None
    pid_file.write_text("not a pid")
    assert process.running_pid(pid_file) is None

    child = _start(pid_file)
    process.kill(pid_file)
    assert not process.alive(child.pid)
    assert pid_file.exists()  # what a crash leaves behind
    assert process.running_pid(pid_file) is None
