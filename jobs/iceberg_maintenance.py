"""Iceberg table maintenance for the CDC tables.

Run::

    make maintain      # or: python jobs/iceberg_maintenance.py

For the live, tombstone and dead-letter tables: compact small files and fold
merge-on-read deletes into data files, rewrite manifests, expire snapshots
older than ``MAINTENANCE_SNAPSHOT_RETENTION_HOURS`` (keeping the last
``MAINTENANCE_RETAIN_LAST``), and remove orphan files. Tombstones older than
``CDC_TOMBSTONE_RETENTION_HOURS``, superseded by a newer live row, or outdated
by a newer tombstone of the same key, are pruned. The pipeline's offsets
survive: after a rewrite the newest progress record is copied into a fresh
snapshot before anything expires.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from cdc_iceberg.schema import SUMMARY_PIPELINE
from cdc_iceberg.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from jobs.iceberg_tables import IcebergTables

log = logging.getLogger("iceberg_maintenance")

_PROGRESS_KEYS = ("cdc.pipeline-id", "cdc.topic", "cdc.batch-id", "cdc.offsets")


def _timestamp(hours_ago: int) -> str:
    moment = time.gmtime(time.time() - hours_ago * 3600)
    return time.strftime("%Y-%m-%d %H:%M:%S", moment)


def prune_tombstones(spark: SparkSession, tables: IcebergTables, retention_hours: int) -> None:
    """Forget deletes past retention, those a newer live row has superseded, and
    all but the newest of a key's tombstones (the drain appends them).

    The delete of a primary-key change keeps its image (the row it removed) for
    the whole retention: the create of the new key, in another Kafka partition,
    may come later than a newer version of the old key. Such rows match neither
    MERGE (the condition is in ``ON``), so a table whose only extra rows are
    images is not rewritten on every run.
    """
    from pyspark.sql import functions as F

    from cdc_iceberg.schema import IMAGE
    from jobs.iceberg_tables import key_match, seq_newer

    order = tables.settings.sequence
    key = tables.model.key
    spark.sql(
        f"DELETE FROM {tables.tombstones} "
        f"WHERE deleted_at < TIMESTAMP '{_timestamp(retention_hours)}'"
    )
    # the live table is the MERGE's source, not a view over the tombstone table itself:
    # a copy-on-write MERGE cannot plan a source that reads its own target
    spark.sql(
        f"MERGE INTO {tables.tombstones} t USING {tables.live} l "
        f"ON {key_match('t', 'l', key)} AND {seq_newer('l', 't', order)} "
        f"AND t.{IMAGE} IS NULL WHEN MATCHED THEN DELETE"
    )
    # the newest tombstone per key, of the keys with an older one to forget (not an
    # image), materialized for the same reason
    newest_row = F.struct(*order)
    plain = F.col(IMAGE).isNull()
    newest = (
        spark.table(tables.tombstones)
        .groupBy(*key)
        .agg(
            F.max(newest_row).alias("n"),
            F.count(F.when(plain, 1)).alias("plain"),
            F.max_by(plain, newest_row).alias("newest_plain"),
        )
        .where(F.col("plain") > F.when(F.col("newest_plain"), 1).otherwise(0))
        .select(*key, *[F.col(f"n.{c}").alias(c) for c in order])
        .localCheckpoint()
    )
    if newest.isEmpty():
        return
    newest.createOrReplaceTempView("cdc_newest_tombstones")
    spark.sql(
        f"MERGE INTO {tables.tombstones} t USING cdc_newest_tombstones n "
        f"ON {key_match('t', 'n', key)} AND {seq_newer('n', 't', order)} "
        f"AND t.{IMAGE} IS NULL WHEN MATCHED THEN DELETE"
    )


def restamp_progress(tables: IcebergTables, attempts: int = 5) -> bool:
    """Copy the newest progress record into a new snapshot if the current one lacks it.

    The copy lands only on the snapshot it was read from: if the drain (or any
    writer) commits meanwhile, it is read again, so a stale position can never
    become the newest. Raises when every attempt lost that race, and then the
    caller must not expire snapshots (the progress record could go with them).
    """
    for _ in range(attempts):
        current = tables.current_snapshot_id()
        if current is None or SUMMARY_PIPELINE in tables.snapshot_summary(current):
            return False
        latest = tables.latest_pipeline_summary()
        if latest is None:
            return False
        progress = {k: latest[k] for k in _PROGRESS_KEYS if k in latest}
        if tables.commit_progress_after(current, progress):
            return True
        time.sleep(1.0)
    raise RuntimeError(
        f"the progress record of {tables.live} could not be carried into a new snapshot: "
        f"other commits kept landing ({attempts} attempts); snapshots were not expired"
    )


def maintain_table(spark: SparkSession, settings: Settings, table: str) -> dict[str, Any]:
    from jobs.iceberg_tables import rewrite_data_files_sql, sql_retrying

    catalog = settings.iceberg_catalog_name
    name = table.split(".", 1)[1]
    target = settings.maintenance_target_file_mb * 1024 * 1024
    report: dict[str, Any] = {"table": name}
    # the drain may commit meanwhile: a step that loses that race is planned again
    rows = sql_retrying(spark, rewrite_data_files_sql(table, target))
    report["rewritten_files"] = int(rows[0][0]) if rows else 0
    sql_retrying(spark, f"CALL {catalog}.system.rewrite_manifests('{name}')")
    return report


def expire_and_clean(spark: SparkSession, settings: Settings, table: str) -> dict[str, Any]:
    catalog = settings.iceberg_catalog_name
    name = table.split(".", 1)[1]
    expired = spark.sql(
        f"CALL {catalog}.system.expire_snapshots(table => '{name}', "
        f"older_than => TIMESTAMP '{_timestamp(settings.maintenance_snapshot_retention_hours)}', "
        f"retain_last => {int(settings.maintenance_retain_last)})"
    ).collect()
    orphans = spark.sql(
        f"CALL {catalog}.system.remove_orphan_files(table => '{name}', "
        f"older_than => TIMESTAMP '{_timestamp(settings.maintenance_orphan_age_hours)}')"
    ).collect()
    return {
        "expired_data_files": int(expired[0][0]) if expired else 0,
        "orphan_files_removed": len(orphans),
    }


def main(argv: list[str] | None = None) -> int:
    from jobs.iceberg_tables import IcebergTables
    from jobs.session import build_session

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    spark = build_session(settings, app_name="iceberg_maintenance")
    try:
        tables = IcebergTables.declared(spark, settings)
        tables.ensure()
        prune_tombstones(spark, tables, settings.tombstone_retention_hours)
        reports = []
        for table in (tables.live, tables.tombstones, tables.dlq):
            reports.append(maintain_table(spark, settings, table))
        restamped = restamp_progress(tables)
        for table, report in zip(
            (tables.live, tables.tombstones, tables.dlq), reports, strict=True
        ):
            report.update(expire_and_clean(spark, settings, table))
        print(
            json.dumps({"event": "iceberg_maintenance", "restamped": restamped, "tables": reports}),
            flush=True,
        )
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
