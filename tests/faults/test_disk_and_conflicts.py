"""Storage-side faults while the real drain runs: the warehouse disk fills up, and another
writer commits to the live table during the drain's MERGEs.

The drain is spark-submitted in its own process (``harness.start_job``); the
fault is injected once it has committed its first batch. A drain that fails
must name its error and leave the table equal to the fold of the offsets it
records; the rerun on healed storage is exact (``invariants.check_invariants``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import kill_job, start_job, wait_job
from infra import assert_still_running, named_error, own_pipeline, settle, wait_for_batches
from invariants import snapshot_ids
from reference_fold import Record
from support import send

from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.settings import Settings

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ALL = ["I1", "I2", "I3", "I4", "I5"]
# how a maintenance step that lost a race to a concurrent commit fails
_LOST_RACE = re.compile(
    r"ValidationException|CommitFailedException|conflict|kept landing", re.IGNORECASE
)


def _history(settings: Settings, seed: int, events: int = 800) -> list[Record]:
    source = ArticleSource(seed=seed, partitions=2)
    messages = source.random_history(events, 150, snapshot_rows=60, redelivery_share=0.03)
    return send(settings, messages, 2)


# -- the warehouse disk fills up -------------------------------------------------


@pytest.fixture
def small_disk(work_dir: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs mounted for the scenario, unmounted at its end."""
    mount_point = work_dir / f"small-disk-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(
            "the disk-full scenario mounts a small tmpfs as the warehouse, and mounting "
            f"is not permitted here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}"
        )
    try:
        yield mount_point
    finally:
        for attempt in range(10):
            if subprocess.run(["umount", str(mount_point)], check=False).returncode == 0:
                break
            time.sleep(1 + attempt)
        else:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
        with contextlib.suppress(OSError):
            mount_point.rmdir()


