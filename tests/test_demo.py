"""The README's first command, ``make demo``, end to end, as a user runs it.

``make demo`` starts its own broker, feeds changes, runs the ``cdc_to_iceberg``
DAG once with ``airflow dags test`` and prints the table. Here it runs with
every port and directory of its own (the Makefile's defaults are overridable
by the environment), so it never meets a stack a developer has running. The
table it leaves must equal the reference fold of everything in its topic.

``SOURCE=postgres`` (real Postgres + Debezium, every ``public`` table) is a
long scenario: it runs under ``make test-faults``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from infra import free_port_pair
from reference_fold import Record, fold
from support import assert_table_equals_fold

from cdc_iceberg.settings import PROJECT_ROOT, Settings

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


@pytest.fixture
def demo_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a demo on ports and directories of its own; its servers are
    stopped at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PG"))}
    # Postgres runs as its own OS user: its directory must be reachable by it
    postgres_dir = Path(tempfile.mkdtemp(prefix="cdc-demo-postgres-"))
    postgres_dir.chmod(0o755)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port_pair()}",
        KAFKA_DATA_DIR=str(tmp_path / "kafka"),
        CHECKPOINT_LOCATION=str(tmp_path / "checkpoints"),
        ICEBERG_CATALOG_URI=f"sqlite:///{tmp_path}/iceberg/catalog.db",
        ICEBERG_WAREHOUSE=f"file://{tmp_path}/iceberg/warehouse",
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        DEMO_EVENTS="1500",
        PGPORT=str(free_port_pair()),
        POSTGRES_DATA_DIR=str(postgres_dir / "data"),
        CONNECT_PORT=str(free_port_pair()),
        CONNECT_DATA_DIR=str(tmp_path / "connect"),
    )
    (tmp_path / "iceberg").mkdir()
    try:
        yield env
    finally:
        flags = env.get("DEMO_MAKE_FLAGS", "").split()
        for target in ("cdc-down", "kafka-down", *(["cluster-down"] if flags else [])):
            subprocess.run(
                ["make", "--no-print-directory", target, *flags],
                cwd=PROJECT_ROOT,
                env=env,
                capture_output=True,
                timeout=180,
                check=False,
            )
        shutil.rmtree(postgres_dir, ignore_errors=True)


def _topic_records(settings: Settings, topic: str) -> list[Record]:
    """Every record of ``topic``, read with a plain consumer."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        records: list[Record] = []
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for batch in consumer.poll(timeout_ms=2000).values():
                records += [
                    Record(r.partition, r.offset, r.key, r.value, tuple(r.headers or ()))
                    for r in batch
                ]
    finally:
        consumer.close()
    return records


def _run_demo(env: dict[str, str], source: str, *extra: str) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", "demo", f"SOURCE={source}", *extra],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def _assert_articles_right(env: dict[str, str], output: str) -> None:
    assert "DAG run succeeded" in output, output[-4000:]
    assert "validation passed" in output and "total 0" in output, output[-4000:]
    settings = Settings.from_env(env)
    expected = fold(_topic_records(settings, settings.kafka_topic))
    assert expected.rows, "the demo fed changes"
    assert f"row count: {len(expected.rows)}" in output
    assert_table_equals_fold(settings, expected.rows)


def test_make_demo_runs_the_dag_and_leaves_the_table_equal_to_its_topic(
    demo_env: dict[str, str],
) -> None:
    _assert_articles_right(demo_env, _run_demo(demo_env, "generator"))


@pytest.mark.faults
def test_make_demo_on_postgres_mirrors_three_tables(demo_env: dict[str, str]) -> None:
    output = _run_demo(demo_env, "postgres")
    _assert_articles_right(demo_env, output)
    for table in ("order_lines", "typed_rows"):
        line = next(x for x in output.splitlines() if x.startswith(f"== neuronews.{table}:"))
        # "== neuronews.<table>: N rows in Iceberg, N in Postgres"
        in_iceberg, in_postgres = line.split(": ", 1)[1].split(" rows in Iceberg, ")
        assert in_iceberg == in_postgres.removesuffix(" in Postgres"), line


@pytest.mark.faults
def test_make_demo_on_the_cluster_profile(
    demo_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make demo CLUSTER=1``: three brokers, a Spark master with two workers, the
    warehouse and checkpoint on S3, the catalog on Postgres, each on ports of its own."""
    brokers = ",".join(f"127.0.0.1:{free_port_pair()}" for _ in range(3))
    master = free_port_pair()
    pg_port = demo_env["PGPORT"]
    cluster = {
        "DEMO_MAKE_FLAGS": "CLUSTER=1",
        "KAFKA_BOOTSTRAP_SERVERS": brokers,
        "SPARK_MASTER": f"spark://127.0.0.1:{master}",
        "AIRFLOW_CONN_SPARK_DEFAULT": (
            f'{{"conn_type": "spark", "host": "spark://127.0.0.1", "port": {master}}}'
        ),
        "SPARK_CLUSTER_DATA_DIR": str(tmp_path / "spark-cluster"),
        "ICEBERG_S3_ENDPOINT": f"http://127.0.0.1:{free_port_pair()}",
        "OBJECT_STORE_DATA_DIR": str(tmp_path / "object-store"),
        "ICEBERG_CATALOG_URI": (
            f"postgresql+psycopg2://postgres:postgres@127.0.0.1:{pg_port}/iceberg"
        ),
        "AWS_ACCESS_KEY_ID": "demo-test",
        "AWS_SECRET_ACCESS_KEY": "demo-test-secret",
    }
    demo_env.update(cluster)
    for name in ("ICEBERG_WAREHOUSE", "CHECKPOINT_LOCATION"):
        demo_env.pop(name)  # the profile's: s3:// and s3a://
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, cluster[name])  # pyiceberg reads the table through S3
    output = _run_demo(demo_env, "generator", "CLUSTER=1")
    assert (
        f"--master spark://127.0.0.1:{master}"
        in (Path(demo_env["AIRFLOW_HOME"]) / "demo-dag-test.log").read_text()
    )
    # read back through the Postgres catalog and S3, as the profile wrote it
    _assert_articles_right({**demo_env, "ICEBERG_WAREHOUSE": "s3://lakehouse/warehouse"}, output)
    # the tasks ran in the two workers' executors
    apps = sorted((tmp_path / "spark-cluster").glob("worker-*/work/app-*"))
    assert len({p.parent.parent for p in apps}) == 2, apps
    assert "demo-test-secret" not in output
