"""Helpers of the infrastructure fault scenarios (broker, network, disk, concurrent commits).

The scenarios run the real drain with ``harness.start_job`` and inject their
fault while it runs; these helpers watch its progress without disturbing its
output, give a scenario a pipeline of its own, and settle a run that either
completed or failed: a failed run must have failed cleanly (an error named, the
table consistent with the offsets it records), and the rerun must be exact.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

from harness import Job, batch_lines, run_job
from invariants import check_invariants
from reference_fold import Record

from cdc_iceberg.settings import Settings


def free_port_pair() -> int:
    """A loopback port ``p`` with ``p + 1`` free too (broker and controller listeners)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 1 >= 65000:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of loopback ports")


def own_pipeline(
    base: Settings, work_dir: Path, bootstrap: str | None = None, **changes: Any
) -> Settings:
    """A pipeline of its own (topic, tables, group, checkpoint), optionally on another broker."""
    name = "f" + uuid.uuid4().hex[:10]
    if bootstrap is not None:
        changes["kafka_bootstrap_servers"] = bootstrap
    return base.replace(
        kafka_topic=f"neuronews.public.{name}",
        kafka_consumer_group=f"group_{name}",
        iceberg_table=f"neuronews.{name}",
        checkpoint_location=str(work_dir / "checkpoints" / name),
        **changes,
    )


def stdout_so_far(job: Job) -> str:
    """What the running job printed so far (read without moving its write position)."""
    fd = job.stdout.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


def stderr_so_far(job: Job) -> str:
    fd = job.stderr.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


def wait_for_batches(job: Job, count: int, timeout: float = 600) -> int:
    """Wait until the job reported ``count`` committed batches (or ended); returns how many."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        seen = len(batch_lines(stdout_so_far(job)))
        if seen >= count or job.process.poll() is not None:
            return seen
        time.sleep(0.5)
    raise AssertionError(
        f"the drain reported {seen} batches in {timeout}s, waited for {count}; "
        f"its output so far:\n{stdout_so_far(job)[-2000:]}\n{stderr_so_far(job)[-4000:]}"
    )


def assert_still_running(job: Job, batches: int) -> None:
    """The fault lands mid-drain: the job has committed ``batches`` and is still running."""
    assert batches >= 1, "the drain committed no batch"
    assert job.process.poll() is None, (
        f"the drain ended after {batches} batches, before the fault could be injected: "
        "give it more records"
    )


_ERROR = re.compile(r"\b([A-Za-z_][\w.$]*(?:Exception|Error))\b:? ?([^\n]{0,240})")


def named_error(text: str) -> str:
    """The first exception named in a job's output (``Class: message``), or ''."""
    found = _ERROR.search(text)
    return f"{found.group(1)}: {found.group(2)}".strip(": ") if found else ""


def settle(
    settings: Settings,
    records: Sequence[Record],
    first: CompletedProcess[str],
    snapshots_before: Sequence[Any] | None = None,
    *,
    expected_error: str | None = None,
    before_rerun: Callable[[], None] | None = None,
    rerun_timeout: float = 1500,
) -> dict[str, Any]:
    """Check a drain that ran through a fault, rerun it if it failed, check it is exact.

    A failed drain must name its error (``expected_error`` is a regular
    expression it must match, when given) and leave the table equal to the fold
    of the offsets it records. ``before_rerun`` heals what the fault broke. The
    rerun must
    succeed and leave the table equal to the fold of the whole topic.
    """
    counts: dict[str, Any] = {}
    if first.returncode == 0:
        counts["fault run"] = "completed"
    else:
        text = first.stderr + first.stdout
        error = named_error(text)
        counts["fault run"] = f"failed (exit {first.returncode})"
        counts["error"] = error[:200]
        assert error, f"the drain failed without naming an error:\n{text[-3000:]}"
        if expected_error is not None:
            assert re.search(expected_error, text), (
                f"the drain failed, but not with {expected_error!r}:\n{text[-3000:]}"
            )
        partial = check_invariants(settings, records, snapshots_before, complete=False)
        counts["committed before rerun"] = partial["committed_records"]
        if before_rerun is not None:
            before_rerun()
        rerun = run_job(settings, timeout=rerun_timeout)
        assert rerun.returncode == 0, f"the rerun failed:\n{rerun.stderr[-4000:]}"
    counts.update(check_invariants(settings, records, snapshots_before))
    return counts
