"""The four DAGs run with ``dag.test()`` against the real broker, Spark and catalog."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from articles import ARTICLES
from reference_fold import fold
from support import (
    assert_ranges_tile,
    assert_table_equals_fold,
    dead_letters,
    live_rows,
    prepare_airflow_db,
    send,
    snapshots,
)
from tables import ORDER_LINES_FOLD, publish

from cdc_iceberg import kafka_offsets, table_state
from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.settings import Settings
from cdc_iceberg.table_generator import ORDER_LINES, TableSource

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The suite's own Airflow metadata DB (SQLite), migrated once, with the writer pool."""
    return prepare_airflow_db()


@pytest.fixture
def airflow_env(
    airflow_db: Path, pipeline: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """The pipeline's settings as the environment the operators read."""
    for key, value in pipeline.to_env().items():
        monkeypatch.setenv(key, value)
    yield pipeline


def _dag(dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    from cdc_iceberg.settings import PROJECT_ROOT

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def _xcom(db: Path, run: Any, task_id: str) -> Any:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? "
            "AND key = 'return_value'",
            (run.dag_id, run.run_id, task_id),
        ).fetchone()
    assert row is not None, f"no XCom from {task_id}"
    value = row[0]
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _asset_events(db: Path, run: Any) -> dict[str, dict[str, Any]]:
    """URI -> extra of the asset events the run's tasks recorded."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE e.source_dag_id = ? AND e.source_run_id = ?",
            (run.dag_id, run.run_id),
        ).fetchall()
    return {uri: json.loads(extra) if isinstance(extra, str) else extra for uri, extra in rows}


def _queued_for(db: Path, uri: str) -> set[str]:
    """The DAGs an asset event of ``uri`` queued a run of (waiting for the scheduler)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT q.target_dag_id FROM asset_dag_run_queue q JOIN asset a ON a.id = q.asset_id "
            "WHERE a.uri = ?",
            (uri,),
        ).fetchall()
    return {dag_id for (dag_id,) in rows}


@contextlib.contextmanager
def downstream_dag(dag_id: str, schedule: list[Any]) -> Iterator[None]:
    """An unpaused DAG scheduled on ``schedule`` in the metadata DB, as the dag-processor
    writes one; deleted afterwards."""
    import pendulum
    from airflow.api.common.delete_dag import delete_dag
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.models.dag import DagModel
    from airflow.sdk import DAG, task
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with DAG(dag_id, schedule=schedule, start_date=pendulum.datetime(2026, 1, 1)) as dag:

        @task
        def report() -> None:
            """Reads the table (a downstream consumer)."""

        report()
    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
        session.flush()  # the DAG's bundle row first
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session
        )
        session.execute(update(DagModel).where(DagModel.dag_id == dag_id).values(is_paused=False))
    try:
        yield
    finally:
        delete_dag(dag_id)


