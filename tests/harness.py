"""Running the real job for fault scenarios: spark-submit in a process group of its own.

``start_job`` launches ``python -m cdc_iceberg.submit`` (what ``make drain``
runs) in a new session, so the wrapper, the spark-submit JVM and the Python
driver form one process group that ``kill_job`` can SIGKILL at once, the way
a lost machine or an OOM killer ends a driver.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cdc_iceberg.settings import PROJECT_ROOT, Settings
from cdc_iceberg.spark_conf import spark_env


@dataclass
class Job:
    process: subprocess.Popen[bytes]
    stdout: IO[bytes]
    stderr: IO[bytes]
    started: float

    def output(self) -> tuple[str, str]:
        texts = []
        for handle in (self.stdout, self.stderr):
            handle.flush()
            handle.seek(0)
            texts.append(handle.read().decode(errors="replace"))
        return texts[0], texts[1]

    def batches_done(self) -> int:
        """Batches the driver has reported so far (read without moving the file)."""
        fd = self.stdout.fileno()
        text = os.pread(fd, os.fstat(fd).st_size, 0)
        return text.count(b'"event": "cdc_batch"')

    def running(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        self.stdout.close()
        self.stderr.close()


def job_env(settings: Settings, failpoint: str = "") -> dict[str, str]:
    env = spark_env()
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.update(settings.replace(failpoint=failpoint).to_env())
    return env


def start_job(settings: Settings, failpoint: str = "", args: list[str] | None = None) -> Job:
    """spark-submit one drain in its own process group; output goes to temp files."""
    stdout = tempfile.TemporaryFile()  # noqa: SIM115 (closed by Job.close)
    stderr = tempfile.TemporaryFile()  # noqa: SIM115
    command = [sys.executable, "-m", "cdc_iceberg.submit"]
    if args:
        command += ["--", *args]
    process = subprocess.Popen(
        command,
        env=job_env(settings, failpoint),
        cwd=PROJECT_ROOT,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )
    return Job(process, stdout, stderr, time.monotonic())


def kill_job(job: Job) -> None:
    """SIGKILL every process of the job's group, then reap the wrapper."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(job.process.pid, signal.SIGKILL)
    job.process.wait(timeout=60)
    _wait_group_gone(job.process.pid)


def _wait_group_gone(pgid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    raise AssertionError(f"processes of group {pgid} outlived the job by {timeout}s")


def wait_job(job: Job, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Wait for the job to end by itself (killed if it overruns ``timeout``)."""
    try:
        job.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_job(job)
        out, err = job.output()
        job.close()
        raise AssertionError(f"job still running after {timeout}s: {err[-3000:]}") from None
    _wait_group_gone(job.process.pid)
    out, err = job.output()
    job.close()
    return subprocess.CompletedProcess(job.process.args, job.process.returncode, out, err)


def run_job(
    settings: Settings, failpoint: str = "", args: list[str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """spark-submit one drain and wait for it (output captured)."""
    return wait_job(start_job(settings, failpoint, args), timeout)


def batch_lines(stdout: str) -> list[dict[str, object]]:
    """The per-batch JSON metrics lines a run printed."""
    import json

    out = []
    for line in stdout.splitlines():
        if line.startswith("{") and '"batch_id"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def describe(result: subprocess.CompletedProcess[str], limit: int = 6000) -> str:
    """A failed run for an assertion message: exit code, errors and the end of each stream."""
    interesting = [
        line
        for line in (result.stdout + "\n" + result.stderr).splitlines()
        if any(m in line for m in ("Error", "Exception", "Traceback", "ERROR", "failpoint"))
        and " WARN " not in line
    ]
    return (
        f"exit code {result.returncode}\n--- errors ---\n"
        + "\n".join(interesting[-40:])[-limit:]
        + "\n--- stdout ---\n"
        + result.stdout[-limit:]
        + "\n--- stderr ---\n"
        + result.stderr[-limit:]
    )


def keep_output(result: subprocess.CompletedProcess[str], directory: Path, name: str) -> None:
    """Save a run's output for a post-mortem (the test's temp directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.stdout").write_text(result.stdout)
    (directory / f"{name}.stderr").write_text(result.stderr)


def processes_with_env(key: str, value: str) -> list[int]:
    """Pids of live processes (other than this one) started with ``key=value``."""
    wanted = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


def checkpoint_root(settings: Settings) -> Path:
    return Path(settings.checkpoint_location)
