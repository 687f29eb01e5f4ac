"""
### cdc_backfill

Manual re-read of a table's topic into the table (or a copy), from the trigger
form: the table is one of `pipelines.yaml`, offered as a choice. The writer is
the scheduled DAG's idempotent writer: records older than what the table holds
change nothing, deletes are never undone, and every commit is recorded under
the backfill's own pipeline id and checkpoint, so the scheduled pipeline's
progress is untouched.

**Dry run is on by default**: the run reads and reports what it would write
(events, dead letters, changes per batch) and writes nothing. Untick it to apply.

Start: `earliest`, a `timestamp` (ISO-8601, per partition the first record at
or after it) or `offsets` (JSON `{"0": 120, "1": 80}`). Stop: `latest` or
`offsets`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task
from cdc_airflow.forms import TABLE_PATTERN, WRITER_POOL, table_param
from cdc_airflow.operators import CdcDrainOperator


@dag(
    dag_id="cdc_backfill",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["cdc", "iceberg", "backfill"],
    default_args={"owner": "data-platform", "retries": 0, "retry_delay": timedelta(minutes=1)},
    params={
        "start_from": Param(
            "earliest",
            type="string",
            enum=["earliest", "timestamp", "offsets"],
            title="Start from",
            description="Where to start reading the topic.",
        ),
        "start_timestamp": Param(
            None,
            type=["null", "string"],
            format="date-time",
            maxLength=64,
            title="Start timestamp",
            description="With 'timestamp': the first record at or after this time.",
        ),
        "start_offsets": Param(
            None,
            type=["null", "string"],
            maxLength=10000,
            title="Start offsets",
            description='With \'offsets\': JSON partition -> offset, e.g. {"0": 120, "1": 80}.',
        ),
        "stop_at": Param(
            "latest",
            type="string",
            enum=["latest", "offsets"],
            title="Stop at",
        ),
        "stop_offsets": Param(
            None,
            type=["null", "string"],
            maxLength=10000,
            title="Stop offsets",
            description="With 'offsets': JSON partition -> offset to stop before.",
        ),
        "table": table_param(
            "The table of pipelines.yaml whose topic is re-read (empty: the table of KAFKA_TOPIC).",
            optional=True,
        ),
        "target_table": Param(
            None,
            type=["null", "string"],
            pattern=TABLE_PATTERN,
            maxLength=257,
            title="Target table",
            description="namespace.table in the Iceberg catalog (empty: the table itself).",
        ),
        "dry_run": Param(
            True, type="boolean", title="Dry run", description="Report only; write nothing."
        ),
    },
)
def cdc_backfill() -> None:
    @task
    def plan(params: dict | None = None, run_id: str | None = None) -> dict[str, str]:  # type: ignore[type-arg]
        """Validate the form and turn it into the drain's starting and stopping offsets."""
        from cdc_airflow.backfill import plan_backfill

        return plan_backfill(params or {}, run_id or "manual")

    planned = plan()
    drain = CdcDrainOperator(
        task_id="backfill",
        pool=WRITER_POOL,
        table="{{ ti.xcom_pull(task_ids='plan')['table'] }}",
        topic="{{ ti.xcom_pull(task_ids='plan')['topic'] }}",
        pipeline_id="{{ ti.xcom_pull(task_ids='plan')['pipeline_id'] }}",
        consumer_group="{{ ti.xcom_pull(task_ids='plan')['consumer_group'] }}",
        checkpoint_location="{{ ti.xcom_pull(task_ids='plan')['checkpoint'] }}",
        starting_offsets="{{ ti.xcom_pull(task_ids='plan')['starting_offsets'] }}",
        stop_offsets="{{ ti.xcom_pull(task_ids='plan')['stop_offsets'] }}",
        dry_run="{{ params.dry_run }}",
        skip_when_idle=False,
    )
    planned >> drain


cdc_backfill()