class StatsdListener:
    """A StatsD server on loopback that keeps every packet it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.lines.extend(data.decode().splitlines())

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.sock.close()

    def values(self, name: str, kind: str) -> list[float]:
        """Values received for ``name`` of type ``kind`` (c, g, ms), in order."""
        out = []
        for line in self.lines:
            stat, _, rest = line.partition(":")
            value, _, rest = rest.partition("|")
            if stat == name and rest.split("|")[0] == kind:
                out.append(float(value))
        return out


@pytest.fixture
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[StatsdListener]:
    """Airflow's metrics sent to a local StatsD listener, as ``[metrics] statsd_on`` does."""
    from airflow.sdk._shared.observability.metrics import stats
    from airflow.sdk.observability.metrics import stats_utils

    listener = StatsdListener()
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(listener.port))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
    # what the task runner does when a worker starts a task
    stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
    try:
        yield listener
    finally:
        listener.stop()
        stats.initialize(factory=stats_utils.NoStatsLogger, export_legacy_names=False)


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_scheduled_run_drains_validates_and_then_skips_spark(
    airflow_env: Settings, airflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = airflow_env
    # the generated changes were committed in 2026-01: the table is old, but once
    # drained nothing waits for it, so it is not stale
    monkeypatch.setenv("CDC_MAX_STALENESS_S", "60")
    records = send(settings, ArticleSource(seed=81).random_history(800, 100, snapshot_rows=50))
    dag = _dag("cdc_to_iceberg")

    run = dag.test()

    assert _states(run) == {
        "tables": "success",
        "drain": "success",
        "validate": "success",
        "consumer_lag": "success",
    }
    assert_table_equals_fold(settings, fold(records).rows)
    drained = _xcom(airflow_db, run, "drain")
    assert drained["skipped"] is False
    assert drained["totals"]["events_in"] == len(records)
    facts = _xcom(airflow_db, run, "validate")
    assert facts["rows"] == len(fold(records).rows)
    assert facts["waiting"] == 0 and facts["staleness_s"] > 60
    lag = _xcom(airflow_db, run, "consumer_lag")
    assert lag["total"] == 0
    uri = f"iceberg://{settings.iceberg_catalog_name}/{settings.iceberg_table.replace('.', '/')}"
    assert _asset_events(airflow_db, run)[uri]["events_in"] == len(records)

    before = snapshots(settings)
    idle = dag.test()
    assert _states(idle)["drain"] == "success"
    assert _xcom(airflow_db, idle, "drain")["skipped"] is True
    assert snapshots(settings) == before
    assert _asset_events(airflow_db, idle) == {}, "a drain that changed nothing records no event"


def test_scheduled_run_drains_every_table_and_validates_each(
    airflow_db: Path,
    pipeline: Settings,
    work_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    statsd: StatsdListener,
) -> None:
    """Articles is an entry of the pipelines file; order_lines is none: its topic is found by
    the file's topic pattern. Both are drained, validated, and announced as Assets."""
    from cdc_airflow.assets import table_asset, table_uri

    schema = "d" + pipeline.pipeline_id.removeprefix("group_t")
    lines = TableSource(dataclasses.replace(ORDER_LINES, schema=schema), seed=86)
    path = work_dir / "pipelines" / f"{schema}-dag.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "topic": pipeline.kafka_topic,
        "iceberg_table": pipeline.iceberg_table,
        "schema": ARTICLES.to_declared(),
    }
    document = {"topics": f"neuronews.{schema}.*", "tables": {"public.articles": entry}}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    settings = pipeline.replace(pipelines_file=str(path))
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    articles = send(settings, ArticleSource(seed=87).random_history(300, 40))
    line_records = publish(settings.replace(kafka_topic=lines.topic), lines.random_history(300, 40))
    lines_uri = table_uri(settings.iceberg_catalog_name, f"neuronews.{schema}_order_lines")
    consumer = f"report_{schema}"

    with downstream_dag(
        consumer, [table_asset(settings.iceberg_catalog_name, f"neuronews.{schema}_order_lines")]
    ):
        run = _dag("cdc_to_iceberg").test()
        queued = _queued_for(airflow_db, lines_uri)

    instances = sorted((ti.task_id, ti.map_index, str(ti.state)) for ti in run.get_task_instances())
    assert instances == [
        ("consumer_lag", 0, "success"),
        ("consumer_lag", 1, "success"),
        ("drain", -1, "success"),
        ("tables", -1, "success"),
        ("validate", 0, "success"),
        ("validate", 1, "success"),
    ]
    assert_table_equals_fold(settings, fold(articles).rows)
    lines_table = settings.replace(
        kafka_topic=lines.topic, iceberg_table=f"neuronews.{schema}_order_lines"
    )
    assert_table_equals_fold(
        lines_table, fold(line_records, table=ORDER_LINES_FOLD).rows, ORDER_LINES_FOLD
    )
    drained = _xcom(airflow_db, run, "drain")
    assert set(drained["tables"]) == {settings.iceberg_table, lines_table.iceberg_table}
    assert drained["totals"]["events_in"] == len(articles) + len(line_records)
    # each table an Asset, its event recorded through the alias with the drain's totals
    events = _asset_events(airflow_db, run)
    prefix = f"iceberg://{settings.iceberg_catalog_name}/neuronews/"
    assert {uri: e["events_in"] for uri, e in events.items()} == {
        prefix + settings.iceberg_table.split(".")[1]: len(articles),
        prefix + f"{schema}_order_lines": len(line_records),
    }
    # the table found by the pattern: its event carries its totals, and a DAG scheduled
    # on its Asset has a run queued for the scheduler
    assert events[lines_uri] == drained["tables"][lines_table.iceberg_table]["totals"]
    assert queued == {consumer}
    # each table's figures reached StatsD under its own name
    for table, records, rows in (
        (settings, articles, fold(articles).rows),
        (lines_table, line_records, fold(line_records, table=ORDER_LINES_FOLD).rows),
    ):
        name = f"airflow.cdc_iceberg.{table.iceberg_table}"
        committed = [s for s in snapshots(table) if "cdc.metrics" in s]
        assert statsd.values(f"{name}.events_in", "c") == [len(records)]
        assert statsd.values(f"{name}.batches", "c") == [len(committed)]
        durations = statsd.values(f"{name}.batch_duration", "ms")
        assert len(durations) == len(committed) and min(durations) > 0
        assert statsd.values(f"{name}.rows", "g") == [len(rows)]
        assert statsd.values(f"{name}.lag", "g")[-1] == 0
        (rate,) = statsd.values(f"{name}.events_per_s", "g")
        assert rate > 0
        (age,) = statsd.values(f"{name}.last_commit_age_s", "g")
        assert 0 <= age < 600, "the drain committed during this run"

    # the backfill form takes the table from the file: its own topic is re-read
    before = snapshots(settings)
    backfill = _dag("cdc_backfill").test(
        run_conf={"table": lines_table.iceberg_table, "dry_run": False}
    )
    assert _states(backfill) == {"plan": "success", "backfill": "success"}
    plan = _xcom(airflow_db, backfill, "plan")
    assert (plan["topic"], plan["table"]) == (lines.topic, lines_table.iceberg_table)
    assert snapshots(settings) == before  # articles untouched
    assert_table_equals_fold(
        lines_table, fold(line_records, table=ORDER_LINES_FOLD).rows, ORDER_LINES_FOLD
    )
    refused = _dag("cdc_backfill").test(run_conf={"table": "neuronews.not_configured"})
    assert _states(refused)["plan"] == "failed"


