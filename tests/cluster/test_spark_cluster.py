"""A Spark standalone cluster: the drain stays exact with its executors in the workers.

A master and two workers (1 core, 1 GiB each) run on loopback as plain
processes, started here and stopped at the end (``SparkCluster`` in
``cdc_iceberg/local/spark_cluster.py``). The drain is spark-submitted to
``spark://127.0.0.1:<port>`` in client mode in its own process: the driver runs
here, every task runs in an executor a worker started. The workers start with
a clean environment, and the executors' Python (``SPARK_EXECUTOR_PYTHON``) is
the bare interpreter, without site-packages: it sees what Spark ships it and
nothing of the project, as on a machine that has only Spark and Python. Faults
land after the drain's first committed batch; every check is against the
reference fold of the records sent (``tests/invariants.py``). The drain on the
cluster runs in ``make test``; the two fault scenarios, several drains each,
run in ``make test-faults``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import batch_lines, describe, kill_job, run_job, start_job, wait_job
from infra import (
    assert_still_running,
    free_port_pair,
    own_pipeline,
    settle,
    wait_for_batches,
)
from invariants import check_invariants, snapshot_ids
from reference_fold import Record
from support import send

from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.local.spark_cluster import SparkCluster, spark_home
from cdc_iceberg.settings import Settings

pytestmark = pytest.mark.integration

PARTITIONS = 2
WORKERS = 2


def cluster_cli(command: str, data_dir: Path, master: str) -> subprocess.CompletedProcess[str]:
    """``python -m cdc_iceberg.local.spark_cluster <command>``, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "cdc_iceberg.local.spark_cluster", command, "--data-dir", data_dir],
        env={**os.environ, "SPARK_MASTER": master},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture(scope="module")
def cluster(work_dir: Path) -> Iterator[SparkCluster]:
    """The cluster, brought up and down with the command line a user runs."""
    data_dir = work_dir / "spark-cluster"
    master = f"spark://127.0.0.1:{free_port_pair()}"
    nodes: SparkCluster | None = None
    try:
        up = cluster_cli("up", data_dir, master)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"export SPARK_MASTER={master}" in up.stdout
        status = cluster_cli("status", data_dir, master)
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"running, {WORKERS} workers ALIVE" in status.stdout
        nodes = SparkCluster.load(data_dir)
        assert nodes is not None and nodes.master_url == master
        yield nodes
    finally:
        try:
            down = cluster_cli("down", data_dir, master)
            recorded = SparkCluster.load(data_dir)
            status = cluster_cli("status", data_dir, master)
        finally:
            if nodes is not None:
                nodes.stop()  # reaps a worker this process restarted
            shutil.rmtree(data_dir, ignore_errors=True)
    # after the cleanup, and only when the tests passed: a failure here hides none
    assert down.returncode == 0, down.stdout + down.stderr
    assert recorded is None or not recorded.pids, "down forgets the processes"
    assert status.returncode == 1, status.stdout


@pytest.fixture(scope="module")
def worker_python(work_dir: Path) -> str:
    """A Python for the executors that cannot import the project, but runs PySpark's workers."""
    path = work_dir / "worker-python" / "python"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')  # -S: no site-packages
    path.chmod(0o755)
    lib = spark_home() / "python" / "lib"
    shipped = os.pathsep.join(str(p) for p in sorted(lib.glob("*.zip")))  # what Spark ships
    clean = {"PATH": "/usr/bin:/bin", "PYTHONPATH": shipped}
    for module, importable in (("cdc_iceberg", False), ("jobs", False), ("pyspark.worker", True)):
        found = subprocess.run(
            [str(path), "-c", f"import {module}"],
            env=clean,
            cwd=path.parent,  # as an executor, away from the project
            capture_output=True,
            check=False,
        )
        assert (found.returncode == 0) == importable, (module, found.stderr.decode()[-500:])
    return str(path)


@pytest.fixture
def pipeline(
    cluster: SparkCluster,
    kafka_broker: Any,
    catalog_settings: Settings,
    work_dir: Path,
    worker_python: str,
) -> Settings:
    """A pipeline of its own, drained on the cluster in several batches."""
    return own_pipeline(
        catalog_settings,
        work_dir,
        kafka_broker.bootstrap_servers,
        spark_master=cluster.master_url,
        spark_executor_python=worker_python,
        max_offsets_per_trigger=100,
    )


