"""Re-apply a table's dead letters once their cause is fixed, exactly once.

Run it (``--apply`` to write; without it the replay only reports)::

    make dlq-replay TABLE=public.order_lines REASON="does not fit" APPLY=1
    python -m cdc_iceberg.submit --job dlq_replay -- --table public.order_lines --apply

The dead letters chosen (by reason, Kafka partition and offsets, Kafka
record time; never those a replay already applied) go through the drain's own
batch writer as one batch: typed with the table's columns as they are now,
grouped by key, and merged only where newer than what the table holds, so a
replayed old change never beats a newer one, a delete is never undone, and a
change applied twice changes nothing. The table's offsets are not touched.

Every chosen dead letter is then marked (``replay_id``, ``replayed_at``,
``replay_outcome``: ``applied`` or ``failed: <reason>``) and never deleted.
A crash between the table's commit and the marking leaves the dead letters
unmarked: the next replay applies them again, which changes nothing, and marks
them. A change older than the tombstone retention fails unless
``--ignore-retention``: a delete of its key since then may have been
forgotten, and the change would bring the row back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cdc_iceberg import kafka_offsets, pipelines
from cdc_iceberg.checkpoint_log import is_local
from cdc_iceberg.settings import Settings
from cdc_iceberg.table_model import TableModelError
from jobs.batch_writer import BatchWriter, failpoint
from jobs.checkpoint import CheckpointInUseError, CheckpointLock
from jobs.session import build_session

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger("dlq_replay")

_REPLAY_ID = re.compile(r"[A-Za-z0-9_.-]{1,80}\Z")


class ReplayError(RuntimeError):
    """The replay cannot run as asked."""


@dataclass(frozen=True)
class Selection:
    """Which dead letters a replay takes (all that no replay applied, by default)."""

    reason: str = ""  # a part of the reason, any case
    partition: int | None = None
    from_offset: int | None = None  # inclusive
    to_offset: int | None = None  # exclusive
    from_time: datetime | None = None  # Kafka record time, inclusive
    to_time: datetime | None = None  # exclusive

    def condition(self) -> Column:
        from pyspark.sql import functions as F

        pending = F.col("replay_outcome").isNull() | (F.col("replay_outcome") != "applied")
        condition = pending
        if self.reason:
            condition &= F.lower(F.col("reason")).contains(self.reason.lower())
        if self.partition is not None:
            condition &= F.col("kafka_partition") == self.partition
        if self.from_offset is not None:
            condition &= F.col("kafka_offset") >= self.from_offset
        if self.to_offset is not None:
            condition &= F.col("kafka_offset") < self.to_offset
        if self.from_time is not None:
            condition &= F.col("kafka_timestamp") >= F.lit(self.from_time)
        if self.to_time is not None:
            condition &= F.col("kafka_timestamp") < F.lit(self.to_time)
        return condition


@dataclass
class ReplayResult:
    replay_id: str
    table: str
    dry_run: bool
    selected: int = 0
    applied: int = 0
    failed: int = 0
    failed_reasons: dict[str, int] = field(default_factory=dict)
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    stale: int = 0

    def as_json(self) -> str:
        return json.dumps({"event": "cdc_dlq_replay", **asdict(self)}, sort_keys=True)


def replay(
    spark: SparkSession,
    settings: Settings,
    selection: Selection,
    *,
    replay_id: str | None = None,
    dry_run: bool = True,
    ignore_retention: bool = False,
) -> ReplayResult:
    """Replay the chosen dead letters of ``settings.iceberg_table`` (see the module)."""
    replay_id = check_replay_id(replay_id or uuid.uuid4().hex[:16])
    result = ReplayResult(replay_id, settings.iceberg_table, dry_run)
    checkpoint = settings.checkpoint_location
    # one writer per table: a drain of the same table holds this lock while it runs
    with CheckpointLock(checkpoint) if is_local(checkpoint) else contextlib.nullcontext():
        from jobs.iceberg_tables import IcebergTables

        tables = IcebergTables.declared(spark, settings)
        if not tables.exists(tables.live):
            raise ReplayError(f"{settings.iceberg_table} does not exist yet: nothing to replay")
        tables.ensure()
        chosen = spark.table(tables.dlq).where(selection.condition()).localCheckpoint()
        result.selected = chosen.count()
        if not result.selected:
            log.info("%s: no dead letter matches the selection", tables.dlq)
            return result
        records = chosen.selectExpr(
            "raw_key AS key",
            "raw_value AS value",
            "topic",
            "kafka_partition AS partition",
            "kafka_offset AS offset",
            "kafka_timestamp AS timestamp",
        )
        writer = BatchWriter(spark, settings, tables, None, dry_run)
        writer.replay = replay_id
        if not ignore_retention:
            hours = settings.tombstone_retention_hours
            writer.replay_cutoff_ms = int(time.time() * 1000) - hours * 3_600_000
        writer(records, 0)
        (metrics,) = writer.history
        failures = writer.replay_failures
        if failures is not None:
            for row in failures.groupBy("reason").count().collect():
                result.failed_reasons[str(row["reason"])] = int(row["count"])
        result.failed = sum(result.failed_reasons.values())
        result.applied = result.selected - result.failed
        result.inserted, result.updated = metrics.inserted, metrics.updated
        result.deleted, result.stale = metrics.deleted, metrics.stale
        if dry_run:
            return result
        failpoint(settings, "before_dlq_mark", 0)
        _mark(spark, tables, chosen, failures, replay_id)
    return result


def _mark(
    spark: SparkSession,
    tables: Any,
    chosen: DataFrame,
    failures: DataFrame | None,
    replay_id: str,
) -> None:
    """One commit marking every chosen dead letter with what became of it."""
    from pyspark.sql import functions as F

    coordinates = ("topic", "kafka_partition", "kafka_offset")
    outcomes = chosen.select(*coordinates)
    if failures is not None:
        failed = failures.select(*coordinates, F.col("reason").alias("_again"))
        outcomes = outcomes.join(failed, list(coordinates), "left")
    else:
        outcomes = outcomes.withColumn("_again", F.lit(None).cast("string"))
    outcomes.select(
        *coordinates,
        F.when(F.col("_again").isNull(), F.lit("applied"))
        .otherwise(F.concat(F.lit("failed: "), F.col("_again")))
        .alias("outcome"),
    ).createOrReplaceTempView("cdc_replay_outcomes")
    tables.run_retrying(
        f"MERGE INTO {tables.dlq} t USING cdc_replay_outcomes s ON t.topic = s.topic "
        "AND t.kafka_partition = s.kafka_partition AND t.kafka_offset = s.kafka_offset "
        f"WHEN MATCHED THEN UPDATE SET replay_id = '{replay_id}', "
        "replayed_at = current_timestamp(), replay_outcome = s.outcome"
    )


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +00:00)")
    return value


def check_replay_id(text: str) -> str:
    """A replay id is written into SQL and the table: 1-80 ASCII letters, digits, ``_.-``."""
    if not _REPLAY_ID.match(text):
        raise ReplayError(f"{text[:90]!r} is not a replay id (1-80 letters, digits and _ . -)")
    return text


def _replay_id(text: str) -> str:
    try:
        return check_replay_id(text)
    except ReplayError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--table", help="the table (schema.table or its Iceberg name; default: KAFKA_TOPIC's)"
    )
    parser.add_argument("--reason", default="", help="only dead letters whose reason has this")
    parser.add_argument("--partition", type=int, help="only this Kafka partition")
    parser.add_argument("--from-offset", type=int, help="only offsets at or after this")
    parser.add_argument("--to-offset", type=int, help="only offsets before this")
    parser.add_argument("--from-time", type=_time, help="only records at or after (ISO-8601)")
    parser.add_argument("--to-time", type=_time, help="only records before (ISO-8601)")
    parser.add_argument("--apply", action="store_true", help="write (default: report only)")
    parser.add_argument(
        "--ignore-retention",
        action="store_true",
        help="also apply changes older than the tombstone retention",
    )
    parser.add_argument("--replay-id", type=_replay_id, help="recorded on each dead letter")
    parser.add_argument("--result-file", help="also write the result (JSON) to this local file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    base = Settings.from_env()
    selection = Selection(
        args.reason,
        args.partition,
        args.from_offset,
        args.to_offset,
        args.from_time,
        args.to_time,
    )
    try:
        config = pipelines.load(base.pipelines_file)
        settings = config.settings_for(base, args.table, lambda: kafka_offsets.topics(base))
    except pipelines.PipelinesError as error:
        print(json.dumps({"event": "cdc_dlq_replay_failed", "error": str(error)}), flush=True)
        return 2
    spark = build_session(settings)
    try:
        result = replay(
            spark,
            settings,
            selection,
            replay_id=args.replay_id,
            dry_run=not args.apply,
            ignore_retention=args.ignore_retention,
        )
    except (ReplayError, CheckpointInUseError, TableModelError) as error:
        print(json.dumps({"event": "cdc_dlq_replay_failed", "error": str(error)}), flush=True)
        log.error("%s", error)
        return 2
    finally:
        spark.stop()
    print(result.as_json(), flush=True)
    if args.result_file:
        with open(args.result_file, "w", encoding="utf-8") as out:
            out.write(result.as_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