def test_dead_letter_replay_form_dry_run_then_apply_marks_each(
    airflow_env: Settings, airflow_db: Path
) -> None:
    from cdc_airflow.backfill import run_segment

    from cdc_iceberg.generator import Message

    settings = airflow_env
    broken = [Message(b'{"article_id": "a-1"}', b"not json", 0), Message(None, b"[1, 2]", 1)]
    records = send(settings, ArticleSource(seed=88).random_history(200, 30) + broken)
    assert _states(_dag("cdc_to_iceberg").test())["drain"] == "success"
    expected = fold(records)
    assert len(expected.dead) == 2
    before = snapshots(settings)

    dry = _dag("cdc_dlq_replay").test(run_conf={"table": settings.iceberg_table})
    assert _states(dry) == {"replay": "success"}
    result = _xcom(airflow_db, dry, "replay")
    assert (result["dry_run"], result["selected"], result["failed"]) == (True, 2, 2)
    assert snapshots(settings) == before
    assert all(d["replay_outcome"] is None for d in dead_letters(settings))

    applied = _dag("cdc_dlq_replay").test(
        run_conf={"table": settings.iceberg_table, "reason": "JSON object", "dry_run": False}
    )
    result = _xcom(airflow_db, applied, "replay")
    assert (result["dry_run"], result["selected"], result["applied"]) == (False, 2, 0)
    letters = dead_letters(settings)
    assert {(d["kafka_partition"], d["kafka_offset"]) for d in letters} == set(expected.dead)
    assert {d["replay_id"] for d in letters} == {run_segment(applied.run_id)}
    assert all(d["replay_outcome"].startswith("failed: value is not a JSON") for d in letters)
    assert_table_equals_fold(settings, expected.rows)

    refused = _dag("cdc_dlq_replay").test(
        run_conf={"table": settings.iceberg_table, "from_offset": 5}  # of which partition?
    )
    assert _states(refused) == {"replay": "failed"}
    unknown = _dag("cdc_dlq_replay").test(run_conf={"table": "neuronews.not_configured"})
    assert _states(unknown) == {"replay": "failed"}


def test_the_drain_reports_topic_in_and_table_out_to_openlineage(
    airflow_db: Path, pipeline: Settings, work_dir: Path
) -> None:
    """A run of the scheduled DAG as `airflow dags test` runs it, with OpenLineage's file
    transport: the drain's COMPLETE event names the topic and the Iceberg table."""
    import subprocess
    import sys
    from urllib.parse import urlparse

    events_file = work_dir / f"openlineage-{pipeline.pipeline_id}.jsonl"
    send(pipeline, ArticleSource(seed=89).random_history(120, 20))
    env = {
        **os.environ,
        **pipeline.to_env(),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "cdc-tests",
    }
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "cdc_to_iceberg"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    (complete,) = [
        e
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"] == "cdc_to_iceberg.drain"
    ]
    assert complete["job"]["namespace"] == "cdc-tests"
    assert [(d["namespace"], d["name"]) for d in complete["inputs"]] == [
        (f"kafka://{pipeline.kafka_bootstrap_servers}", pipeline.kafka_topic)
    ]
    warehouse = urlparse(pipeline.iceberg_warehouse).path
    (table,) = complete["outputs"]
    assert (table["namespace"], table["name"]) == (
        "file",
        f"{warehouse}/{pipeline.iceberg_table.replace('.', '/')}",
    )
    (symlink,) = table["facets"]["symlinks"]["identifiers"]
    assert symlink == {
        "namespace": f"iceberg://{pipeline.iceberg_catalog_name}",
        "name": pipeline.iceberg_table,
        "type": "TABLE",
    }
    # the table the events name is the table the drain wrote
    assert Path(table["name"], "metadata").is_dir()


