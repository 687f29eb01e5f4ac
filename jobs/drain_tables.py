"""Drain many tables in one Spark application, each on its own.

Every configured table (:mod:`cdc_iceberg.pipelines`) is drained by
:func:`jobs.cdc_to_iceberg.drain` with settings of its own: its topic, its live,
tombstone and dead-letter tables, and a checkpoint under ``CHECKPOINT_LOCATION``
named after its Iceberg table. Nothing is shared between two tables but the
SparkSession, so a table's checkpoint lost, a table reset, or a table failing
touches no other.

Up to ``CDC_PARALLEL_TABLES`` drains run at once, each its own streaming query
with batches of at most ``MAX_OFFSETS_PER_TRIGGER`` records: a big table holds
one of those slots while the small ones come and go through the others, and
Spark's fair scheduler shares the executors between the batches that run at the
same time. A table that fails is reported with its error once every other table
has been drained.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cdc_iceberg import kafka_offsets
from cdc_iceberg.pipelines import PipelinesConfig, TableConfig
from cdc_iceberg.settings import Settings

log = logging.getLogger("cdc_to_iceberg")


@dataclass
class TableOutcome:
    """What a run did for one table: its drain's result, or the error that stopped it."""

    table: TableConfig
    result: Any = None  # jobs.cdc_to_iceberg.DrainResult
    error: BaseException | None = None

    def summary(self) -> dict[str, Any]:
        head = {"table": self.table.source, "iceberg_table": self.table.iceberg_table}
        if self.error is not None:
            return {**head, "event": "cdc_drain_failed", "error": str(self.error)}
        totals = self.result.totals()
        totals.pop("event", None)
        return {**head, "event": "cdc_drain", **totals}


def configured_tables(
    settings: Settings, config: PipelinesConfig, names: Sequence[str] = ()
) -> tuple[TableConfig, ...]:
    """The tables of ``config`` on the broker's topics now; only ``names`` if given."""
    found = config.resolve(kafka_offsets.topics(settings) if config.topics else ())
    if not names:
        return found
    return tuple(config.find(name, [t.topic for t in found]) for name in names)


def drain_tables(
    spark: Any,
    settings: Settings,
    tables: Sequence[TableConfig],
    *,
    dry_run: bool = False,
) -> list[TableOutcome]:
    """Drain every one of ``tables``; the outcome of each, in the order given."""
    from jobs.cdc_to_iceberg import drain

    def one(table: TableConfig) -> TableOutcome:
        # a Python thread is a JVM thread of its own (pinned threads): make the session the
        # active one there, as it is in the thread that built it (SQL settings, catalogs)
        spark._jvm.org.apache.spark.sql.SparkSession.setActiveSession(spark._jsparkSession)
        # each drain's Spark jobs go to a fair-scheduler pool of their own
        spark.sparkContext.setLocalProperty("spark.scheduler.pool", table.iceberg_table)
        try:
            name = threading.current_thread().name
            log.info("draining %s from %s (%s)", table.iceberg_table, table.topic, name)
            return TableOutcome(table, drain(spark, table.settings(settings), dry_run=dry_run))
        except kafka_offsets.TopicMissingError as error:
            log.info("%s: %s; nothing to drain yet", table.source, error)
            return TableOutcome(table, _empty())
        except Exception as error:  # one table failing never stops the others
            log.error("draining %s failed: %s", table.source, error)
            return TableOutcome(table, error=error)
        finally:
            spark.sparkContext.setLocalProperty("spark.scheduler.pool", None)

    if not tables:
        return []
    workers = min(settings.parallel_tables, len(tables))
    with ThreadPoolExecutor(workers, thread_name_prefix="drain") as pool:
        return list(pool.map(one, tables))


def _empty() -> Any:
    from jobs.cdc_to_iceberg import DrainResult

    return DrainResult([], {})
