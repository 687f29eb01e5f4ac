"""
### iceberg_maintenance

Daily upkeep of the CDC tables, as one Spark job (`jobs/iceberg_maintenance.py`):
rewrite small data files and fold in merge-on-read delete files, rewrite
manifests, expire old snapshots (keeping the ones that record the pipeline's
offsets), remove orphan files, and prune tombstones past their retention.
Shares the writer pool with the drain, so it never commits during a MERGE.
Settings: `MAINTENANCE_*` and `CDC_TOMBSTONE_RETENTION_HOURS`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag
from cdc_airflow.forms import WRITER_POOL
from cdc_airflow.operators import IcebergMaintenanceOperator


@dag(
    dag_id="iceberg_maintenance",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["iceberg", "maintenance"],
    default_args={"owner": "data-platform", "retries": 1, "retry_delay": timedelta(minutes=5)},
)
def iceberg_maintenance() -> None:
    IcebergMaintenanceOperator(task_id="maintain", pool=WRITER_POOL)


iceberg_maintenance()
