"""The four contenders, all fed by the same Kafka topic, and what is measured of their tables.

Run through ``bench/run.py`` (each contender in a worker process of its own)::

    cd /work/main && nice -n 19 .venv/bin/python bench/run.py --quick

1. ``product``: :func:`jobs.cdc_to_iceberg.drain`, as shipped (bucketed
   table in ``ICEBERG_WRITE_MODE``, settings from :class:`cdc_iceberg.settings.Settings`).
2. ``naive``: the pattern of the original design document: ``foreachBatch``,
   dedup with a window on ``(article_id, ts_ms)``, then
   ``MERGE ... WHEN MATCHED AND s.ts_ms > t.ts_ms THEN UPDATE SET *
   WHEN NOT MATCHED THEN INSERT *`` into an unpartitioned table with Iceberg's
   default properties (copy-on-write) and Spark's default settings (200 shuffle
   partitions) plus the seed's four session settings. It reads ``after`` and
   the envelope ``ts_ms`` as the seed does, and so has no delete clause:
   deletes are dropped (their ``after`` is null), TOAST placeholders are
   written as values.
3. ``pyiceberg``: a kafka-python consumer polls ``batch`` records, folds them
   in Python to the newest change per key, then one pyiceberg transaction:
   ``delete(In(article_id, deleted keys))`` and ``upsert()`` of the rest;
   offsets are committed to the consumer group after the commit.
4. ``append``: the ceiling: the product's Kafka read and parse
   (:func:`jobs.transforms.parse_events`, :func:`jobs.transforms.type_columns`)
   appended to a table of the product's layout, with no MERGE.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from cdc_iceberg.settings import Settings

SNAPSHOT_PROPERTY = "spark.sql.iceberg.snapshot-property."
BENCH_BATCH = "bench.batch-id"
ROW_DDL = (
    "article_id string, title string, url string, source string, author string, body string, "
    "published_at string, updated_at string, word_count int"
)
NAIVE_EVENT_DDL = f"before struct<{ROW_DDL}>, after struct<{ROW_DDL}>, op string, ts_ms bigint"
ARTICLE_COLUMNS = (
    "article_id string, title string, url string, source string, author string, body string, "
    "published_at timestamp, updated_at timestamp, word_count int"
)
_SPARK_DEFAULTS = (
    "spark.sql.sources.v2.bucketing.enabled",
    "spark.sql.sources.v2.bucketing.pushPartValues.enabled",
    "spark.sql.requireAllClusterKeysForCoPartition",
    "spark.sql.sources.v2.bucketing.partiallyClusteredDistribution.enabled",
)
# -- tables ------------------------------------------------------------------------


def create_table(spark: SparkSession, settings: Settings, kind: str) -> str:
    """Create the table a contender writes; return its qualified name."""
    from jobs.iceberg_tables import IcebergTables, create_live_sql

    table = settings.qualified(settings.iceberg_table)
    namespace = settings.iceberg_table.split(".")[0]
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {settings.iceberg_catalog_name}.{namespace}")
    if kind == "product":  # in the settings' ICEBERG_WRITE_MODE
        IcebergTables.declared(spark, settings).ensure()
    elif kind == "append":
        model = IcebergTables.declared(spark, settings).given
        assert model is not None, "pipelines.yaml declares the workload's table"
        spark.sql(
            create_live_sql(table, model, settings.iceberg_buckets, settings.iceberg_write_mode)
        )
    elif kind == "naive":
        spark.sql(f"CREATE TABLE {table} ({ARTICLE_COLUMNS}, ts_ms bigint) USING iceberg")
    elif kind == "pyiceberg":
        spark.sql(
            f"CREATE TABLE {table} ({ARTICLE_COLUMNS}, ts_ms bigint, lsn bigint) USING iceberg"
        )
    else:
        raise ValueError(f"unknown table kind {kind!r}")
    return table


def tables_of(settings: Settings, kind: str) -> list[str]:
    """Every table a contender writes (the product also writes tombstones and dead letters)."""
    if kind == "product":
        return [
            settings.qualified(settings.iceberg_table),
            settings.qualified(settings.tombstone_table),
            settings.qualified(settings.iceberg_dlq_table),
        ]
    return [settings.qualified(settings.iceberg_table)]


def batch_key(kind: str) -> str:
    from cdc_iceberg.schema import SUMMARY_BATCH

    return SUMMARY_BATCH if kind == "product" else BENCH_BATCH


def bytes_by_batch(spark: SparkSession, tables: list[str], key: str) -> list[dict[str, Any]]:
    """Per batch, what its commits added (``added-files-size`` of the snapshot summaries)."""
    per: dict[int, dict[str, int]] = {}
    for table in tables:
        rows = spark.sql(f"SELECT operation, summary FROM {table}.snapshots").collect()
        for row in rows:
            summary = row["summary"] or {}
            if key not in summary:
                continue
            entry = per.setdefault(
                int(summary[key]),
                {"added_bytes": 0, "added_data_files": 0, "added_delete_files": 0, "commits": 0},
            )
            entry["added_bytes"] += int(summary.get("added-files-size", 0) or 0)
            entry["added_data_files"] += int(summary.get("added-data-files", 0) or 0)
            entry["added_delete_files"] += int(summary.get("added-delete-files", 0) or 0)
            entry["commits"] += 1
    return [{"batch_id": b, **per[b]} for b in sorted(per)]


def file_counts(spark: SparkSession, table: str) -> dict[str, int]:
    rows = spark.sql(
        f"SELECT summary FROM {table}.snapshots ORDER BY committed_at DESC LIMIT 1"
    ).collect()
    summary = rows[0]["summary"] if rows else {}
    keys = (
        "total-data-files",
        "total-delete-files",
        "total-records",
        "total-files-size",
        "total-position-deletes",
    )
    return {k: int(summary.get(k, 0) or 0) for k in keys}


def full_scan(spark: SparkSession, table: str) -> None:
    """Read every column of every live row (the noop sink forces the whole scan)."""
    spark.table(table).write.format("noop").mode("overwrite").save()


def reset_to_spark_defaults(spark: SparkSession) -> None:
    """Drop the product's bucketing settings from the session (the naive job has none)."""
    for key in _SPARK_DEFAULTS:
        spark.conf.unset(key)


