"""The job in either ICEBERG_WRITE_MODE: the same rows, and a table switches mode on request."""

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


@pytest.mark.parametrize("mode", ["merge-on-read", "copy-on-write"])
def test_write_mode_is_applied_and_the_table_is_right(
    spark: Any, pipeline: Settings, mode: str
) -> None:
    """Deletes fill the tombstone table; later batches read it in the live MERGE's source.

    The tables start in the other mode: ``ensure`` switches them to ICEBERG_WRITE_MODE.
    """
    other = "copy-on-write" if mode == "merge-on-read" else "merge-on-read"
    IcebergTables.declared(spark, pipeline.replace(iceberg_write_mode=other)).ensure()
    settings = pipeline.replace(max_offsets_per_trigger=200, iceberg_write_mode=mode)
    tables = IcebergTables.declared(spark, settings)
    source = ArticleSource(seed=31, partitions=2)
    records = send(
        settings,
        source.random_history(700, 60, snapshot_rows=30, delete_share=0.2, toast_share=0.2),
        2,
    )

    result = drain(spark, settings)

    assert len(result.batches) >= 3
    assert sum(b.deleted for b in result.batches) > 0
    for table in (tables.live, tables.tombstones):
        properties = tables.java_table(table).properties()
        for kind in ("merge", "update", "delete"):
            assert str(properties.get(f"write.{kind}.mode")) == mode, (table, kind)
    assert_table_equals_fold(settings, fold(records).rows)
    assert_ranges_tile(settings, kafka_offsets.end_offsets(settings))