def more(settings: Settings, source: ArticleSource, events: int) -> list[Record]:
    return send(settings, source.random_history(events, 100, snapshot_rows=20), PARTITIONS)


def applications(cluster: SparkCluster) -> set[str]:
    """Applications the workers have started executors for (their work directories)."""
    return {
        p.name
        for index in range(cluster.workers)
        if cluster.work_dir(index).is_dir()
        for p in cluster.work_dir(index).iterdir()
    }


def tasks_per_worker(cluster: SparkCluster, app_id: str) -> dict[int, int]:
    """Tasks the executors of each worker ran for ``app_id`` (from their stderr logs)."""
    return {
        index: sum(
            len(re.findall(r"Executor: Running task ", (e / "stderr").read_text(errors="replace")))
            for e in executors
            if (e / "stderr").is_file()
        )
        for index, executors in cluster.executor_dirs(app_id).items()
    }


def new_application(cluster: SparkCluster, before: set[str]) -> str:
    started = applications(cluster) - before
    assert len(started) == 1, f"expected one new application on the workers, found {started}"
    return started.pop()


def test_drain_runs_in_the_workers_of_the_cluster(
    cluster: SparkCluster, pipeline: Settings
) -> None:
    source = ArticleSource(seed=11, partitions=PARTITIONS)
    records = more(pipeline, source, 300)
    known = applications(cluster)

    result = run_job(pipeline, timeout=600)

    assert result.returncode == 0, describe(result)
    check_invariants(pipeline, records)
    app_id = new_application(cluster, known)
    tasks = tasks_per_worker(cluster, app_id)
    assert all(tasks[i] > 0 for i in range(cluster.workers)), (
        f"every worker's executor runs tasks of the drain: {tasks}"
    )


@pytest.mark.faults  # a fault scenario of several drains on the cluster: the long suite
def test_a_worker_killed_mid_batch_keeps_it_exact(
    cluster: SparkCluster, pipeline: Settings
) -> None:
    source = ArticleSource(seed=12, partitions=PARTITIONS)
    records = more(pipeline, source, 400)
    before = snapshot_ids(pipeline)
    known = applications(cluster)
    # a worker and its executor die (kill -9) while a batch runs
    job = start_job(pipeline)
    try:
        assert_still_running(job, wait_for_batches(job, 1))
        cluster.kill_worker(1)
        faulted = wait_job(job, timeout=600)
    except BaseException:
        kill_job(job)
        raise
    finally:
        cluster.restart_worker(1)
    app_id = new_application(cluster, known)
    assert cluster.executor_dirs(app_id)[1], "the killed worker ran an executor of the drain"
    counts = settle(pipeline, records, faulted, before, rerun_timeout=600)
    print(f"worker killed mid-batch: {counts}")


@pytest.mark.faults  # a fault scenario of several drains on the cluster: the long suite
def test_driver_killed_mid_drain_then_lost_checkpoint_resume_exactly(
    cluster: SparkCluster, pipeline: Settings
) -> None:
    source = ArticleSource(seed=21, partitions=PARTITIONS)
    records = more(pipeline, source, 300)

    # the driver (spark-submit, its Python, everything of its process group) dies mid-drain
    job = start_job(pipeline)
    try:
        assert_still_running(job, wait_for_batches(job, 1))
    finally:
        kill_job(job)
        job.close()
    before = snapshot_ids(pipeline)
    assert before, "the killed drain committed a batch"
    rerun = run_job(pipeline, timeout=600)
    assert rerun.returncode == 0, describe(rerun)
    check_invariants(pipeline, records, before)

    # the checkpoint is lost: the drain resumes from the offsets the table records
    shutil.rmtree(pipeline.checkpoint_location)
    later = more(pipeline, source, 60)
    resumed = run_job(pipeline, timeout=600)
    assert resumed.returncode == 0, describe(resumed)
    read = sum(int(b["events_in"]) for b in batch_lines(resumed.stdout))  # type: ignore[call-overload]
    assert read == len(later), f"only the new records are read: {read} read, {len(later)} new"
    check_invariants(pipeline, records + later, before)
