"""Read the Iceberg tables with pyiceberg: state for validation, progress, metrics.

pyiceberg reads the same SQL catalog the Spark job writes, so Airflow tasks
inspect the table without starting Spark.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

from cdc_iceberg.checks import TableStats
from cdc_iceberg.schema import (
    RESERVED,
    SUMMARY_METRICS,
    SUMMARY_OFFSETS,
    SUMMARY_PIPELINE,
    SUMMARY_RANGE,
    SUMMARY_TOPIC,
)
from cdc_iceberg.settings import Settings


def catalog(settings: Settings) -> Any:
    """The pyiceberg catalog of the settings, the one Spark writes: ``SqlCatalog`` on the
    JDBC catalog's database (ICEBERG_CATALOG_TYPE=jdbc) or ``RestCatalog`` on the REST
    catalog server (rest). Every pyiceberg catalog of the product is built here."""
    settings.ensure_local_dirs()
    if settings.iceberg_catalog_type == "rest":
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog(
            settings.iceberg_catalog_name,
            uri=settings.iceberg_catalog_uri,
            warehouse=settings.iceberg_warehouse,
            **file_io_properties(settings),
        )
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog(
        settings.iceberg_catalog_name,
        uri=settings.iceberg_catalog_uri,
        warehouse=settings.iceberg_warehouse,
        **file_io_properties(settings),
    )


def file_io_properties(settings: Settings) -> dict[str, str]:
    """pyiceberg's FileIO properties for an ``s3://`` warehouse (pyarrow's S3 file system).

    The same store, region and addressing as Spark's S3FileIO (spark_conf). Credentials
    are left to pyarrow's AWS SDK, which reads them from the environment.
    """
    if urlparse(settings.iceberg_warehouse).scheme not in ("s3", "s3a"):
        return {}
    properties = {"s3.region": settings.s3_region}
    if settings.iceberg_s3_endpoint:
        properties["s3.endpoint"] = settings.iceberg_s3_endpoint
        properties["s3.force-virtual-addressing"] = "false"  # path-style, as for Spark
    return properties


def table_exists(settings: Settings, table: str | None = None) -> bool:
    return bool(catalog(settings).table_exists(table or settings.iceberg_table))


def ancestry(table: Any) -> list[Any]:
    """Snapshots of the current branch, newest first."""
    by_id = {s.snapshot_id: s for s in table.snapshots()}
    chain = []
    current = table.current_snapshot()
    while current is not None:
        chain.append(current)
        parent = current.parent_snapshot_id
        current = by_id.get(parent) if parent is not None else None
    return chain


def snapshot_summary(snapshot: Any) -> dict[str, str]:
    return dict(snapshot.summary.additional_properties) if snapshot.summary else {}


def current_snapshot_id(settings: Settings) -> int | None:
    if not table_exists(settings):
        return None
    snapshot = catalog(settings).load_table(settings.iceberg_table).current_snapshot()
    return int(snapshot.snapshot_id) if snapshot is not None else None


def committed_offsets(settings: Settings, pipeline_id: str | None = None) -> dict[int, int]:
    """End offsets the table records for a pipeline (empty if it never committed)."""
    if not table_exists(settings):
        return {}
    return offsets_in(catalog(settings).load_table(settings.iceberg_table), settings, pipeline_id)


def offsets_in(table: Any, settings: Settings, pipeline_id: str | None = None) -> dict[int, int]:
    """:func:`committed_offsets` of a table already loaded."""
    for snapshot in ancestry(table):
        summary = snapshot_summary(snapshot)
        if is_progress(summary, settings, pipeline_id):
            return {int(p): int(o) for p, o in json.loads(summary[SUMMARY_OFFSETS]).items()}
    return {}


def is_progress(
    summary: dict[str, str], settings: Settings, pipeline_id: str | None = None
) -> bool:
    """Whether a snapshot summary is a step of the pipeline's progress on the table's topic."""
    return (
        summary.get(SUMMARY_PIPELINE) == (pipeline_id or settings.pipeline_id)
        and summary.get(SUMMARY_TOPIC) == settings.kafka_topic
        and SUMMARY_OFFSETS in summary
    )


def batch_metrics(snapshot: Any, summary: dict[str, str]) -> dict[str, Any]:
    """What the batch committed as ``snapshot`` did: its metrics, range and MERGE counts."""
    metrics: dict[str, Any] = json.loads(summary.get(SUMMARY_METRICS, "{}"))
    metrics.update(
        snapshot_id=snapshot.snapshot_id,
        offsets=json.loads(summary.get(SUMMARY_RANGE, "{}")),
        inserted=int(summary.get("spark.merge-into.num-target-rows-inserted", 0)),
        updated=int(summary.get("spark.merge-into.num-target-rows-updated", 0)),
        deleted=int(summary.get("spark.merge-into.num-target-rows-deleted", 0)),
    )
    return metrics


def last_batch(table: Any, settings: Settings) -> dict[str, Any] | None:
    """The pipeline's newest batch on a loaded table: its metrics and ``committed_at_ms``."""
    for snapshot in ancestry(table):
        summary = snapshot_summary(snapshot)
        if is_progress(summary, settings):
            batch = batch_metrics(snapshot, summary)
            batch.update(committed_at_ms=snapshot.timestamp_ms)
            batch.pop("pipeline_id", None)
            return batch
    return None


