"""Offsets lost to Kafka retention while the pipeline was stopped, recovered with cdc_reset.

The real job (spark-submit) drains, stops; records arrive and retention
deletes them before they are applied. The next drain must fail loudly (exit
code 2, a message naming the cdc_reset DAG) without committing anything; the
reset the DAG performs (scope ``offsets``, from the earliest retained record)
then lets the next drain apply everything still retained exactly once, on top
of what was applied before the gap.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from harness import describe, run_job
from invariants import assert_rerun_changes_nothing, check_invariants, pipeline_state, snapshot_ids
from support import send

from cdc_iceberg import kafka_offsets
from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.reset import apply_reset, plan_reset
from cdc_iceberg.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.faults]

NAME = "offsets lost to retention while stopped, then cdc_reset"


def test_retention_gap_fails_loudly_and_reset_recovers(
    pipeline: Settings, scenario_report: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from kafka import TopicPartition

    scenario_report(
        name=NAME,
        injected=(
            "records deleted by retention (delete_records) before they were applied, "
            "then a drain, the cdc_reset 'offsets' scope and a drain"
        ),
        invariants=["I1", "I2", "I3", "I4", "I5", "I6", "fails loudly, commits nothing"],
    )
    started = time.monotonic()
    settings = pipeline.replace(max_offsets_per_trigger=200)
    source = ArticleSource(seed=75, partitions=2)
    first = send(settings, source.random_history(300, 60, snapshot_rows=20), 2)
    assert run_job(settings).returncode == 0
    lost = send(settings, source.random_history(200, 60), 2)
    with kafka_offsets.admin(settings) as admin:
        admin.delete_records(
            {
                TopicPartition(settings.kafka_topic, p): max(
                    r.offset for r in lost if r.partition == p
                )
                + 1
                for p in {r.partition for r in lost}
            }
        )
    after = send(settings, source.random_history(200, 60), 2)
    history = snapshot_ids(settings)
    state = pipeline_state(settings)

    refused = run_job(settings)

    assert refused.returncode == 2, describe(refused)
    assert "cdc_reset" in refused.stdout and "retention" in refused.stdout
    assert pipeline_state(settings) == state, "the failed drain changed the pipeline"

    plan = plan_reset(settings, "offsets", settings.iceberg_table, "earliest")
    apply_reset(settings, plan)
    recovered = run_job(settings)
    assert recovered.returncode == 0, describe(recovered)

    # what retention deleted is gone; everything retained is applied on top of the earlier state
    counts = check_invariants(settings, first + lost + after, snapshots_before=history)
    assert counts["committed_records"] == len(first) + len(after)
    assert_rerun_changes_nothing(settings, lambda: run_job(settings))
    counts["lost_to_retention"] = len(lost)
    scenario_report(name=NAME, counts=counts)
    with capsys.disabled():
        print(f"\n{NAME}: {time.monotonic() - started:.0f} s, {counts}")
