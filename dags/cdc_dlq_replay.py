"""
### cdc_dlq_replay

Re-apply a table's dead letters once their cause is fixed (a column widened,
a setting changed), from the trigger form. The table is one of
`pipelines.yaml`, offered as a choice.

**Dry run is on by default**: the run reports how many dead letters it would
apply and which would fail again (and why), and writes nothing. Untick it to
apply.

The chosen dead letters (by a part of their reason, a Kafka partition and
offset range, a Kafka record time range; never those a replay already
applied) go through the scheduled DAG's writer: a replayed change is applied
only where it is newer than what the table holds, so an old change never beats
a newer one and a delete is never undone. Each is then marked in the
dead-letter table (`replay_id` = this run, `replayed_at`, `replay_outcome`:
`applied` or `failed: <reason>`), never deleted. A run that fails midway is
simply triggered again. Changes older than the tombstone retention fail
unless *ignore retention* is ticked: a delete of their key since then may have
been forgotten.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag
from cdc_airflow.forms import WRITER_POOL, table_param
from cdc_airflow.operators import CdcDlqReplayOperator


@dag(
    dag_id="cdc_dlq_replay",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["cdc", "iceberg", "operations"],
    default_args={"owner": "data-platform", "retries": 0, "retry_delay": timedelta(minutes=1)},
    params={
        "table": table_param("A table of pipelines.yaml whose dead letters are replayed."),
        "reason": Param(
            None,
            type=["null", "string"],
            maxLength=200,
            title="Reason contains",
            description="Only dead letters whose reason contains this text (any case).",
        ),
        "partition": Param(None, type=["null", "integer"], minimum=0, title="Kafka partition"),
        "from_offset": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            title="From offset",
            description="With a partition: offsets at or after this.",
        ),
        "to_offset": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            title="To offset",
            description="With a partition: offsets before this.",
        ),
        "from_time": Param(
            None,
            type=["null", "string"],
            format="date-time",
            maxLength=64,
            title="From time",
            description="Kafka records at or after this time.",
        ),
        "to_time": Param(
            None,
            type=["null", "string"],
            format="date-time",
            maxLength=64,
            title="To time",
            description="Kafka records before this time.",
        ),
        "dry_run": Param(
            True, type="boolean", title="Dry run", description="Report only; write nothing."
        ),
        "ignore_retention": Param(
            False,
            type="boolean",
            title="Ignore retention",
            description="Also apply changes older than the tombstone retention.",
        ),
    },
)
def cdc_dlq_replay() -> None:
    CdcDlqReplayOperator(task_id="replay", pool=WRITER_POOL, table="{{ params.table }}")


cdc_dlq_replay()