def batches_since(settings: Settings, snapshot_id: int | None) -> list[dict[str, Any]]:
    """Batch metrics of the pipeline's commits made after ``snapshot_id``, oldest first."""
    if not table_exists(settings):
        return []
    table = catalog(settings).load_table(settings.iceberg_table)
    out = []
    for snapshot in ancestry(table):
        if snapshot_id is not None and snapshot.snapshot_id == snapshot_id:
            break
        summary = snapshot_summary(snapshot)
        if summary.get(SUMMARY_PIPELINE) != settings.pipeline_id:
            continue
        out.append(batch_metrics(snapshot, summary))
    return list(reversed(out))


def dead_letters(settings: Settings, since_ms: int | None = None) -> list[dict[str, Any]]:
    """Dead letters (coordinates, reason, time, what a replay made of them); with
    ``since_ms`` only those written since."""
    if not table_exists(settings, settings.iceberg_dlq_table):
        return []
    rows = dead_letters_in(catalog(settings).load_table(settings.iceberg_dlq_table))
    if since_ms is None:
        return rows
    return [r for r in rows if r["dead_lettered_at"].timestamp() * 1000 >= since_ms]


def dead_letters_in(table: Any) -> list[dict[str, Any]]:
    """:func:`dead_letters` of a dead-letter table already loaded, all of them."""
    fields: tuple[str, ...] = ("kafka_partition", "kafka_offset", "reason", "dead_lettered_at")
    if "replay_outcome" in {f.name for f in table.schema().fields}:  # older tables lack it
        fields = (*fields, "replay_outcome")
    return list(table.scan(selected_fields=fields).to_arrow().to_pylist())


def table_key(settings: Settings, table: Any | None = None) -> tuple[str, ...]:
    """The key columns of the live table: its identifier fields, else the declared key."""
    from cdc_iceberg import pipelines

    table = table or catalog(settings).load_table(settings.iceberg_table)
    schema = table.schema()
    names = set(schema.identifier_field_names())
    if names:
        return tuple(f.name for f in schema.fields if f.name in names)
    declared = pipelines.load(settings.pipelines_file).declared_model(settings.kafka_topic)
    if declared is None:
        raise ValueError(
            f"{settings.iceberg_table} records no key and {settings.pipelines_file} declares none"
        )
    return declared.key


def table_stats(settings: Settings, since_ms: int) -> TableStats:
    """Row count, duplicate and null keys, newest change time, dead letters (new since a
    time), when the newest batch was committed."""
    import pyarrow.compute as pc

    table = catalog(settings).load_table(settings.iceberg_table)
    key = table_key(settings, table)
    arrow = table.scan(selected_fields=(*key, "ts_ms")).to_arrow()
    complete = arrow.select(list(key)).drop_null()
    duplicates: dict[str, int] = {}
    if complete.num_rows:
        counts = complete.group_by(list(key)).aggregate([([], "count_all")])
        for item in counts.filter(pc.greater(counts["count_all"], 1)).to_pylist():
            parts = [str(item[k]) for k in key]
            duplicates[parts[0] if len(parts) == 1 else f"({', '.join(parts)})"] = item["count_all"]
    newest = pc.max(arrow.column("ts_ms")).as_py() if arrow.num_rows else None
    letters = dead_letters(settings)
    new = [r for r in letters if r["dead_lettered_at"].timestamp() * 1000 >= since_ms]
    return TableStats(
        rows=arrow.num_rows,
        duplicate_keys=duplicates,
        null_keys=arrow.num_rows - complete.num_rows,
        newest_ts_ms=newest,
        dead_letters=len(letters),
        new_dead_letters=len(new),
        new_incompatible_schema=sum(
            1 for r in new if (r["reason"] or "").startswith("incompatible schema change")
        ),
        key=key,
        last_commit_ms=(last_batch(table, settings) or {}).get("committed_at_ms"),
    )


def sample_rows(
    settings: Settings, limit: int = 5, columns: tuple[str, ...] | None = None
) -> list[dict[str, Any]]:
    """A few rows of the live table: ``columns`` (the key, a few more and the sequence)."""
    table = catalog(settings).load_table(settings.iceberg_table)
    if columns is None:
        key = table_key(settings, table)
        names = [f.name for f in table.schema().fields]
        rest = [n for n in names if n not in key and n not in RESERVED][: max(0, 5 - len(key))]
        columns = (*key, *rest, "ts_ms", "lsn")
    return table.scan(selected_fields=columns, limit=limit).to_arrow().to_pylist()
