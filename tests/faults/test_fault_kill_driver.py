"""kill -9 of the spark-submitted driver at random moments, then a clean run.

Each round feeds a slice of a seeded history (with a few undecodable records
that must be dead-lettered), starts the real job (``python -m
cdc_iceberg.submit``, as ``make drain`` does) and SIGKILLs its whole process
group (wrapper, spark-submit JVM, Python driver) at a moment drawn from a
seeded RNG: during start-up, or after the k-th batch plus a random part of a
batch, which lands in the middle of a scan, a MERGE, an Iceberg commit, a
checkpoint write or a group commit. After the last round a clean run drains
the rest; every invariant must hold and a rerun must change nothing.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from harness import describe, keep_output, kill_job, run_job, start_job, wait_job
from invariants import assert_rerun_changes_nothing, check_invariants, snapshot_ids
from support import send

from cdc_iceberg.generator import ArticleSource, Message
from cdc_iceberg.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(5400)]

SEED = 20260
# rounds end with a kill until this many kills (CDC_FAULT_KILLS: fewer for a quick look)...
KILLS = int(os.environ.get("CDC_FAULT_KILLS", "20"))
MAX_ROUNDS = KILLS + KILLS // 2  # ...or this many rounds (a round can finish before its moment)
PARTITIONS = 2
BATCH = 150  # max_offsets_per_trigger: many small batches, many moments to die in
NAME = "kill -9 of the driver at random moments"


def _junk(rng: random.Random) -> list[Message]:
    """Records the job must dead-letter, once each, whatever crashed while it did."""
    values = [b"{not json", b"[1, 2]", b'{"op": "u", "after": {"article_id": "x"}}']
    return [
        Message(b'{"article_id": "junk"}', rng.choice(values), rng.randrange(PARTITIONS))
        for _ in range(2)
    ]


def _kill_moment(rng: random.Random) -> tuple[str, int, float]:
    """(phase, batches to wait for, extra seconds) for one round."""
    if rng.random() < 0.25:
        return "start-up", 0, rng.uniform(1.0, 14.0)
    return "batch", rng.randint(0, 1), rng.uniform(0.0, 6.0)


def test_kill_driver_at_random_moments(
    pipeline: Settings,
    scenario_report: Any,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    scenario_report(
        name=NAME,
        injected=(
            f"SIGKILL of the job's process group at {KILLS} seeded random moments "
            f"(seed {SEED}), new data between rounds, then a clean run"
        ),
        invariants=["I1", "I2", "I3", "I4", "I5", "I6"],
    )
    started = time.monotonic()
    settings = pipeline.replace(max_offsets_per_trigger=BATCH)
    rng = random.Random(SEED)
    source = ArticleSource(seed=SEED % 1000, partitions=PARTITIONS)
    records = send(
        settings,
        source.random_history(600, 150, snapshot_rows=100, redelivery_share=0.02) + _junk(rng),
        PARTITIONS,
    )

    killed = finished = 0
    phases: list[str] = []
    for number in range(MAX_ROUNDS):
        if killed >= KILLS:
            break
        records += send(
            settings, source.random_history(100, 150, redelivery_share=0.02) + _junk(rng)
        )
        phase, batches, extra = _kill_moment(rng)
        job = start_job(settings)
        try:
            deadline = time.monotonic() + 300
            while job.running() and job.batches_done() < batches and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(extra)
        except BaseException:
            kill_job(job)  # never leave a driver behind (a timeout or an interrupt)
            raise
        if job.running():
            kill_job(job)
            out, err = job.output()
            job.close()
            keep_output(subprocess.CompletedProcess([], -9, out, err), tmp_path, f"round{number}")
            killed += 1
            phases.append(f"{phase}+{batches}")
        else:
            result = wait_job(job)
            keep_output(result, tmp_path, f"round{number}")
            assert result.returncode == 0, (
                f"round {number} (after kills {phases}) failed by itself: {describe(result)}"
            )
            finished += 1
            phases.append("finished")
    history = snapshot_ids(settings)

    final = run_job(settings)
    assert final.returncode == 0, describe(final)
    counts = check_invariants(settings, records, snapshots_before=history)
    assert_rerun_changes_nothing(settings, lambda: run_job(settings))

    duration = time.monotonic() - started
    counts.update(kills=killed, rounds_finished_before_kill=finished)
    scenario_report(name=NAME, counts=counts)
    with capsys.disabled():
        print(f"\n{NAME}: {duration:.0f} s, {killed} kills ({', '.join(phases)}), {counts}")
    assert killed >= KILLS, f"only {killed} kills in {len(phases)} rounds: {phases}"
