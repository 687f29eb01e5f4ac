"""
### cdc_to_iceberg

Keeps every table of `pipelines.yaml` (`CDC_PIPELINES_FILE`) exactly in step
with its Postgres table, through its Debezium topic.

Every run: **tables** (the configured tables, topics matching the file's
pattern included) -> **drain** (one Spark application, one `availableNow`
drain per table, skipped without starting Spark when Kafka holds nothing new)
-> **validate** (one mapped task per table: no duplicate or null keys, no new
dead letters, freshness, batch metrics) -> **consumer_lag** (one mapped task
per table: the group's lag per partition under a threshold; reschedules
instead of holding a slot). A table that failed the drain fails its own
validation; the others are validated all the same.

Each Iceberg table is an Airflow Asset (`iceberg://<catalog>/<namespace>/<table>`):
the drain records an event for every table it committed to, through the asset
alias `cdc_iceberg_tables` (tables found by the topic pattern too), so
downstream DAGs can be scheduled on one table or on the alias.

One writer per table: `max_active_runs=1` and the `cdc_iceberg_writer` pool,
which the backfill, reset and maintenance DAGs share.
Configuration: environment (`cdc_iceberg.settings`) and the `kafka_default`
and `spark_default` connections.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task
from cdc_airflow.assets import TABLES
from cdc_airflow.forms import WRITER_POOL
from cdc_airflow.operators import CdcDrainOperator, CdcValidateOperator
from cdc_airflow.sensors import KafkaLagSensor


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
    @task
    def tables() -> list[str]:
        """The Iceberg tables this run drains (a topic new since the last run included)."""
        from cdc_airflow.hooks import CdcKafkaHook

        return CdcKafkaHook().configured_tables()

    names = tables()
    drain = CdcDrainOperator(task_id="drain", tables="all", pool=WRITER_POOL, outlets=[TABLES])
    validate = CdcValidateOperator.partial(
        task_id="validate", drain_task_id="drain", trigger_rule="all_done"
    ).expand(table=names)
    lag = KafkaLagSensor.partial(
        task_id="consumer_lag", max_lag=1000, poke_interval=30, timeout=600, retries=0
    ).expand(table=names)
    names >> drain >> validate >> lag


cdc_to_iceberg()
