"""``CDC_TRUNCATE_POLICY=clear``: a truncate empties the table up to its own sequence."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from reference_fold import fold
from support import assert_table_equals_fold, read_rows, send

from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.settings import Settings
from jobs.cdc_to_iceberg import drain

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("batch", [45, 10_000], ids=["truncate-mid-run", "one-batch"])
def test_clear_policy_keeps_only_changes_after_the_truncate(
    spark: Any, pipeline: Settings, batch: int
) -> None:
    settings = pipeline.replace(max_offsets_per_trigger=batch, truncate_policy="clear")
    source = ArticleSource(seed=51, partitions=1)
    before = source.random_history(150, 25, delete_share=0.15)
    truncate = source.to_messages([source.truncate()])
    after = source.random_history(90, 15, delete_share=0.1)
    records = send(settings, [*before, *truncate, *after], 1)
    cut = len(before)
    assert records[cut].value is not None and b'"op":"t"' in records[cut].value.replace(b" ", b"")

    drain(spark, settings)

    # the reference: the changes after the truncate, on an empty table
    expected = fold(records[cut + 1 :]).rows
    assert_table_equals_fold(settings, expected)
    assert read_rows(settings, settings.iceberg_dlq_table) == [], "a cleared truncate is no error"

    # everything from before the truncate delivered again (a connector restarted from an
    # old offset): the truncate's tombstones keep every one of those rows out
    redelivered = send(settings, before, 1)
    assert {r.key for r in redelivered if r.key} >= {r.key for r in records[:cut] if r.key}
    drain(spark, settings)
    assert_table_equals_fold(settings, expected)


def test_a_truncate_without_its_sequence_is_a_dead_letter(spark: Any, pipeline: Settings) -> None:
    """The 'clear' policy cannot place a truncate with no source.ts_ms: it is not applied."""
    settings = pipeline.replace(truncate_policy="clear")
    source = ArticleSource(seed=52, partitions=1)
    before = source.random_history(40, 10)
    [message] = source.to_messages([source.truncate()])
    assert message.value is not None
    envelope = json.loads(message.value)
    envelope.get("payload", envelope)["source"]["ts_ms"] = None
    broken = dataclasses.replace(message, value=json.dumps(envelope).encode())
    records = send(settings, [*before, broken], 1)

    drain(spark, settings)

    # nothing cleared: the table holds the changes before it
    assert_table_equals_fold(settings, fold(records).rows)
    dead = read_rows(settings, settings.iceberg_dlq_table)
    assert [d["reason"] for d in dead] == ["ordering field source.ts_ms is null"]
