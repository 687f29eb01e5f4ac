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
        for target in ("cdc-down", "kafka-down"):
            subprocess.run(
                ["make", "--no-print-directory", target],
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


def _run_demo(env: dict[str, str], source: str) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", "demo", f"SOURCE={source}"],
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