def test_backfill_dry_run_then_from_earliest_into_the_live_table(
    airflow_env: Settings, airflow_db: Path
) -> None:
    from cdc_airflow.backfill import backfill_group

    settings = airflow_env
    records = send(settings, ArticleSource(seed=82).random_history(500, 60, snapshot_rows=30))
    _dag("cdc_to_iceberg").test()
    before = snapshots(settings)
    backfill = _dag("cdc_backfill")
    form = {"start_from": "earliest", "stop_at": "latest", "target_table": settings.iceberg_table}

    dry = backfill.test(run_conf=form)  # dry run is the default
    assert _states(dry) == {"plan": "success", "backfill": "success"}
    assert snapshots(settings) == before

    # applied, stopping halfway through each partition: older changes never beat the
    # table's newer ones
    end = kafka_offsets.end_offsets(settings)
    halfway = {p: o // 2 for p, o in end.items()}
    stop = json.dumps({str(p): o for p, o in halfway.items()})
    applied = backfill.test(
        run_conf={**form, "stop_at": "offsets", "stop_offsets": stop, "dry_run": False}
    )
    assert _states(applied)["backfill"] == "success"
    assert_table_equals_fold(settings, fold(records).rows)
    # the scheduled pipeline's progress, and its group's lag, are untouched by the
    # backfill's commits; the backfill's own group shows how far it read
    assert table_state.committed_offsets(settings) == end
    assert kafka_offsets.committed_offsets(settings) == end
    assert kafka_offsets.committed_offsets(settings, backfill_group(settings)) == halfway


def test_backfill_form_rejects_bad_input(airflow_env: Settings) -> None:
    settings = airflow_env
    send(settings, ArticleSource(seed=83).random_history(20, 5))
    run = _dag("cdc_backfill").test(
        run_conf={
            "start_from": "offsets",
            "start_offsets": '{"0": "1; DROP TABLE x"}',
            "target_table": settings.iceberg_table,
            "dry_run": False,
        }
    )
    assert _states(run)["plan"] == "failed"


@pytest.mark.parametrize("scope", ["checkpoint", "offsets", "full-rebuild"])
def test_each_reset_scope_leaves_a_state_the_next_run_completes_exactly(
    airflow_env: Settings, scope: str
) -> None:
    settings = airflow_env
    source = ArticleSource(seed=84)
    records = send(settings, source.random_history(400, 60, snapshot_rows=20))
    scheduled = _dag("cdc_to_iceberg")
    scheduled.test()
    reset = _dag("cdc_reset")

    refused = reset.test(
        run_conf={
            "scope": scope,
            "table": settings.iceberg_table,
            "confirm_table": "wrong",
            "dry_run": False,
        }
    )
    assert _states(refused)["reset"] == "failed"

    done = reset.test(
        run_conf={
            "scope": scope,
            "table": settings.iceberg_table,
            "confirm_table": settings.iceberg_table,
            "dry_run": False,
        }
    )
    assert _states(done)["reset"] == "success"
    # each table of the pipelines file has its checkpoint under CHECKPOINT_LOCATION
    checkpoint = Path(settings.checkpoint_location) / settings.iceberg_table
    assert not checkpoint.exists()
    assert list(checkpoint.parent.glob(checkpoint.name + ".archived-*")), "archived, not deleted"
    if scope == "full-rebuild":
        assert live_rows(settings) == {}

    records += send(settings, source.random_history(150, 60))
    after = scheduled.test()

    assert _states(after) == {
        "tables": "success",
        "drain": "success",
        "validate": "success",
        "consumer_lag": "success",
    }
    assert_table_equals_fold(settings, fold(records).rows)
    end = kafka_offsets.end_offsets(settings)
    assert kafka_offsets.committed_offsets(settings) == end
    if scope == "checkpoint":
        assert_ranges_tile(settings, end)


def test_maintenance_keeps_table_and_progress(airflow_env: Settings) -> None:
    settings = airflow_env.replace(
        maintenance_snapshot_retention_hours=0, maintenance_retain_last=1
    )
    for key, value in settings.to_env().items():
        os.environ[key] = value
    source = ArticleSource(seed=85)
    records = send(settings, source.random_history(300, 40, snapshot_rows=20))
    scheduled = _dag("cdc_to_iceberg")
    scheduled.test()
    records += send(settings, source.random_history(200, 40))
    scheduled.test()

    run = _dag("iceberg_maintenance").test()

    assert _states(run) == {"maintain": "success"}
    assert_table_equals_fold(settings, fold(records).rows)
    assert table_state.committed_offsets(settings) == kafka_offsets.end_offsets(settings)
    assert len(snapshots(settings)) <= 2
    idle = scheduled.test()
    assert _states(idle)["drain"] == "success"
