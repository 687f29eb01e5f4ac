"""An Airflow task timeout kills the drain mid-run; the retry completes exactly.

The real ``cdc_to_iceberg`` DAG runs with ``dag.test()`` against the real
broker, Spark and catalog. The drain's first try must time out while Spark is
applying batches, on a fast machine as on a slow one: its
``execution_timeout`` alarm (Airflow's own SIGALRM timer) is brought forward
to a moment just after the first batch commits. Airflow then raises its task
timeout and calls the operator's ``on_kill``; the retry must complete,
validation must pass, no process of the killed try may outlive it, and every
invariant must hold.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import processes_with_env, run_job
from invariants import assert_rerun_changes_nothing, check_invariants, snapshot_ids
from support import prepare_airflow_db, send

from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.settings import PROJECT_ROOT, Settings

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.faults]

NAME = "Airflow task timeout mid-drain, then the retry"
SEED = 74


@pytest.fixture(scope="module")
def airflow_metadata() -> Path:
    """The suite's Airflow metadata DB (SQLite), migrated, with the writer pool."""
    return prepare_airflow_db()


@pytest.fixture
def dag_env(
    airflow_metadata: Path, pipeline: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    settings = pipeline.replace(max_offsets_per_trigger=100)
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    yield settings


def _tries(db: Path, run: Any, task_id: str) -> list[tuple[int, str]]:
    """(try number, state) of every try of a task, from the metadata DB."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT try_number, state FROM task_instance_history "
            "WHERE dag_id = ? AND run_id = ? AND task_id = ? ORDER BY try_number",
            (run.dag_id, run.run_id, task_id),
        ).fetchall()
    return [(int(n), str(s)) for n, s in rows]


def _expire_after_first_batch(settings: Settings, killed_at: list[float], delay: float) -> None:
    """Bring the running first try's timeout alarm forward once its first batch is in."""
    deadline = time.monotonic() + 1800
    while not killed_at and time.monotonic() < deadline:
        if snapshot_ids(settings):
            time.sleep(delay)
            if not killed_at and signal.getitimer(signal.ITIMER_REAL)[0] > 0:
                signal.setitimer(signal.ITIMER_REAL, 0.01)  # Airflow's handler raises the timeout
            return
        time.sleep(0.5)


def test_timeout_kills_the_drain_and_the_retry_completes(
    dag_env: Settings,
    airflow_metadata: Path,
    scenario_report: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    scenario_report(
        name=NAME,
        injected=(
            "the drain's execution_timeout expires just after its first committed batch "
            "(Airflow's timeout and on_kill stop the spark-submit mid-drain), retry after 2 s"
        ),
        invariants=["I1", "I2", "I3", "I4", "I5", "I6", "no process outlives the killed try"],
    )
    started = time.monotonic()
    settings = dag_env
    rng = random.Random(SEED)
    source = ArticleSource(seed=SEED, partitions=2)
    records = send(settings, source.random_history(700, 150, snapshot_rows=50), 2)

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "cdc_to_iceberg.py"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["cdc_to_iceberg"]
    drain = dag.get_task("drain")
    drain.retries = 1
    drain.retry_delay = timedelta(seconds=2)
    dag.get_task("consumer_lag").poke_interval = 5
    killed_at: list[float] = []
    committed_before_retry: list[int] = []
    leftovers: list[list[int]] = []

    def first_try_failed(context: Any) -> None:
        # runs in this process between the tries: the retry gets the DAG's own timeout
        killed_at.append(time.monotonic())
        committed_before_retry.append(len(snapshot_ids(settings)))
        leftovers.append(processes_with_env("KAFKA_TOPIC", settings.kafka_topic))

    drain.on_retry_callback = [first_try_failed]
    expire = threading.Thread(
        target=_expire_after_first_batch,
        args=(settings, killed_at, rng.uniform(0.0, 3.0)),
        daemon=True,
    )
    expire.start()

    run = dag.test()

    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    tries = _tries(airflow_metadata, run, "drain")
    assert killed_at, f"the first try was not killed by its timeout: {states}, {tries}"
    assert states == {"drain": "success", "validate": "success", "consumer_lag": "success"}, (
        f"{states}, tries {tries}"
    )
    assert leftovers == [[]], f"processes of the killed try still running: {leftovers}"
    assert processes_with_env("KAFKA_TOPIC", settings.kafka_topic) == []

    counts = check_invariants(settings, records)
    assert_rerun_changes_nothing(settings, lambda: run_job(settings))
    counts["snapshots_before_retry"] = committed_before_retry[0]
    scenario_report(name=NAME, counts=counts)
    with capsys.disabled():
        print(f"\n{NAME}: {time.monotonic() - started:.0f} s, tries {tries}, {counts}")