# -- batch timing shared by the Spark contenders ------------------------------------


class _StepLog(logging.Handler):
    """Collects the job's DEBUG ``batch N steps {...}`` lines (and writes each at once)."""

    def __init__(self, out: Callable[..., None] | None = None) -> None:
        super().__init__(level=logging.DEBUG)
        self.steps: dict[int, dict[str, float]] = {}
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "batch %s steps %s" and isinstance(record.args, tuple):
            batch_id, steps = record.args
            self.steps[int(batch_id)] = dict(steps)
            if self.out is not None:
                self.out("steps", batch_id=int(batch_id), steps=dict(steps))


def _progress_listener(
    spark: SparkSession, out: Callable[..., None] | None = None
) -> tuple[Any, dict[int, dict[str, Any]]]:
    """A StreamingQueryListener recording Spark's own duration of every micro-batch.

    With ``out``, each batch is also written at once as a ``progress`` line, so a
    contender stopped at its time limit still leaves its batches.
    """
    from pyspark.sql.streaming import StreamingQueryListener

    seen: dict[int, dict[str, Any]] = {}

    class Progress(StreamingQueryListener):
        def onQueryStarted(self, event: Any) -> None:
            pass

        def onQueryProgress(self, event: Any) -> None:
            progress = event.progress
            durations = dict(progress.durationMs or {})
            if not progress.numInputRows:
                return
            jobs = spark_jobs_by_batch(spark).get(int(progress.batchId), {})
            seen[int(progress.batchId)] = {
                **jobs,
                "records": _records(progress),
                "trigger_s": durations.get("triggerExecution", 0) / 1000,
                "add_batch_s": durations.get("addBatch", 0) / 1000,
                "commit_log_s": (durations.get("walCommit", 0) + durations.get("commitOffsets", 0))
                / 1000,
            }
            if out is not None:
                out("progress", batch_id=int(progress.batchId), **seen[int(progress.batchId)])

        def onQueryIdle(self, event: Any) -> None:
            pass

        def onQueryTerminated(self, event: Any) -> None:
            pass

    listener = Progress()
    spark.streams.addListener(listener)
    return listener, seen


def _records(progress: Any) -> int:
    """Records of the batch from its offset range (``numInputRows`` counts every re-read)."""
    total = 0
    for source in progress.sources or []:
        try:
            start = json.loads(source.startOffset) if source.startOffset else {}
            end = json.loads(source.endOffset) if source.endOffset else {}
        except (TypeError, ValueError):
            return int(progress.numInputRows)
        for topic, partitions in end.items():
            begin = start.get(topic, {}) if isinstance(start, dict) else {}
            for partition, offset in partitions.items():
                total += int(offset) - int(begin.get(partition, 0))  # fresh topics start at 0
    return total or int(progress.numInputRows)


def offset_log_records(checkpoint: str, topic: str) -> dict[int, int]:
    """Records of each micro-batch from the end offsets Spark logs ahead in ``offsets/N``.

    Exact, whatever the batch function does with its DataFrame (the benchmark
    topics are fresh, so the first batch starts at offset 0).
    """
    directory = Path(checkpoint) / "offsets"
    ends: dict[int, dict[int, int]] = {}
    if not directory.is_dir():
        return {}
    for path in directory.iterdir():
        if not path.name.isdigit():
            continue
        for line in path.read_text().splitlines()[2:]:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and topic in data:
                ends[int(path.name)] = {int(p): int(o) for p, o in data[topic].items()}
    out: dict[int, int] = {}
    previous: dict[int, int] = {}
    for batch in sorted(ends):
        if batch - 1 in ends or batch == min(ends):
            out[batch] = sum(o - previous.get(p, 0) for p, o in ends[batch].items())
        previous = ends[batch]
    return out


def _with_records(batches: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    counted = offset_log_records(settings.checkpoint_location, settings.kafka_topic)
    for batch in batches:
        if batch["batch_id"] in counted:
            batch["records"] = counted[batch["batch_id"]]
    return batches


_BATCH_DESCRIPTION = re.compile(r"batch = (\d+)$")


def spark_jobs_by_batch(spark: SparkSession) -> dict[int, dict[str, Any]]:
    """The Spark jobs each micro-batch ran: how many, their summed wall time, their steps.

    Read from the driver's status store (kept with the UI off too), where
    Structured Streaming describes every job of a micro-batch as ``... batch = N``.
    The store keeps the newest ``spark.ui.retainedJobs`` jobs (the job sets 100),
    so the progress listener reads it as each batch ends.
    """
    from jobs.batch_writer import STEP_TAG

    store = spark.sparkContext._jsc.sc().statusStore()  # type: ignore[union-attr]
    found: dict[int, dict[str, Any]] = {}
    for job in _scala_items(store.jobsList(None).iterator()):
        description = job.description()
        if not description.isDefined():
            continue
        match = _BATCH_DESCRIPTION.search(str(description.get()))
        if match is None:
            continue
        entry = found.setdefault(
            int(match.group(1)), {"spark_jobs": 0, "spark_job_s": 0.0, "spark_job_list": []}
        )
        entry["spark_jobs"] += 1
        submitted, completed = job.submissionTime(), job.completionTime()
        seconds = 0.0
        if submitted.isDefined() and completed.isDefined():
            seconds = (completed.get().getTime() - submitted.get().getTime()) / 1000
        entry["spark_job_s"] += seconds
        # the batch's step that ran the job (its tag), its call site (``collect at …``) and
        # its wall time, in the order they ran
        tags = [str(t) for t in _scala_items(job.jobTags().iterator())]
        steps = [t for t in tags if t.startswith(STEP_TAG)]
        name = f"{steps[0][len(STEP_TAG) :]}: {job.name()}" if steps else str(job.name())
        entry["spark_job_list"].append((int(job.jobId()), name, round(seconds, 3)))
    for entry in found.values():
        entry["spark_job_s"] = round(entry["spark_job_s"], 3)
        entry["spark_job_list"] = [[name, s] for _, name, s in sorted(entry["spark_job_list"])]
    return found


def _scala_items(iterator: Any) -> list[Any]:
    items = []
    while iterator.hasNext():
        items.append(iterator.next())
    return items


def _wait_for(seen: dict[int, Any], count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.2)


def _kafka_stream(spark: SparkSession, settings: Settings, split: bool = False) -> Any:
    """The topic as a stream; ``split``: read with as many tasks as the product's job does."""
    from cdc_iceberg.kafka_offsets import consumer, read_tasks

    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", settings.kafka_topic)
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", "true")
    )
    if settings.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger))
    if split:
        with consumer(settings) as client:
            partitions = len(client.partitions_for_topic(settings.kafka_topic) or ())
        tasks = read_tasks(
            partitions, spark.sparkContext.defaultParallelism, settings.kafka_min_partitions
        )
        if tasks:
            reader = reader.option("minPartitions", str(tasks))
    return reader.load()


def _run_stream(
    spark: SparkSession,
    settings: Settings,
    apply: Callable[[DataFrame, int], None],
    out: Callable[..., None] | None = None,
    split: bool = False,
) -> list[dict[str, Any]]:
    """availableNow over the topic with ``apply`` per micro-batch, like the product's drain."""
    timings: dict[int, float] = {}

    def timed(batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        session = batch.sparkSession
        session.conf.set(SNAPSHOT_PROPERTY + BENCH_BATCH, str(batch_id))
        try:
            apply(batch, batch_id)
        finally:
            session.conf.unset(SNAPSHOT_PROPERTY + BENCH_BATCH)
        timings[batch_id] = round(time.monotonic() - started, 3)

    listener, seen = _progress_listener(spark, out)
    try:
        query = (
            _kafka_stream(spark, settings, split)
            .writeStream.foreachBatch(timed)
            .option("checkpointLocation", settings.checkpoint_location)
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination()
        _wait_for(seen, len(timings))
    finally:
        spark.streams.removeListener(listener)
    batches = [
        {"batch_id": b, "duration_s": timings[b], **seen.get(b, {})} for b in sorted(timings)
    ]
    return _with_records(batches, settings)


# -- 1. the product -----------------------------------------------------------------


def run_product(
    spark: SparkSession, settings: Settings, out: Callable[..., None] | None = None
) -> list[dict[str, Any]]:
    """One drain of the product's job; per batch its metrics, step timings and Spark timing."""
    from jobs.cdc_to_iceberg import drain

    job_log = logging.getLogger("cdc_to_iceberg")
    handler = _StepLog(out)
    job_log.addHandler(handler)
    previous = job_log.level
    job_log.setLevel(logging.DEBUG)
    listener, seen = _progress_listener(spark, out)
    try:
        result = drain(spark, settings)
        _wait_for(seen, len([b for b in result.batches if not b.skipped]))
    finally:
        spark.streams.removeListener(listener)
        job_log.removeHandler(handler)
        job_log.setLevel(previous)
    out = []
    for metrics in result.batches:
        fields = {
            k: getattr(metrics, k)
            for k in (
                "batch_id",
                "events_in",
                "kafka_tombstones",
                "dead_lettered",
                "collapsed_in_batch",
                "stale",
                "inserted",
                "updated",
                "deleted",
                "duration_s",
                "skipped",
            )
        }
        fields["steps"] = handler.steps.get(metrics.batch_id, {})
        fields.update(seen.get(metrics.batch_id, {}))
        out.append(fields)
    return _with_records(out, settings)


# -- 2. the naive pattern --------------------------------------------------------------


def naive_merge_sql(table: str, source: str) -> str:
    """The seed's statement, word for word."""
    return (
        f"MERGE INTO {table} t USING {source} s ON t.article_id = s.article_id "
        "WHEN MATCHED AND s.ts_ms > t.ts_ms THEN UPDATE SET * "
        "WHEN NOT MATCHED THEN INSERT *"
    )


def run_naive(
    spark: SparkSession, settings: Settings, out: Callable[..., None] | None = None
) -> list[dict[str, Any]]:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    table = settings.qualified(settings.iceberg_table)

    def upsert_batch(batch: DataFrame, batch_id: int) -> None:
        event = F.from_json(F.col("value").cast("string"), NAIVE_EVENT_DDL)
        rows = (
            batch.select(event.alias("e"))
            .select("e.after.*", F.col("e.ts_ms").alias("ts_ms"))
            .where(F.col("article_id").isNotNull())
            .withColumn("published_at", F.col("published_at").cast("timestamp"))
            .withColumn("updated_at", F.col("updated_at").cast("timestamp"))
        )
        window = Window.partitionBy("article_id").orderBy(F.col("ts_ms").desc())
        latest = rows.withColumn("_rn", F.row_number().over(window)).where("_rn = 1").drop("_rn")
        latest.createOrReplaceTempView("naive_updates")
        batch.sparkSession.sql(naive_merge_sql(table, "naive_updates"))

    return _run_stream(spark, settings, upsert_batch, out)


# -- 4. the ceiling: read and parse, append only -----------------------------------------


def run_append(
    spark: SparkSession, settings: Settings, out: Callable[..., None] | None = None
) -> list[dict[str, Any]]:
    from pyspark.sql import functions as F

    from cdc_iceberg.schema import RESERVED, SEQUENCE
    from jobs import transforms

    table = settings.qualified(settings.iceberg_table)
    schema = spark.table(table).schema
    columns = [(f.name, f.dataType.simpleString()) for f in schema.fields if f.name not in RESERVED]
    names = [n for n, _ in columns]
    key = ("article_id",)  # the workload's table (bench.workload)

    def append_batch(batch: DataFrame, batch_id: int) -> None:
        parsed = transforms.parse_events(batch, settings.event_format, key)
        # materialized as the product's job does: under the parser's projections the
        # optimizer would inline them into the filter, a plan too large for the heap
        typed = transforms.type_columns(
            parsed, columns, key, keep=("_tombstone",)
        ).localCheckpoint()
        rows = typed.where(~F.col("_tombstone") & F.col("_problem").isNull()).select(
            *names, *SEQUENCE, "cdc_op", F.current_timestamp().alias("ingested_at")
        )
        rows.writeTo(table).append()

    # the same read as the product's job, split in as many tasks
    return _run_stream(spark, settings, append_batch, out, split=True)


# -- 3. pyiceberg upsert fed by kafka-python ------------------------------------------------


def _arrow_schema() -> Any:
    import pyarrow as pa

    stamp = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            ("article_id", pa.string()),
            ("title", pa.string()),
            ("url", pa.string()),
            ("source", pa.string()),
            ("author", pa.string()),
            ("body", pa.string()),
            ("published_at", stamp),
            ("updated_at", stamp),
            ("word_count", pa.int32()),
            ("ts_ms", pa.int64()),
            ("lsn", pa.int64()),
        ]
    )


def _to_arrow(rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    schema = _arrow_schema()
    arrays = []
    for field in schema:
        values = [row.get(field.name) for row in rows]
        if pa.types.is_timestamp(field.type):
            arrays.append(pa.array(values, pa.string()).cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def run_pyiceberg(settings: Settings, batch: int, out: Callable[..., None]) -> list[dict]:
    """Poll ``batch`` records at a time until the topic's end; one transaction per batch."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata
    from pyiceberg.expressions import In

    from cdc_iceberg import table_state

    table = table_state.catalog(settings).load_table(settings.iceberg_table)
    consumer = KafkaConsumer(
        group_id=settings.kafka_consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=min(batch, 10_000),
        fetch_max_bytes=64 * 2**20,
        max_partition_fetch_bytes=16 * 2**20,
        **settings.kafka_python_config(),
    )
    batches: list[dict[str, Any]] = []
    try:
        topic = settings.kafka_topic
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        for tp in parts:
            committed = consumer.committed(tp)
            if committed is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        end = consumer.end_offsets(parts)
        batch_id = 0
        while any(consumer.position(tp) < end[tp] for tp in parts):
            started = time.monotonic()
            records: list[Any] = []
            while len(records) < batch and any(consumer.position(tp) < end[tp] for tp in parts):
                polled = consumer.poll(timeout_ms=1000, max_records=batch - len(records))
                for chunk in polled.values():
                    records += chunk
            polled_at = time.monotonic()
            newest: dict[str, tuple[tuple[int, int, int, int], str, dict[str, Any]]] = {}
            for record in records:
                if record.value is None:
                    continue  # Kafka tombstone after a delete
                event = json.loads(record.value)
                op = event["op"]
                source = event["source"]
                row = event["before"] if op == "d" else event["after"]
                seq = (int(source["ts_ms"]), int(source["lsn"]), record.partition, record.offset)
                current = newest.get(row["article_id"])
                if current is None or seq > current[0]:
                    newest[row["article_id"]] = (seq, op, row)
            deleted = [key for key, (_, op, _) in newest.items() if op == "d"]
            upserts = [
                {**row, "ts_ms": seq[0], "lsn": seq[1]}
                for seq, op, row in newest.values()
                if op != "d"
            ]
            frame = _to_arrow(upserts)
            parsed_at = time.monotonic()
            props = {BENCH_BATCH: str(batch_id)}
            updated = inserted = 0
            with table.transaction() as tx:
                if deleted:
                    tx.delete(In("article_id", deleted), snapshot_properties=props)
                if upserts:
                    result = tx.upsert(frame, join_cols=["article_id"], snapshot_properties=props)
                    updated, inserted = result.rows_updated, result.rows_inserted
            committed_at = time.monotonic()
            consumer.commit({tp: OffsetAndMetadata(consumer.position(tp), "", -1) for tp in parts})
            item = {
                "batch_id": batch_id,
                "records": len(records),
                "events_in": sum(1 for r in records if r.value is not None),
                "keys": len(newest),
                "updated": updated,
                "inserted": inserted,
                "deleted": len(deleted),
                "duration_s": round(time.monotonic() - started, 3),
                "poll_s": round(polled_at - started, 3),
                "parse_s": round(parsed_at - polled_at, 3),
                "commit_s": round(committed_at - parsed_at, 3),
            }
            out("batch", **item)
            batches.append(item)
            batch_id += 1
    finally:
        consumer.close()
    return batches


def pyiceberg_bytes_by_batch(settings: Settings) -> list[dict[str, Any]]:
    from cdc_iceberg import table_state

    table = table_state.catalog(settings).load_table(settings.iceberg_table)
    per: dict[int, dict[str, int]] = {}
    for snapshot in table.snapshots():
        summary = dict(snapshot.summary.additional_properties) if snapshot.summary else {}
        if BENCH_BATCH not in summary:
            continue
        entry = per.setdefault(
            int(summary[BENCH_BATCH]),
            {"added_bytes": 0, "added_data_files": 0, "added_delete_files": 0, "commits": 0},
        )
        entry["added_bytes"] += int(summary.get("added-files-size", 0) or 0)
        entry["added_data_files"] += int(summary.get("added-data-files", 0) or 0)
        entry["added_delete_files"] += int(summary.get("added-delete-files", 0) or 0)
        entry["commits"] += 1
    return [{"batch_id": b, **per[b]} for b in sorted(per)]


def pyiceberg_count(settings: Settings) -> int:
    from cdc_iceberg import table_state

    table = table_state.catalog(settings).load_table(settings.iceberg_table)
    return int(table.scan(selected_fields=("article_id",)).to_arrow().num_rows)
