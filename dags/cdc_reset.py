"""
### cdc_reset

Operator reset of the CDC pipeline. **Dry run is on by default**: the run
prints the plan (what is archived, which offsets change) and changes nothing.

Scopes:
* `checkpoint` - archive the Spark checkpoint (renamed, never deleted). The
  next scheduled drain resumes from the offsets the table records; nothing is
  reprocessed. For a corrupt or lost checkpoint.
* `offsets` - also move the pipeline to the earliest retained (or latest)
  offsets, in the table and in the consumer group. Use after Kafka retention
  deleted records the pipeline had not read (the drain fails and names this DAG).
  Reprocessing is harmless: the writer is idempotent.
* `full-rebuild` - also empty the live and tombstone tables and rebuild them
  from the earliest retained offsets.

`confirm_table` must repeat the table name. The reset waits for the writer
pool, so it never runs while a drain writes; afterwards the scheduled DAG
resumes on its own.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag
from cdc_airflow.forms import WRITER_POOL, table_param
from cdc_airflow.operators import CdcResetOperator


@dag(
    dag_id="cdc_reset",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["cdc", "iceberg", "operations"],
    default_args={"owner": "data-platform", "retries": 0, "retry_delay": timedelta(minutes=1)},
    params={
        "scope": Param(
            "checkpoint",
            type="string",
            enum=["checkpoint", "offsets", "full-rebuild"],
            title="Scope",
            description="What to reset; see the DAG documentation.",
        ),
        "reset_to": Param(
            "earliest",
            type="string",
            enum=["earliest", "latest"],
            title="Reset offsets to",
            description="For scope 'offsets': earliest retained or latest.",
        ),
        "table": table_param("A table of pipelines.yaml."),
        "confirm_table": Param(
            "",
            type="string",
            maxLength=257,
            title="Confirm: type the table name again",
            description="Must equal the table name, or nothing happens.",
        ),
        "dry_run": Param(
            True, type="boolean", title="Dry run", description="Print the plan; change nothing."
        ),
    },
)
def cdc_reset() -> None:
    CdcResetOperator(
        task_id="reset",
        pool=WRITER_POOL,
        scope="{{ params.scope }}",
        reset_to="{{ params.reset_to }}",
        table="{{ params.table }}",
        confirm="{{ params.confirm_table }}",
        dry_run="{{ params.dry_run }}",
    )


cdc_reset()
