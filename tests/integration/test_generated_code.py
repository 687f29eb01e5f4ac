"""A long-running drain reuses the code Spark generates for a batch.

Spark compiles Java code for every stage and projection of a batch's plan,
about 60 classes for this job's batch and 10 to 300 ms each. The classes of
one batch serve the next only if Spark's cache of generated classes holds
them all; with Spark's default of 100 entries, this job's plans evicted each
other and every batch compiled them again, about a second per batch.
"""

from __future__ import annotations

from typing import Any

import pytest
from reference_fold import fold
from support import assert_table_equals_fold, send

from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.settings import Settings
from jobs.cdc_to_iceberg import drain

pytestmark = pytest.mark.integration


def _compilations(spark: Any) -> int:
    """How many classes this JVM's Spark has compiled so far."""
    metrics = spark.sparkContext._jvm.org.apache.spark.metrics.source.CodegenMetrics
    return int(metrics.METRIC_COMPILATION_TIME().getCount())


def test_later_batches_compile_almost_nothing(spark: Any, pipeline: Settings) -> None:
    source = ArticleSource(seed=31, partitions=3)
    history = source.random_history(900, 120, toast_share=0.2, same_ms_share=0.3)
    settings = pipeline.replace(max_offsets_per_trigger=250)
    records = send(settings, history[:450])
    drain(spark, settings)  # compiles what a batch of this pipeline needs
    records += send(settings, history[450:])

    before = _compilations(spark)
    result = drain(spark, settings)
    compiled = _compilations(spark) - before

    batches = [b for b in result.batches if b.events_in]
    assert len(batches) >= 2
    assert_table_equals_fold(settings, fold(records).rows)
    # a batch's own offsets and ids are literals in a few classes; the rest is reused
    assert compiled <= 15 * len(batches), f"{compiled} classes compiled for {len(batches)} batches"
