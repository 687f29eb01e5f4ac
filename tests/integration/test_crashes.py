"""Crashes injected at every step of a batch, with the real job in its own process.

The driver is killed with SIGKILL at a failpoint (before the MERGE, after the
Iceberg commit, after Spark's checkpoint commit, after the group commit) or
its checkpoint is lost; the rerun must leave the table equal to the reference
fold with every offset applied exactly once.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from reference_fold import fold
from support import (
    assert_ranges_tile,
    assert_table_equals_fold,
    committed_ranges,
    dead_letters,
    run_job,
    send,
)

from cdc_iceberg import kafka_offsets, table_state
from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.reset import apply_reset, plan_reset
from cdc_iceberg.settings import Settings
from jobs.cdc_to_iceberg import RetentionGapError, drain

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "point",
    ["before_merge", "after_iceberg_commit", "after_checkpoint_commit", "after_group_commit"],
)
def test_crash_then_rerun_is_exact(pipeline: Settings, point: str) -> None:
    settings = pipeline.replace(max_offsets_per_trigger=250)
    source = ArticleSource(seed=61, partitions=2)
    records = send(
        settings, source.random_history(600, 80, snapshot_rows=40, redelivery_share=0.03), 2
    )

    crashed = run_job(settings, failpoint=f"{point}@1")
    assert crashed.returncode != 0, crashed.stdout[-2000:]
    assert f"failpoint {point} reached at batch 1" in crashed.stderr + crashed.stdout
    if point == "after_checkpoint_commit":
        # the crash left the group behind the table: the rerun must align it
        group = kafka_offsets.committed_offsets(settings)
        assert group != table_state.committed_offsets(settings), "crash outside the window"

    rerun = run_job(settings)
    assert rerun.returncode == 0, rerun.stderr[-4000:]

    assert_table_equals_fold(settings, fold(records).rows)
    end = kafka_offsets.end_offsets(settings)
    assert_ranges_tile(settings, end)  # no offset range applied twice, none skipped
    assert kafka_offsets.committed_offsets(settings) == end
    assert dead_letters(settings) == []


def test_lost_checkpoint_resumes_from_the_table(spark: Any, pipeline: Settings) -> None:
    source = ArticleSource(seed=62, partitions=2)
    records = send(pipeline, source.random_history(300, 50, snapshot_rows=20), 2)
    drain(spark, pipeline)
    shutil.rmtree(pipeline.checkpoint_location)
    later = send(pipeline, source.random_history(200, 50), 2)

    result = drain(spark, pipeline)

    assert sum(b.events_in for b in result.batches) == len(later), "only new records are read"
    assert_table_equals_fold(pipeline, fold(records + later).rows)
    assert_ranges_tile(pipeline, kafka_offsets.end_offsets(pipeline))


def test_retention_gap_fails_loudly_and_reset_recovers(spark: Any, pipeline: Settings) -> None:
    from kafka import TopicPartition

    source = ArticleSource(seed=63, partitions=1)
    first = send(pipeline, source.random_history(120, 30, snapshot_rows=10), 1)
    drain(spark, pipeline)
    lost = send(pipeline, source.random_history(80, 30), 1)
    # retention removes everything written so far, including records never applied
    with kafka_offsets.admin(pipeline) as admin:
        admin.delete_records({TopicPartition(pipeline.kafka_topic, 0): lost[-1].offset + 1})
    after = send(pipeline, source.random_history(60, 30), 1)

    with pytest.raises(RetentionGapError, match="cdc_reset"):
        drain(spark, pipeline)

    plan = plan_reset(pipeline, "offsets", pipeline.iceberg_table, "earliest")
    apply_reset(pipeline, plan)
    drain(spark, pipeline)

    # what retention deleted is gone; everything retained is applied on top of the earlier state
    assert_table_equals_fold(pipeline, fold(first + after).rows)
    assert committed_ranges(pipeline)[-1][0][1] == after[-1].offset + 1