def fill_disk(directory: Path) -> int:
    """Write a file until the file system has no block left; returns the bytes written."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    written = 0
    try:
        for size in (1 << 20, 1 << 12):
            block = b"\0" * size
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written


def test_warehouse_disk_full_mid_drain(
    small_disk: Path,
    catalog_settings: Settings,
    kafka_broker: Any,
    work_dir: Path,
    scenario_report: Callable[..., None],
) -> None:
    name = "Iceberg warehouse disk full mid-drain"
    scenario_report(
        name=name,
        injected=(
            "the warehouse is a 64 MiB tmpfs; after the drain's first batch a file fills "
            "it to the last block; freed before the rerun"
        ),
        invariants=ALL,
    )
    # the catalog stays on the ordinary disk: only the warehouse fills up
    base = catalog_settings.replace(
        iceberg_catalog_uri=f"sqlite:///{work_dir}/catalog-{small_disk.name}.db",
        iceberg_warehouse=f"file://{small_disk}",
    )
    settings = own_pipeline(
        base, work_dir, kafka_broker.bootstrap_servers, max_offsets_per_trigger=150
    )
    records = _history(settings, seed=81)

    job = start_job(settings)
    try:
        batches_before = wait_for_batches(job, 1)
        assert_still_running(job, batches_before)
        before = snapshot_ids(settings)
        filled = fill_disk(small_disk)
        first = wait_job(job, timeout=1500)
    except BaseException:
        kill_job(job)
        raise
    assert first.returncode != 0, (
        "the drain went on although the warehouse was full:\n" + first.stderr[-3000:]
    )

    def free_space() -> None:
        (small_disk / "filler").unlink()

    counts = settle(
        settings,
        records,
        first,
        before,
        expected_error="No space left on device",
        before_rerun=free_space,
    )
    scenario_report(
        name=name,
        counts={"batches before fault": batches_before, "filler MiB": filled >> 20, **counts},
    )


# -- another writer commits during the MERGE ------------------------------------


class MaintenanceLoop:
    """The maintenance job's steps, run again and again on the live pipeline's tables.

    Every round compacts the live table (rewrite data files folding deletes,
    rewrite manifests); every third round runs the whole sequence of
    ``jobs/iceberg_maintenance.py``: prune tombstones, compact the three tables,
    restamp progress, expire snapshots. Each step is a commit that can land
    between the start and the commit of one of the drain's MERGEs.
    """

    def __init__(self, spark: Any, settings: Settings, max_rounds: int = 300) -> None:
        self.spark = spark
        self.settings = settings
        self.max_rounds = max_rounds
        self.rounds = 0
        self.rewritten_files = 0
        self.failures: list[str] = []
        self.done: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="maintenance-loop", daemon=True)

    def _run(self) -> None:
        from jobs.iceberg_maintenance import (
            expire_and_clean,
            maintain_table,
            prune_tombstones,
            restamp_progress,
        )
        from jobs.iceberg_tables import IcebergTables

        tables = IcebergTables.declared(self.spark, self.settings)
        names = (tables.live, tables.tombstones, tables.dlq)
        while not self.stop.is_set() and self.rounds < self.max_rounds:
            self.rounds += 1
            # the live table's compaction every round (the commit that races the MERGE),
            # the whole maintenance sequence every third round
            steps: list[tuple[str, Callable[[], Any]]] = [
                ("compact", lambda: maintain_table(self.spark, self.settings, tables.live))
            ]
            if self.rounds % 3 == 0:
                steps = [
                    (
                        "prune",
                        lambda: prune_tombstones(
                            self.spark, tables, self.settings.tombstone_retention_hours
                        ),
                    ),
                    *[
                        ("compact", lambda t=t: maintain_table(self.spark, self.settings, t))
                        for t in names
                    ],
                    ("restamp", lambda: restamp_progress(tables)),
                    *[
                        ("expire", lambda t=t: expire_and_clean(self.spark, self.settings, t))
                        for t in names
                    ],
                ]
            for label, step in steps:
                if self.stop.is_set():
                    return
                try:
                    report = step()
                except Exception as error:  # a lost race is the maintenance's to retry
                    self.failures.append(named_error(str(error)) or str(error)[:200])
                    if label == "restamp":
                        break  # as the maintenance job: no expiry without the progress record
                    continue
                self.done[label] += 1
                if isinstance(report, dict):
                    self.rewritten_files += int(report.get("rewritten_files", 0))
            self.stop.wait(1.0)

    def __enter__(self) -> MaintenanceLoop:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=600)


def test_maintenance_commits_during_the_drain(
    spark: Any,
    pipeline: Settings,
    scenario_report: Callable[..., None],
) -> None:
    name = "maintenance commits to the live table during the drain's MERGEs"
    scenario_report(
        name=name,
        injected=(
            "while the drain runs, a loop compacts the live table (rewrite data files, "
            "min 2 inputs, fold deletes; rewrite manifests) and every third round runs the "
            "whole maintenance job: prune tombstones, compact all tables, restamp progress, "
            "expire snapshots older than now"
        ),
        invariants=ALL,
    )
    # expiry keeps the pipeline's own snapshots: the checks read every batch's summary
    settings = pipeline.replace(
        max_offsets_per_trigger=150,
        maintenance_snapshot_retention_hours=0,
        maintenance_retain_last=1000,
    )
    records = _history(settings, seed=82, events=1000)

    job = start_job(settings)
    try:
        assert_still_running(job, wait_for_batches(job, 1))
        with MaintenanceLoop(spark, settings) as loop:
            first = wait_job(job, timeout=1200)
    except BaseException:
        kill_job(job)
        raise
    retried = len(re.findall(r"commit conflict", first.stderr))
    assert first.returncode == 0, (
        f"the drain failed on a concurrent commit ({named_error(first.stderr)}):\n"
        + first.stderr[-4000:]
    )
    # maintenance may lose a race to the drain's commit, but never fail on its own
    not_races = [f for f in loop.failures if not _LOST_RACE.search(f)]
    assert not not_races, not_races
    assert loop.done["prune"] and loop.done["expire"], loop.done
    counts = settle(settings, records, first)
    scenario_report(
        name=name,
        counts={
            "maintenance rounds": loop.rounds,
            "maintenance steps completed": sum(loop.done.values()),
            "files rewritten": loop.rewritten_files,
            "maintenance steps that lost a race": len(loop.failures),
            "maintenance errors": "; ".join(sorted(set(loop.failures)))[:300],
            "drain commits retried": retried,
            **counts,
        },
    )
