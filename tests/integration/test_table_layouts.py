"""The job on a copy-on-write live table: the same rows as on the shipped merge-on-read one."""

from __future__ import annotations

from typing import Any

import pytest
from reference_fold import fold
from support import assert_ranges_tile, assert_table_equals_fold, send

from cdc_iceberg import kafka_offsets
from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.settings import Settings
from jobs.cdc_to_iceberg import drain
from jobs.iceberg_tables import IcebergTables

pytestmark = pytest.mark.integration


def test_copy_on_write_live_table_with_tombstones(spark: Any, pipeline: Settings) -> None:
    """Deletes fill the tombstone table; later batches read it in the live MERGE's source."""
    tables = IcebergTables(spark, pipeline)
    tables.ensure()
    modes = ", ".join(
        f"'write.{kind}.mode'='copy-on-write'" for kind in ("merge", "update", "delete")
    )
    spark.sql(f"ALTER TABLE {tables.live} SET TBLPROPERTIES ({modes})")
    source = ArticleSource(seed=31, partitions=2)
    records = send(
        pipeline,
        source.random_history(700, 60, snapshot_rows=30, delete_share=0.2, toast_share=0.2),
        2,
    )
    settings = pipeline.replace(max_offsets_per_trigger=200)

    result = drain(spark, settings)

    assert len(result.batches) >= 3
    assert sum(b.deleted for b in result.batches) > 0
    properties = tables.java_table().properties()
    assert str(properties.get("write.merge.mode")) == "copy-on-write"
    assert_table_equals_fold(settings, fold(records).rows)
    assert_ranges_tile(settings, kafka_offsets.end_offsets(settings))
