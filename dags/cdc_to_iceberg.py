"""
### cdc_to_iceberg

Keeps the Iceberg table `articles` exactly in step with Postgres `public.articles`
through the Debezium topic `neuronews.public.articles`.

Every run: **drain** (one `availableNow` Spark drain, skipped without starting
Spark when Kafka holds nothing new) -> **validate** (no duplicate or null keys,
no new dead letters, freshness, batch metrics) -> **consumer_lag** (the group's
lag per partition under a threshold; reschedules instead of holding a slot).

One writer per table: `max_active_runs=1` and the `cdc_iceberg_writer` pool,
which the backfill, reset and maintenance DAGs share.
Configuration: environment (`cdc_iceberg.settings`) and the `kafka_default`
and `spark_default` connections.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag
from cdc_airflow.operators import CdcDrainOperator, CdcValidateOperator
from cdc_airflow.sensors import KafkaLagSensor

WRITER_POOL = "cdc_iceberg_writer"


@dag(
    dag_id="cdc_to_iceberg",
    schedule=timedelta(minutes=10),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["cdc", "iceberg", "kafka"],
    default_args={
        "owner": "data-platform",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "execution_timeout": timedelta(minutes=30),
    },
)
def cdc_to_iceberg() -> None:
    drain = CdcDrainOperator(task_id="drain", pool=WRITER_POOL)
    validate = CdcValidateOperator(task_id="validate", drain_task_id="drain")
    lag = KafkaLagSensor(
        task_id="consumer_lag", max_lag=1000, poke_interval=30, timeout=600, retries=0
    )
    drain >> validate >> lag


cdc_to_iceberg()
