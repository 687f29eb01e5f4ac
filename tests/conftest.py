"""Shared fixtures: one real Kafka broker and one SparkSession for the whole run.

Both start once per session and stop at the end. Each test that writes gets its
own topic, tables and checkpoint (``pipeline``), so tests never see each
other's data. Nothing here depends on a server left running by someone else.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cdc_iceberg.settings import PROJECT_ROOT, Settings

# Airflow reads its configuration when first imported: give the suite its own home
# (SQLite metadata DB, logs), never the demo's or the user's.
_AIRFLOW_HOME = PROJECT_ROOT / ".local" / "airflow-test"
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(PROJECT_ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(PROJECT_ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cdc")


@pytest.fixture(scope="session")
def kafka_broker(work_dir: Path) -> Iterator[Any]:
    """A real single-node KRaft broker on a free loopback port."""
    from infra import free_port_pair

    from cdc_iceberg.local.kafka_broker import KafkaBroker

    # the controller listens on the port after the broker's: both must be free
    broker = KafkaBroker(data_dir=work_dir / "kafka", port=free_port_pair())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def catalog_settings(work_dir: Path) -> Settings:
    """Settings with a catalog and warehouse under the session's temp dir (no broker)."""
    return Settings(
        iceberg_catalog_uri=f"sqlite:///{work_dir}/catalog.db",
        iceberg_warehouse=f"file://{work_dir}/warehouse",
        checkpoint_location=str(work_dir / "checkpoints" / "default"),
        spark_master="local[2]",
        spark_shuffle_partitions=2,
        max_offsets_per_trigger=None,
        iceberg_buckets=2,
    )


@pytest.fixture(scope="session")
def base_settings(kafka_broker: Any, catalog_settings: Settings) -> Settings:
    """``catalog_settings`` pointed at the suite's broker."""
    return catalog_settings.replace(kafka_bootstrap_servers=kafka_broker.bootstrap_servers)


@pytest.fixture(scope="session")
def spark(catalog_settings: Settings) -> Iterator[Any]:
    """One local SparkSession with the Iceberg catalog of ``catalog_settings``."""
    from jobs.session import build_session

    session = build_session(catalog_settings, app_name="cdc-tests")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture
def pipeline(base_settings: Settings, work_dir: Path) -> Settings:
    """A fresh pipeline: its own topic, table, dead-letter table, group and checkpoint.

    Its pipelines file declares the table as ``articles`` (most tests send its
    events, some without schema blocks).
    """
    from tests.articles import declare_articles

    name = "t" + uuid.uuid4().hex[:10]
    topic, table = f"neuronews.public.{name}", f"neuronews.{name}"
    return base_settings.replace(
        kafka_topic=topic,
        kafka_consumer_group=f"group_{name}",
        iceberg_table=table,
        checkpoint_location=str(work_dir / "checkpoints" / name),
        pipelines_file=declare_articles(work_dir / "pipelines" / f"{name}.yaml", topic, table),
    )


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT
