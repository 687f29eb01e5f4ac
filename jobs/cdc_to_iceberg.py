"""Drain Debezium change events from Kafka into an Iceberg table, exactly once.

Run one drain (Structured Streaming, trigger ``availableNow``: read what Kafka
holds now, apply it, stop)::

    make drain
    # or, with the jars and Spark settings of cdc_iceberg.spark_conf:
    python -m cdc_iceberg.submit

Configuration comes from the environment through :mod:`cdc_iceberg.settings`.

This module is the entry point: it decides where the drain starts (the
table's offsets, else ``STARTING_OFFSETS``), checks the checkpoint
(:mod:`jobs.checkpoint`) and Kafka's retention, and runs the stream whose
micro-batches :class:`jobs.batch_writer.BatchWriter` applies. The table, not
the checkpoint, is the final word on progress.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cdc_iceberg import kafka_offsets, pipelines
from cdc_iceberg.checkpoint_log import checkpoint_exists, checkpoint_offsets, is_local
from cdc_iceberg.schema_discovery import SchemaUnknownError, model_from_topic
from cdc_iceberg.settings import Settings
from cdc_iceberg.spark_conf import kafka_source_options
from cdc_iceberg.table_model import TableModelError, source_table
from jobs.batch_writer import BatchMetrics, BatchWriter
from jobs.checkpoint import (
    CheckpointInUseError,
    CheckpointLock,
    set_aside_corrupt_checkpoint,
    set_aside_uncommitted_remote_batch,
)
from jobs.session import build_session

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("cdc_to_iceberg")

RESET_HINT = (
    "Trigger the cdc_reset DAG (scope 'offsets' or 'full-rebuild') to restart from the "
    "earliest retained offsets, after checking what the gap lost."
)


class RetentionGapError(RuntimeError):
    """Offsets the pipeline still needs were deleted by Kafka's retention."""


# -- starting point -----------------------------------------------------------


def resolve_starting_offsets(
    settings: Settings,
    table_offsets: dict[int, int],
    partitions: list[int],
    default: str | None = None,
) -> str:
    """startingOffsets JSON: the table's offsets, else STARTING_OFFSETS per partition."""
    default = default or settings.starting_offsets
    explicit: dict[int, int] = {}
    if default.strip().startswith("{"):
        explicit = kafka_offsets.from_spark_json(default, settings.kafka_topic)
        fallback = -2
    else:
        named = {"earliest": -2, "latest": -1}.get(default.strip().lower())
        if named is None:
            raise ValueError(
                f"STARTING_OFFSETS={default!r}: expected earliest, latest or Spark offsets JSON"
            )
        fallback = named
    offsets = {p: table_offsets.get(p, explicit.get(p, fallback)) for p in partitions}
    return kafka_offsets.to_spark_json(settings.kafka_topic, offsets)


def check_retention(settings: Settings, needed: dict[int, int]) -> None:
    """Fail loudly when offsets the pipeline needs next are no longer retained."""
    if not needed:
        return
    beginning = kafka_offsets.beginning_offsets(settings)
    gaps = {p: (o, beginning[p]) for p, o in needed.items() if 0 <= o < beginning.get(p, 0)}
    if gaps:
        detail = ", ".join(
            f"partition {p}: needs offset {o}, earliest retained is {b}"
            for p, (o, b) in gaps.items()
        )
        raise RetentionGapError(
            f"Kafka retention deleted records not yet applied to {settings.iceberg_table} "
            f"({detail}). {RESET_HINT}"
        )


@dataclass
class DrainResult:
    batches: list[BatchMetrics]
    table_offsets: dict[int, int]

    def totals(self) -> dict[str, Any]:
        keys = (
            "events_in",
            "dead_lettered",
            "collapsed_in_batch",
            "stale",
            "inserted",
            "updated",
            "deleted",
            "kafka_tombstones",
            "already_committed",
        )
        return {
            "event": "cdc_drain",
            "batches": len(self.batches),
            **{k: sum(getattr(b, k) for b in self.batches) for k in keys},
            "table_offsets": {str(p): o for p, o in sorted(self.table_offsets.items())},
        }


def drain(
    spark: SparkSession,
    settings: Settings,
    *,
    starting_offsets: str | None = None,
    stop_offsets: dict[int, int] | None = None,
    dry_run: bool = False,
) -> DrainResult:
    """One availableNow drain of ``settings.kafka_topic`` into the table.

    The table's model is the live table's once it exists; before, the declared
    schema of ``pipelines.yaml``, else the schema blocks of the first events
    (a topic with nothing in it yet creates no table).
    """
    from jobs.iceberg_tables import IcebergTables

    tables = IcebergTables.declared(spark, settings)
    declared = tables.given
    checkpoint = settings.checkpoint_location
    with CheckpointLock(checkpoint) if is_local(checkpoint) else contextlib.nullcontext():
        with kafka_offsets.consumer(settings) as client:
            parts = kafka_offsets._partitions(client, settings.kafka_topic)
        partitions = [tp.partition for tp in parts]
        if declared is None and not tables.exists(tables.live):
            first = resolve_starting_offsets(settings, {}, partitions, starting_offsets)
            start = _numeric_offsets(
                settings, kafka_offsets.from_spark_json(first, settings.kafka_topic)
            )
            discovered = model_from_topic(settings, start, source_table(settings.kafka_topic))
            if discovered is None:
                log.info(
                    "%s holds no events yet and no schema is declared for it: %s is "
                    "created with the first events",
                    settings.kafka_topic,
                    settings.iceberg_table,
                )
                return DrainResult([], {})
            tables.given = discovered
        tables.ensure()
        table_offsets = tables.committed_offsets()
        if is_local(checkpoint):
            # a checkpoint Spark could not restart from is set aside (renamed, never
            # deleted): the drain then resumes from the table's offsets, as for a lost one
            set_aside_corrupt_checkpoint(checkpoint)
        if checkpoint_exists(checkpoint):
            set_aside_uncommitted_remote_batch(spark, checkpoint)
            needed = checkpoint_offsets(checkpoint, settings.kafka_topic)
            # the table may be ahead of the checkpoint (crash before the checkpoint commit)
            needed = {p: max(o, table_offsets.get(p, o)) for p, o in needed.items()}
        else:
            if table_offsets:
                log.warning(
                    "no checkpoint at %s: resuming from the offsets recorded in %s",
                    checkpoint,
                    settings.iceberg_table,
                )
            needed = dict(table_offsets)
        check_retention(settings, needed)
        if table_offsets and not dry_run:
            # heal a crash between the Iceberg commit and the group commit
            kafka_offsets.commit_group_offsets(settings, table_offsets)
        start_json = resolve_starting_offsets(settings, table_offsets, partitions, starting_offsets)
        start = _numeric_offsets(
            settings, kafka_offsets.from_spark_json(start_json, settings.kafka_topic)
        )
        start_json = kafka_offsets.to_spark_json(settings.kafka_topic, start)
        writer = BatchWriter(spark, settings, tables, checkpoint, dry_run, stop_offsets)
        writer.initial_offsets = start
        if table_offsets and not dry_run:
            writer.group_offsets = dict(table_offsets)
        reader = (
            spark.readStream.format("kafka")
            .options(**kafka_source_options(settings))
            .option("startingOffsets", start_json)
        )
        if settings.max_offsets_per_trigger:
            reader = reader.option("maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger))
        tasks = kafka_offsets.read_tasks(
            len(partitions), spark.sparkContext.defaultParallelism, settings.kafka_min_partitions
        )
        if tasks:
            reader = reader.option("minPartitions", str(tasks))
        query = (
            reader.load()
            .writeStream.foreachBatch(writer)
            .option("checkpointLocation", checkpoint)
            .trigger(availableNow=True)
            .queryName(f"cdc_to_iceberg_{settings.pipeline_id}_{settings.iceberg_table}")
            .start()
        )
        try:
            query.awaitTermination()
        except Exception as error:
            text = str(error)
            if any(s in text for s in ("OffsetOutOfRange", "data loss", "DATA_LOSS", "dataloss")):
                raise RetentionGapError(
                    f"Kafka records this drain needs were deleted by retention: {text[:400]}. "
                    f"{RESET_HINT}"
                ) from error
            raise
        # awaitTermination returns after Spark committed the last batch to the checkpoint
        writer.confirm_checkpointed()
        return DrainResult(writer.history, writer.progress)


def _numeric_offsets(settings: Settings, offsets: dict[int, int]) -> dict[int, int]:
    """Replace Spark's -2 (earliest) and -1 (latest) by the broker's real offsets."""
    if all(o >= 0 for o in offsets.values()):
        return offsets
    beginning = kafka_offsets.beginning_offsets(settings)
    latest = kafka_offsets.end_offsets(settings)
    resolved = {}
    for partition, offset in offsets.items():
        if offset == -2:
            resolved[partition] = beginning[partition]
        elif offset == -1:
            resolved[partition] = latest[partition]
        else:
            resolved[partition] = offset
    return resolved


_KNOWN_FAILURES: tuple[type[Exception], ...] = (
    RetentionGapError,
    CheckpointInUseError,
    kafka_offsets.TopicMissingError,
    kafka_offsets.KafkaAccessError,
    SchemaUnknownError,
    TableModelError,
    pipelines.PipelinesError,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="read and report, write nothing")
    parser.add_argument("--starting-offsets", help="override STARTING_OFFSETS for new partitions")
    parser.add_argument("--stop-offsets", help='stop at these offsets: {"0": 120, "1": 80}')
    parser.add_argument(
        "--tables",
        help="drain the tables of CDC_PIPELINES_FILE: 'all', or source tables "
        "(schema.table) separated by commas; without it, KAFKA_TOPIC into ICEBERG_TABLE",
    )
    args = parser.parse_args(argv)
    from jobs.iceberg_tables import SequenceOrderMismatch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = Settings.from_env()
    known: tuple[type[Exception], ...] = (*_KNOWN_FAILURES, SequenceOrderMismatch)
    if args.tables:
        if args.stop_offsets or args.starting_offsets:
            parser.error("--stop-offsets and --starting-offsets are for one table, not --tables")
        return _main_tables(settings, args.tables, args.dry_run, known)
    stop = (
        {int(p): int(o) for p, o in json.loads(args.stop_offsets).items()}
        if args.stop_offsets
        else None
    )
    spark = build_session(settings)
    try:
        result = drain(
            spark,
            settings,
            starting_offsets=args.starting_offsets,
            stop_offsets=stop,
            dry_run=args.dry_run,
        )
    except known as error:
        print(json.dumps({"event": "cdc_drain_failed", "error": str(error)}), flush=True)
        log.error("%s", error)
        return 2
    finally:
        spark.stop()
    print(json.dumps(result.totals(), sort_keys=True), flush=True)
    return 0


def _main_tables(
    settings: Settings, which: str, dry_run: bool, known: tuple[type[Exception], ...]
) -> int:
    """Drain the configured tables in one Spark application (jobs.drain_tables)."""
    from jobs.drain_tables import configured_tables, drain_tables

    names = [] if which.strip() == "all" else [n.strip() for n in which.split(",") if n.strip()]
    try:
        config = pipelines.load(settings.pipelines_file)
        tables = configured_tables(settings, config, names)
    except known as error:
        print(json.dumps({"event": "cdc_drain_failed", "error": str(error)}), flush=True)
        log.error("%s", error)
        return 2
    spark = build_session(settings)
    try:
        outcomes = drain_tables(spark, settings, tables, dry_run=dry_run)
    finally:
        spark.stop()
    for outcome in outcomes:
        print(json.dumps(outcome.summary(), sort_keys=True), flush=True)
    failed = [o.table.source for o in outcomes if o.error is not None]
    print(
        json.dumps(
            {"event": "cdc_drain_tables", "tables": len(outcomes), "failed": failed},
            sort_keys=True,
        ),
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
