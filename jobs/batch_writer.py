"""The ``foreachBatch`` function of the drain: one micro-batch into the Iceberg tables.

Each micro-batch: parse -> dead-letter what cannot be applied -> collapse to
the newest change per key -> remember deletes (tombstones) -> MERGE into the
live table guarded by the sequence tuple. Every commit records the pipeline
id, the batch id and the offset range in the Iceberg snapshot summary; the
consumer group gets the batch's end offsets once Spark has checkpointed it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cdc_iceberg import kafka_offsets
from cdc_iceberg.schema import (
    IMAGE,
    SEQUENCE,
    SEQUENCE_COLUMNS,
    SUMMARY_BATCH,
    SUMMARY_METRICS,
    SUMMARY_OFFSETS,
    SUMMARY_PIPELINE,
    SUMMARY_RANGE,
    SUMMARY_REPLAY,
    SUMMARY_TOPIC,
    SUMMARY_UNAVAILABLE,
)
from cdc_iceberg.settings import Settings
from cdc_iceberg.table_model import default_codec
from jobs.checkpoint import read_offset_log

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from jobs.iceberg_tables import IcebergTables

log = logging.getLogger("cdc_to_iceberg")


# how far past a key change's create the changes ahead are read on a topic whose
# records carry the broker's time (LogAppendTime): the old key's updates before the
# create are sent first, but another partition's leader may append them later
AHEAD_MARGIN_MS = 5_000


# -- failpoints: deterministic crash injection for the test suite -----------


def failpoint(settings: Settings, name: str, batch_id: int) -> None:
    """kill -9 this driver when ``CDC_FAILPOINT`` names this point (``name`` or ``name@batch``)."""
    spec = settings.failpoint
    if not spec:
        return
    point, _, batch = spec.partition("@")
    if point == name and (not batch or int(batch) == batch_id):
        log.error("failpoint %s reached at batch %s: killing the driver", name, batch_id)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


# -- metrics -----------------------------------------------------------------


# the job tag naming the step of a batch a Spark job belongs to
STEP_TAG = "cdc-"


class _Steps:
    """Wall time per step of a batch, logged at DEBUG to find where a batch spends time.

    Each step's Spark jobs carry the job tag ``cdc-<step>`` (``cdc-scan``,
    ``cdc-merge-live``, ...), so the status store tells which step ran which
    job; Structured Streaming's own job description (``... batch = N``) is
    left as it is.
    """

    def __init__(self, context: Any = None) -> None:
        self.context = context
        self.times: dict[str, float] = {}
        self.current: str | None = None
        self.started = time.monotonic()

    def begin(self, name: str) -> None:
        """The step ``name`` starts (and the one before it ends)."""
        self.end()
        self.current, self.started = name, time.monotonic()
        if self.context is not None:  # a tag of this thread: only the batch's own jobs
            self.context.addJobTag(f"{STEP_TAG}{name}")

    def end(self) -> None:
        if self.current is None:
            return
        elapsed = time.monotonic() - self.started
        self.times[self.current] = round(self.times.get(self.current, 0.0) + elapsed, 3)
        if self.context is not None:
            self.context.removeJobTag(f"{STEP_TAG}{self.current}")
        self.current = None

    def summary(self) -> dict[str, float]:
        return dict(self.times)


STEPS = _Steps()


@dataclass
class BatchMetrics:
    """What one micro-batch did; logged as one JSON line and kept in the snapshot summary."""

    pipeline_id: str
    batch_id: int
    events_in: int = 0
    kafka_tombstones: int = 0
    already_committed: int = 0
    dead_lettered: int = 0
    collapsed_in_batch: int = 0
    stale: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    truncated: int = 0
    schema_changes: list[str] = field(default_factory=list)
    offsets: dict[str, list[int]] = field(default_factory=dict)
    duration_s: float = 0.0
    skipped: bool = False

    def as_json(self) -> str:
        return json.dumps({"event": "cdc_batch", **self.__dict__}, sort_keys=True)


# -- the batch writer --------------------------------------------------------


def _offset_filter(committed: dict[int, int]) -> Any:
    """Column: the record is not yet in the table (offset at or past what it records)."""
    from pyspark.sql import functions as F

    part, off = F.col("_kafka_partition"), F.col("_kafka_offset")
    condition = ~part.isin(*committed.keys()) if committed else F.lit(True)
    for partition, offset in committed.items():
        condition = condition | ((part == partition) & (off >= offset))
    return condition


# what a dead letter keeps of its Kafka record
_DEAD_RAW = ("_kafka_topic", "_kafka_timestamp", "_kafka_key", "_kafka_value", "_problem")
# what the one pass adds up per Kafka partition (each as ``_t_<name>``)
_SUMS = (
    "n",
    "fresh",
    "tomb",
    "dead",
    "valid",
    "deletes",
    "moved",
    "truncates",
    "toast",
    "toast_creates",
)


def _sequence_sql(values: tuple[Any, ...], order: tuple[str, ...]) -> list[str]:
    """A sequence tuple as typed SQL literals named after its columns."""
    types = dict(SEQUENCE_COLUMNS)
    return [f"CAST({int(v)} AS {types[n]}) AS {n}" for v, n in zip(values, order, strict=True)]


def _nulls_first(values: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    return tuple((v is not None, v) if v is not None else (False, 0) for v in values)


@dataclass
class _Scan:
    """What the one pass over a typed batch tells the driver."""

    first: dict[int, int]
    seen_end: dict[int, int]
    total: int
    fresh: int
    tombstones: int
    columns_seen: list[str]
    declared: dict[str, str | None]
    # how the declared columns' event texts decode (cdc_iceberg.debezium_types)
    codecs: dict[str, str]
    dead: int
    valid: int
    deletes: int
    truncates: int
    truncate_seq: tuple[Any, ...] | None
    toast: int
    toast_creates: int
    # deletes of primary-key changes (their tombstones keep the row's last version)
    moved: int
    # the columns the batch's changes left unavailable (TOAST)
    unavailable: frozenset[str]
    # the keys with valid changes, once per Kafka partition that holds changes of the key
    keys: int


class BatchWriter:
    """``foreachBatch`` function applying one micro-batch to the Iceberg tables.

    Spark jobs per batch: one pass that reads the batch from Kafka, parses and
    types it, and caches it grouped by key (the newest change of each key, and
    the offsets, counts, columns and schemas seen); the newest change per key
    from those groups; then one write per table that has something to change.
    A batch that changes the schema is typed and grouped again after the
    change, and one that leaves a column unavailable (TOAST) for the first
    time is grouped again with that column's own aggregate. A batch with a
    truncate or a key change of a row with TOASTed columns also caches its
    typed records. Everything else is decided on the driver.

    The consumer group gets a batch's end offsets once Spark has committed the
    batch to its checkpoint: when the next batch starts, or when the drain ends.
    """

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        tables: IcebergTables,
        checkpoint: str | None,
        dry_run: bool = False,
        stop_offsets: dict[int, int] | None = None,
    ) -> None:
        self.spark = spark
        self.settings = settings
        self.tables = tables
        self.checkpoint = checkpoint
        self.dry_run = dry_run
        self.stop_offsets = stop_offsets or {}
        from jobs.iceberg_tables import offsets_in, unavailable_in

        summary = tables.latest_pipeline_summary()  # of the newest commit: read once
        self.progress: dict[int, int] = offsets_in(summary)
        # where this run starts reading partitions the table has no offsets for
        self.initial_offsets: dict[int, int] = {}
        self.history: list[BatchMetrics] = []
        self._batch_started = time.monotonic()
        # batch id whose end offsets await Spark's checkpoint commit
        self.unconfirmed: int | None = None
        self.group_offsets: dict[int, int] = {}
        # columns changes of the pipeline have left unavailable (TOAST): only these need
        # an aggregate of their own in the newest change per key (see _partials); kept
        # in each commit's summary, so a run starts with what the last one learned
        self.toasted: frozenset[str] = unavailable_in(summary)
        # the table's key: what one row is, for the collapse, the MERGE and the tombstones
        self.key: tuple[str, ...] = tables.model.key
        # a dead-letter replay (jobs.dlq_replay) sets its id: every record is applied
        # whatever its offset, the table's offsets stay as they are, and the records
        # that fail again are kept in replay_failures instead of being dead-lettered
        self.replay: str | None = None
        # a replayed change older than this (source ts_ms) fails: deletes newer than it
        # may have been forgotten (tombstone retention)
        self.replay_cutoff_ms: int | None = None
        self.replay_failures: DataFrame | None = None

    # Spark calls this for every micro-batch
    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        global STEPS
        STEPS = _Steps(batch.sparkSession.sparkContext)
        # Spark plans batch N only after committing batch N-1 to its checkpoint
        self.confirm_checkpointed()
        started = self._batch_started = time.monotonic()
        metrics = BatchMetrics(self.settings.pipeline_id, batch_id)
        # temp views and snapshot properties live in the batch's own session
        self.spark = self.tables.spark = batch.sparkSession
        cached: list[DataFrame] = []
        try:
            self._apply(batch, batch_id, metrics, cached)
        finally:
            # dependents first: dropping a cache others are built on makes Spark
            # re-plan them on the raw parse, whose projections the optimizer
            # then inlines into their filters (a plan too large for the heap)
            for frame in reversed(cached):
                frame.unpersist()
            STEPS.end()
        metrics.duration_s = round(time.monotonic() - started, 3)
        log.debug("batch %s steps %s", batch_id, STEPS.summary())
        self.history.append(metrics)
        self.unconfirmed = batch_id
        print(metrics.as_json(), flush=True)

    def confirm_checkpointed(self) -> None:
        """The last batch is in Spark's checkpoint: commit the table's offsets to the group."""
        if self.unconfirmed is None:
            return
        batch_id, self.unconfirmed = self.unconfirmed, None
        failpoint(self.settings, "after_checkpoint_commit", batch_id)
        self._commit_group()
        failpoint(self.settings, "after_group_commit", batch_id)

    def _end_offsets(self, batch_id: int, seen: dict[int, int]) -> dict[int, int]:
        """The batch's end offsets from Spark's offset log (exact, transactions included)."""
        logged = read_offset_log(self.spark, self.checkpoint, batch_id, self.settings.kafka_topic)
        end = dict(seen)
        for partition, offset in logged.items():
            end[partition] = max(end.get(partition, 0), offset)
        if self.stop_offsets:
            end = {p: min(o, self.stop_offsets.get(p, o)) for p, o in end.items()}
        return end

    def _type(
        self,
        parsed: DataFrame,
        committed: dict[int, int],
        columns: list[tuple[str, str, str]],
        incompatible: dict[str, str],
    ) -> DataFrame:
        """Every record of the batch projected on the table's columns, marked fresh or not."""
        from pyspark.sql import functions as F

        from jobs import transforms

        fresh = _offset_filter(committed) if committed and self.replay is None else F.lit(True)
        frame = parsed.withColumn("_parse_problem", F.col("_problem")).withColumn("_fresh", fresh)
        if incompatible:
            reason = F.lit(None).cast("string")
            for name, text in incompatible.items():
                reason = F.when(F.map_contains_key(F.col("_row"), name), F.lit(text)).otherwise(
                    reason
                )
            frame = frame.withColumn("_problem", F.coalesce(F.col("_problem"), reason))
        # columns the row carries beyond the table's: what schema evolution looks at
        known = F.array(*[F.lit(column[0]) for column in columns])
        frame = frame.withColumn("_new_columns", F.array_except(F.map_keys("_row"), known))
        keep = ("_new_columns", "_schema_json", "_tombstone", "_parse_problem", "_fresh")
        typed = transforms.type_columns(frame, columns, self.key, keep=keep)
        if self.replay_cutoff_ms is not None:
            hours = self.settings.tombstone_retention_hours
            too_old = (F.col("ts_ms") < F.lit(self.replay_cutoff_ms)) & (F.col("cdc_op") != "d")
            reason = F.lit(
                f"older than the tombstone retention ({hours} h): a delete of its key since "
                "then may be forgotten; replay it with the retention check off after checking"
            )
            typed = typed.withColumn(
                "_problem", F.coalesce(F.col("_problem"), F.when(too_old, reason))
            )
        return typed

    def _before_stop(self, typed: DataFrame) -> DataFrame:
        """A bounded run (backfill) keeps the records before its stop offsets.

        The predicate reads only Kafka's own columns, so pushing it below the
        parser's projections inlines nothing.
        """
        return typed.where(_before_stop(self.stop_offsets)) if self.stop_offsets else typed

    def _partials(
        self, typed: DataFrame, data_columns: list[str], cached: list[DataFrame]
    ) -> DataFrame:
        """The one pass over the batch, cached: a row per Kafka partition and group.

        Valid changes group by key and carry :func:`transforms.newest_aggregates`
        (what the collapse needs: the newest change's row, and the newest
        available value of each column in ``self.toasted``); each dead-lettered
        record is a group of its own carrying its raw record; everything else
        (Kafka tombstones, records already in the table, truncates) shares one
        group per partition. Every group carries the counts, offsets, columns
        and schemas :meth:`_scan` adds up. The records themselves are never
        cached: a batch is read from Kafka and parsed once.
        """
        from jobs import transforms

        flags, groups, aggregates = transforms.reused(
            _partial_columns,
            tuple(self.settings.sequence),
            self.settings.truncate_policy,
            tuple(data_columns),
            self.toasted,
            self.key,
        )
        # flags first, so the aggregates read columns instead of the parser's expressions
        partials = typed.select("*", *flags).groupBy(*groups).agg(*aggregates).persist()
        cached.append(partials)
        return partials

    def _newest(self, partials: DataFrame, data_columns: list[str]) -> DataFrame:
        """The newest change per key, from the key groups of :meth:`_partials`."""
        from pyspark.sql import functions as F

        from jobs import transforms

        keyed = partials.where(F.col("_key").isNotNull())
        if len(self.key) == 1:
            keyed = keyed.withColumnRenamed("_key", self.key[0])
        else:
            keyed = keyed.select("*", *[F.col(f"_key.{k}").alias(k) for k in self.key])
        return transforms.combine_newest(
            keyed, data_columns, self.settings.sequence, self.toasted, key=self.key
        )

    def _scan(self, partials: DataFrame) -> _Scan:
        """Add up the cached groups per Kafka partition (runs the batch's one pass)."""
        from pyspark.sql import functions as F

        from jobs.iceberg_tables import merge_declared, row_columns_from_schema

        def distinct(name: str) -> Any:
            return F.array_distinct(F.flatten(F.collect_list(f"_t_{name}"))).alias(name)

        rows = (
            partials.groupBy(F.col("_kafka_partition").alias("partition"))
            .agg(
                F.min("_t_lo").alias("lo"),
                F.max("_t_hi").alias("hi"),
                *[F.sum(f"_t_{c}").alias(c) for c in _SUMS],
                distinct("cols"),
                distinct("schemas"),
                distinct("unavailable"),
                F.max("_t_truncate_seq").alias("truncate_seq"),
                F.count("_key").alias("keys"),
            )
            .collect()
        )
        declared: dict[str, str | None] = {}
        codecs: dict[str, str] = {}
        for schema_json in sorted({s for r in rows for s in r["schemas"]}):
            fields = row_columns_from_schema(schema_json)
            declared = merge_declared(
                declared, {n: t.spark_type if t else None for n, t in fields.items()}
            )
            codecs.update({n: t.codec for n, t in fields.items() if t is not None})
        truncates = [tuple(r["truncate_seq"]) for r in rows if r["truncate_seq"] is not None]
        # Spark's ordering of the struct: a null field sorts first
        newest_truncate = max(truncates, key=_nulls_first, default=None)

        def whole(name: str) -> int:
            return sum(int(r[name] or 0) for r in rows)

        return _Scan(
            first={int(r["partition"]): int(r["lo"]) for r in rows},
            seen_end={int(r["partition"]): int(r["hi"]) + 1 for r in rows},
            total=whole("n"),
            fresh=whole("fresh"),
            tombstones=whole("tomb"),
            columns_seen=sorted({c for r in rows for c in r["cols"] or []}),
            declared=declared,
            codecs=codecs,
            dead=whole("dead"),
            valid=whole("valid"),
            deletes=whole("deletes"),
            truncates=whole("truncates"),
            truncate_seq=newest_truncate,
            toast=whole("toast"),
            toast_creates=whole("toast_creates"),
            moved=whole("moved"),
            unavailable=frozenset(c for r in rows for c in r["unavailable"] or []),
            keys=whole("keys"),
        )

    def _apply(
        self, batch: DataFrame, batch_id: int, metrics: BatchMetrics, cached: list[DataFrame]
    ) -> None:
        from jobs import transforms
        from jobs.iceberg_tables import plan_evolution

        settings = self.settings
        tables = self.tables
        STEPS.begin("scan")
        parsed = transforms.parse_events(batch, settings.event_format, self.key)
        committed = dict(self.progress)
        model = tables.refresh_model()
        table_columns = dict(model.column_types)
        columns = [(c.name, c.spark_type, c.codec) for c in model.columns]
        # typed with the table's columns as they are: right unless the batch changes them
        typed = self._before_stop(self._type(parsed, committed, columns, {}))
        partials = self._partials(typed, [c[0] for c in columns], cached)
        scan = self._scan(partials)
        STEPS.begin("plan")  # the batch's offsets and schema changes
        if self.replay is not None:  # dead letters, below the table's offsets: all applied
            end = scan.seen_end
            start = {p: scan.first[p] for p in end}
        else:
            end = self._end_offsets(batch_id, scan.seen_end)
            start = {
                p: committed.get(p, self.initial_offsets.get(p, scan.first.get(p, end[p])))
                for p in end
            }
        if not end:
            metrics.skipped = True
            return
        metrics.offsets = {str(p): [start[p], end[p]] for p in sorted(end) if start[p] < end[p]}
        metrics.already_committed = scan.total - scan.fresh
        replayed = self.replay is not None
        if not replayed and (kafka_offsets.covers(committed, end) or not metrics.offsets):
            metrics.skipped = True
            log.warning("batch %s is already in the table (replay): skipped", batch_id)
            return
        metrics.events_in = scan.fresh
        metrics.kafka_tombstones = scan.tombstones

        # schema evolution, decided on the driver from the columns the batch carries
        add, widen, incompatible = plan_evolution(table_columns, scan.columns_seen, scan.declared)
        if (add or widen) and not self.dry_run:
            tables.apply_evolution(add, widen, scan.codecs)
        metrics.schema_changes = [f"add {n} {t}" for n, t in add] + [
            f"widen {n} to {t}" for n, t in widen
        ]
        retype = bool(add or widen or incompatible)
        if retype:
            if self.dry_run:  # the table is left as it is: type as if it had changed
                widened = dict(widen)
                columns = [
                    (n, widened[n], default_codec(widened[n])) if n in widened else (n, t, c)
                    for n, t, c in columns
                ]
                known = {c[0] for c in columns}
                columns += [
                    (n, t, scan.codecs.get(n, default_codec(t))) for n, t in add if n not in known
                ]
            else:
                columns = [(c.name, c.spark_type, c.codec) for c in tables.model.columns]
            typed = self._before_stop(self._type(parsed, committed, columns, incompatible))
        while retype or not scan.unavailable <= self.toasted:
            if not scan.unavailable <= self.toasted:
                # a column first seen unavailable needs its own aggregate from now on
                log.info(
                    "batch %s: unavailable (TOAST) columns %s", batch_id, sorted(scan.unavailable)
                )
                self.toasted |= scan.unavailable
            STEPS.begin("rescan")
            partials.unpersist()  # nothing is built on it yet
            cached.remove(partials)
            partials = self._partials(typed, [c[0] for c in columns], cached)
            scan = self._scan(partials)
            retype = False
        self._write(
            batch,
            typed,
            partials,
            scan,
            batch_id,
            metrics,
            start,
            end,
            [c[0] for c in columns],
            cached,
        )

    def _write(
        self,
        batch: DataFrame,
        typed: DataFrame,
        partials: DataFrame,
        scan: _Scan,
        batch_id: int,
        metrics: BatchMetrics,
        start: dict[int, int],
        end: dict[int, int],
        data_columns: list[str],
        cached: list[DataFrame],
    ) -> None:
        from pyspark.sql import functions as F

        from jobs import transforms
        from jobs.iceberg_tables import (
            append_tombstones_sql,
            live_source_sql,
            merge_dlq_sql,
            merge_live_sql,
        )

        settings = self.settings
        tables = self.tables
        order = settings.sequence
        STEPS.begin("collapse")
        metrics.dead_lettered = scan.dead
        truncate_seq = None
        if settings.truncate_policy == "clear" and scan.truncate_seq is not None:
            truncate_seq = scan.truncate_seq
            metrics.truncated = scan.truncates
        key_change_toast = bool(scan.toast_creates) and "headers" in batch.columns
        history = tables.history is not None and bool(scan.valid) and not self.dry_run
        versions = None
        images = None
        per_change = truncate_seq is not None or key_change_toast or bool(scan.moved) or history
        if per_change:
            # these need the single changes, not the newest per key: cache the typed batch
            events = typed.persist()
            cached.append(events)
            if history:
                versions = self._history_versions(events, data_columns)
            valid = events.where(
                F.col("_fresh") & ~F.col("_tombstone") & F.col("_problem").isNull()
            )
            if truncate_seq is not None:
                # the keys the truncate empties include those the batch wrote before it
                valid.select(*self.key).createOrReplaceTempView("cdc_batch_keys")
                after = F.expr(f"struct({', '.join(_sequence_sql(truncate_seq, order))})")
                valid = valid.where(transforms.sequence(order=order) > after)
            stored: list[DataFrame] = []  # read only when a key change needs it
            if key_change_toast or scan.moved:
                stored = transforms.stored_versions(
                    self.spark.table(tables.live),
                    self.spark.table(tables.tombstones),
                    data_columns,
                    key=self.key,
                )
            if key_change_toast:
                # a key change whose create lacks TOASTed values: take them from the old key
                key_types = [(c.name, c.spark_type) for c in tables.model.key_columns]
                # read once (the records the create headers mark): the fill and the read
                # ahead both take them
                old = transforms.old_keys(batch, key_types).localCheckpoint()
                valid = transforms.fill_from_old_key(
                    valid,
                    old,
                    stored,
                    data_columns,
                    order,
                    key=self.key,
                    ahead=self._changes_ahead(valid, old, end, batch_id),
                ).localCheckpoint()  # materialized: the MERGE must not re-read its own table
            if scan.moved and not self.dry_run:
                # the rows whose key changes: their tombstones keep them for the new key's
                # create, which another partition may bring in a later batch
                images = transforms.key_change_images(
                    valid, stored, data_columns, order, key=self.key
                ).localCheckpoint()
            collapsed = transforms.collapse_newest(valid, data_columns, order, key=self.key)
        else:
            collapsed = self._newest(partials, data_columns)
        key_count = 0
        if scan.valid:
            # one row per key, read by the tombstone append and the MERGE
            collapsed = collapsed.persist()
            cached.append(collapsed)
            # without a job of its own, the scan's key groups: exact while a key's changes
            # come from one Kafka partition, as Debezium partitions by key (a key in two
            # partitions, after partitions were added, counts twice in the batch's
            # metrics; the MERGE is not affected)
            key_count = collapsed.count() if per_change else scan.keys
        metrics.collapsed_in_batch = scan.valid - key_count
        dead_rows = partials.where(F.col("_dead_offset").isNotNull()).select(
            F.lit(settings.pipeline_id).alias("pipeline_id"),
            F.col("_kafka_topic").alias("topic"),
            F.col("_kafka_partition").cast("int").alias("kafka_partition"),
            F.col("_dead_offset").alias("kafka_offset"),
            F.col("_kafka_timestamp").alias("kafka_timestamp"),
            F.col("_kafka_key").alias("raw_key"),
            F.col("_kafka_value").alias("raw_value"),
            F.col("_problem").alias("reason"),
            F.lit(batch_id).cast("bigint").alias("batch_id"),
            F.current_timestamp().alias("dead_lettered_at"),
            F.lit(None).cast("string").alias("replay_id"),
            F.lit(None).cast("timestamp").alias("replayed_at"),
            F.lit(None).cast("string").alias("replay_outcome"),
        )
        if self.replay is not None:
            # what fails again: kept (materialized) for the replay to mark its dead letters
            self.replay_failures = dead_rows.select(
                "topic", "kafka_partition", "kafka_offset", "reason"
            ).localCheckpoint()
        if self.dry_run:
            metrics.stale = key_count
            return

        merged_end = dict(self.progress)
        for partition, offset in end.items() if self.replay is None else ():
            merged_end[partition] = max(merged_end.get(partition, 0), offset)
        properties = {
            SUMMARY_PIPELINE: settings.pipeline_id,
            SUMMARY_TOPIC: settings.kafka_topic,
            SUMMARY_BATCH: str(batch_id) if self.replay is None else f"replay-{self.replay}",
            SUMMARY_OFFSETS: json.dumps({str(p): o for p, o in sorted(merged_end.items())}),
            SUMMARY_RANGE: json.dumps(metrics.offsets),
            SUMMARY_METRICS: json.dumps(self._pre_metrics(metrics)),
            SUMMARY_UNAVAILABLE: json.dumps(sorted(self.toasted)),
        }
        if self.replay is not None:
            # not a step of the pipeline's progress: a drain committing meanwhile keeps its
            # offsets the newest the table records
            del properties[SUMMARY_PIPELINE], properties[SUMMARY_OFFSETS]
            properties[SUMMARY_REPLAY] = self.replay
        failpoint(settings, "before_merge", batch_id)
        tables.set_snapshot_properties(properties)
        before_snapshot = tables.current_snapshot_id()
        try:
            if metrics.dead_lettered and self.replay is None:
                STEPS.begin("merge-dlq")
                dead_rows.createOrReplaceTempView("cdc_dead_letters")
                tables.run_retrying(merge_dlq_sql(tables.dlq, "cdc_dead_letters"))
            if versions is not None:
                # before the live table: a crash before its commit replays the batch, and
                # a version the history holds is not added again
                STEPS.begin("history")
                self._write_history(versions, data_columns)
                failpoint(settings, "after_history", batch_id)
            if truncate_seq is not None:
                STEPS.begin("truncate")
                self._clear_before(truncate_seq)
            collapsed.createOrReplaceTempView("cdc_collapsed")
            if scan.deletes:
                # deletes are remembered first: a crash before the live MERGE replays both
                STEPS.begin("append-tombstones")
                deletes = "cdc_collapsed"
                if images is not None:
                    self._remembered_deletes(collapsed, images).createOrReplaceTempView(
                        "cdc_deletes"
                    )
                    deletes = "cdc_deletes"
                tables.run_retrying(
                    append_tombstones_sql(
                        tables.tombstones,
                        deletes,
                        order,
                        key=self.key,
                        images=images is not None,
                    )
                )
            if key_count:
                STEPS.begin("merge-live")
                remembered = tables.tombstones if tables.record_count(tables.tombstones) else None
                source = live_source_sql("cdc_collapsed", remembered, order, key=self.key)
                tables.run_retrying(
                    merge_live_sql(
                        tables.live,
                        source,
                        data_columns,
                        order,
                        toast=bool(scan.toast),
                        key=self.key,
                    )
                )
            STEPS.begin("commit")
            after_snapshot = tables.current_snapshot_id()
            if after_snapshot == before_snapshot:
                # nothing changed (all stale or dead): still record the progress
                tables.empty_commit(properties)
                after_snapshot = tables.current_snapshot_id()
        finally:
            tables.clear_snapshot_properties(properties)
        summary = tables.snapshot_summary(after_snapshot) if after_snapshot else {}
        metrics.inserted = int(summary.get("spark.merge-into.num-target-rows-inserted", 0))
        metrics.updated = int(summary.get("spark.merge-into.num-target-rows-updated", 0))
        metrics.deleted = int(summary.get("spark.merge-into.num-target-rows-deleted", 0))
        metrics.stale = key_count - metrics.inserted - metrics.updated - metrics.deleted
        self.progress = merged_end
        failpoint(settings, "after_iceberg_commit", batch_id)
        if scan.deletes:
            self._compact_tombstones(batch_id)

    def _compact_tombstones(self, batch_id: int) -> None:
        """Rewrite the tombstone table's files once the drain has left too many of them.

        Each batch with deletes appends a small file per bucket it touches, and
        every batch reads the whole tombstone table twice (the append skips the
        deletes it remembers, the live MERGE's source drops outdated changes):
        over a long drain of small batches, thousands of files made both slower
        with every batch. After the batch's commit (the table's progress is
        recorded), so a crash here loses nothing; a rewrite that loses a race
        with maintenance is planned again.
        """
        from jobs.iceberg_tables import rewrite_data_files_sql, sql_retrying

        limit = self.settings.tombstone_compact_files
        if not limit or self.dry_run or self.replay is not None:
            return
        files = self.tables.data_file_count(self.tables.tombstones)
        if files <= limit:
            return
        target = self.settings.maintenance_target_file_mb * 1024 * 1024
        # one commit: the tombstone table is small, and its rewrite in parts is slow
        statement = rewrite_data_files_sql(self.tables.tombstones, target, partial_progress=False)
        STEPS.begin("compact-tombstones")
        rows = sql_retrying(self.spark, statement)
        rewritten = int(rows[0][0]) if rows else 0
        log.info(
            "batch %s: tombstone table had %s data files (CDC_TOMBSTONE_COMPACT_FILES=%s): "
            "%s rewritten",
            batch_id,
            files,
            limit,
            rewritten,
        )

    def _changes_ahead(
        self, valid: DataFrame, old: DataFrame, end: dict[int, int], batch_id: int
    ) -> DataFrame | None:
        """The valid changes Kafka holds after the batch, up to its key changes' creates.

        A key change's create, in the new key's partition, may be read before
        the old key's last updates, in a partition that lags behind: its TOAST
        placeholders stand for values the batch has not read yet (when neither
        the batch nor the tombstone table holds the change's delete). Those
        updates were written to Kafka before the create (Debezium writes the
        delete of the old key, and before it the key's updates, ahead of the
        create), so they are among the records whose Kafka time is at most the
        create's (plus ``AHEAD_MARGIN_MS`` under LogAppendTime): read from the
        batch's end offsets up to there. They are only read, for the fill; their
        own batch applies them. None when no create needs it or nothing lies ahead.
        """
        from pyspark.sql import functions as F

        from cdc_iceberg.spark_conf import kafka_source_options
        from jobs import transforms

        pending = transforms.creates_before_their_delete(
            valid, old, self.spark.table(self.tables.tombstones), key=self.key
        )
        newest, broker_time = pending.agg(
            F.max(F.unix_millis("_kafka_timestamp")), F.max("_log_append_time")
        ).first() or (None, None)
        if newest is None:
            return None
        settings = self.settings
        # a producer stamps its records in the order it sends them: none of the old key's
        # changes before the create is later than it; the brokers' stamps may be
        margin = AHEAD_MARGIN_MS if broker_time else 0
        until = kafka_offsets.offsets_for_timestamp(settings, newest + margin + 1)
        read = {p: end.get(p, self.progress.get(p, self.initial_offsets.get(p, 0))) for p in until}
        # Spark's batch source takes every partition: an empty range where nothing is ahead
        start = {p: min(read[p], until[p]) for p in until}
        if all(start[p] == until[p] for p in until):
            return None
        log.info(
            "batch %s: reading %d records ahead for the TOASTed values of key changes",
            batch_id,
            sum(until[p] - start[p] for p in until),
        )
        raw = (
            self.spark.read.format("kafka")
            .options(**kafka_source_options(settings))
            .option("startingOffsets", kafka_offsets.to_spark_json(settings.kafka_topic, start))
            .option("endingOffsets", kafka_offsets.to_spark_json(settings.kafka_topic, until))
            .option("failOnDataLoss", "false")  # only read, for the fill: what is gone is gone
            .load()
        )
        columns = [(c.name, c.spark_type, c.codec) for c in self.tables.model.columns]
        typed = self._type(
            transforms.parse_events(raw, settings.event_format, self.key), {}, columns, {}
        )
        # materialized before the filter: a filter on the parser's columns would inline
        # its projections into the predicate (a plan too large for the heap)
        ahead = typed.select(*[c for c in valid.columns if c in typed.columns]).localCheckpoint()
        ahead = ahead.where(~F.col("_tombstone") & F.col("_problem").isNull())
        for name in valid.columns:
            if name not in ahead.columns:  # a column this batch adds (dry run): not known ahead
                ahead = ahead.withColumn(name, F.lit(None).cast(valid.schema[name].dataType))
        return ahead

    def _remembered_deletes(self, collapsed: DataFrame, images: DataFrame) -> DataFrame:
        """The batch's deletes to remember: the newest change of each key that is a delete,
        and every key change's delete, with the image of the row it removed."""
        from pyspark.sql import functions as F

        same = [*self.key, *SEQUENCE]
        plain = collapsed.where(F.col("cdc_op") == "d").select(*same, "cdc_op")
        # an INSERT matches struct fields by position: the image as the table orders its
        # fields (a column added later comes after the sequence)
        stored: Any = self.spark.table(self.tables.tombstones).schema[IMAGE].dataType
        image = F.struct(*[F.col(f"{IMAGE}.`{f}`").alias(f) for f in stored.fieldNames()])
        images = images.withColumn(IMAGE, image)
        # both descend from the batch's changes: named apart, or Spark cannot tell them apart
        match = [F.col(f"p.`{c}`").eqNullSafe(F.col(f"i.`{c}`")) for c in same]
        return (
            plain.alias("p")
            .join(images.alias("i"), match, "left_anti")
            .withColumn(IMAGE, F.lit(None).cast(images.schema[IMAGE].dataType))
            .unionByName(images)
        )

    def _pre_metrics(self, metrics: BatchMetrics) -> dict[str, Any]:
        """What the commit's summary records of the batch; its time is up to the commit."""
        return {
            "duration_s": round(time.monotonic() - self._batch_started, 3),
            "events_in": metrics.events_in,
            "kafka_tombstones": metrics.kafka_tombstones,
            "already_committed": metrics.already_committed,
            "dead_lettered": metrics.dead_lettered,
            "collapsed_in_batch": metrics.collapsed_in_batch,
            "truncated": metrics.truncated,
            "schema_changes": metrics.schema_changes,
        }

    def _history_versions(self, events: DataFrame, data_columns: list[str]) -> DataFrame:
        """The batch's changes as versions for the history table (one per change: a
        redelivered change, same key, commit time and LSN, is its first delivery)."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        from cdc_iceberg.schema import VALID_OPS

        change = F.col("_fresh") & ~F.col("_tombstone") & F.col("_problem").isNull()
        valid = events.where(change & F.col("cdc_op").isin(*VALID_OPS))
        delete = F.col("cdc_op") == "d"
        first = Window.partitionBy(*self.key, "ts_ms", "lsn").orderBy(
            *[F.col(c).asc_nulls_first() for c in SEQUENCE]
        )
        return (
            valid.select(
                *[
                    F.col(c) if c in self.key else F.when(~delete, F.col(c)).alias(c)
                    for c in data_columns
                ],
                *SEQUENCE,
                "cdc_op",
                F.timestamp_millis("ts_ms").alias("valid_from"),
                F.lit(None).cast("timestamp").alias("valid_to"),
                F.when(delete, F.array().cast("array<string>"))
                .otherwise(F.col("_unavailable"))
                .alias("_toasted"),
                F.row_number().over(first).alias("_delivery"),
            )
            .where(F.col("_delivery") == 1)
            .drop("_delivery")
        )

    def _write_history(self, versions: DataFrame, data_columns: list[str]) -> None:
        """Add the batch's versions to the history, then set again, for every key they
        touch, when each version ended and the values its TOASTed columns carry over.

        A late change lands between the versions it falls between: the one before
        it ends where it starts, and it ends where the next one starts.
        """
        from jobs.iceberg_tables import key_match, merge_history_sql

        tables = self.tables
        history = tables.history
        assert history is not None
        versions.createOrReplaceTempView("cdc_versions")
        tables.run_retrying(merge_history_sql(history, "cdc_versions", data_columns, self.key))
        keys = ", ".join(f"h.`{k}`" for k in self.key)
        order = ", ".join(f"h.{c} ASC NULLS FIRST" for c in self.settings.sequence)
        ordered = f"PARTITION BY {keys} ORDER BY {order}"
        carried = [c for c in data_columns if c not in self.key and c in self.toasted]
        fills = [
            f"CASE WHEN array_contains(h._toasted, '{c}') THEN last(CASE WHEN NOT "
            f"array_contains(h._toasted, '{c}') THEN named_struct('v', h.`{c}`) END, true) "
            f"OVER ({ordered} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING).v "
            f"ELSE h.`{c}` END AS `{c}`"
            for c in carried
        ]
        touched = f"(SELECT DISTINCT {', '.join(f'`{k}`' for k in self.key)} FROM cdc_versions)"
        # materialized: a copy-on-write MERGE cannot plan a source that reads its target
        self.spark.sql(
            f"SELECT {keys}, h.ts_ms, h.lsn, lead(h.valid_from) OVER ({ordered}) AS valid_to"
            f"{''.join(', ' + f for f in fills)} FROM {history} h "
            f"LEFT SEMI JOIN {touched} k ON {key_match('h', 'k', self.key)}"
        ).localCheckpoint().createOrReplaceTempView("cdc_history_ends")
        changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in ("valid_to", *carried))
        updates = ", ".join(f"`{c}` = s.`{c}`" for c in ("valid_to", *carried))
        tables.run_retrying(
            f"MERGE INTO {history} t USING cdc_history_ends s ON {key_match('t', 's', self.key)} "
            f"AND t.ts_ms <=> s.ts_ms AND t.lsn <=> s.lsn WHEN MATCHED AND ({changed}) "
            f"THEN UPDATE SET {updates}"
        )

    def _clear_before(self, truncate_seq: tuple[Any, ...]) -> None:
        """``op = t`` under the 'clear' policy: every older row becomes a tombstone.

        Every key of the table and of the batch (``cdc_batch_keys``) is
        remembered as deleted at the truncate, so no change from before it
        (a redelivery, say) can bring a row back.
        """
        from jobs.iceberg_tables import append_tombstones_sql

        tables = self.tables
        order = self.settings.sequence
        literals = _sequence_sql(truncate_seq, order)
        keys = ", ".join(f"`{k}`" for k in self.key)
        self.spark.sql(
            f"SELECT {keys}, {', '.join(literals)}, 'd' AS cdc_op FROM (SELECT "
            f"{keys} FROM {tables.live} UNION SELECT {keys} FROM cdc_batch_keys)"
        ).createOrReplaceTempView("cdc_truncated")
        tables.run_retrying(
            append_tombstones_sql(tables.tombstones, "cdc_truncated", order, key=self.key)
        )
        tables.run_retrying(
            f"DELETE FROM {tables.live} WHERE struct({', '.join(order)}) "
            f"< struct({', '.join(literals)})"
        )

    def _commit_group(self) -> None:
        if self.dry_run or not self.progress or self.group_offsets == self.progress:
            return
        kafka_offsets.commit_group_offsets(self.settings, self.progress)
        self.group_offsets = dict(self.progress)


def _partial_columns(
    order: tuple[str, ...],
    truncate_policy: str,
    data_columns: tuple[str, ...],
    toasted: frozenset[str],
    key: tuple[str, ...],
) -> tuple[list[Any], list[Any], list[Any]]:
    """The flags, groups and aggregates of :meth:`BatchWriter._partials`."""
    from pyspark.sql import functions as F

    from jobs import transforms

    change = F.col("_fresh") & ~F.col("_tombstone")
    dead_condition = F.col("_problem").isNotNull()
    if truncate_policy == "clear":  # the truncates it applies are no dead letters
        dead_condition = dead_condition & ~_is_truncate()
    flags = [
        (change & F.col("_problem").isNull()).alias("_valid"),
        (change & dead_condition).alias("_dead"),
        (change & _is_truncate()).alias("_truncate"),
        (change & F.col("_parse_problem").isNull()).alias("_discover"),
    ]
    valid, dead, truncate = F.col("_valid"), F.col("_dead"), F.col("_truncate")
    discover = F.col("_discover")
    toast = valid & (F.size("_unavailable") > 0)

    def total(condition: Any) -> Any:
        return F.sum(condition.cast("int"))

    fresh = F.col("_fresh")
    new_columns = F.col("_new_columns")
    stats = {
        "lo": F.min("_kafka_offset"),
        "hi": F.max("_kafka_offset"),
        "n": F.count(F.lit(1)),
        "fresh": total(fresh),
        "tomb": total(fresh & F.col("_tombstone")),
        "dead": total(dead),
        "valid": total(valid),
        "deletes": total(valid & (F.col("cdc_op") == "d")),
        "moved": total(valid & (F.col("cdc_op") == "d") & F.col("_kafka_moved")),
        "truncates": total(truncate),
        "truncate_seq": F.max(F.when(truncate, transforms.sequence(order=order))),
        "toast": total(toast),
        "toast_creates": total(toast & (F.col("cdc_op") == "c")),
        "unavailable": F.array_distinct(
            F.flatten(F.collect_set(F.when(toast, F.col("_unavailable"))))
        ),
        "cols": F.array_distinct(
            F.flatten(F.collect_set(F.when(discover & (F.size(new_columns) > 0), new_columns)))
        ),
        "schemas": F.collect_set(F.when(discover, F.col("_schema_json"))),
    }
    raw = [F.first(F.when(dead, F.col(c)), ignorenulls=True).alias(c) for c in _DEAD_RAW]
    groups = [
        "_kafka_partition",
        F.when(valid, F.col(key[0]) if len(key) == 1 else F.struct(*key)).alias("_key"),
        F.when(dead, F.col("_kafka_offset")).alias("_dead_offset"),
    ]
    aggregates = [
        *transforms.newest_aggregates(data_columns, order, toasted, key=key),
        *[column.alias(f"_t_{name}") for name, column in stats.items()],
        *raw,
    ]
    return flags, groups, aggregates


def _is_truncate() -> Any:
    from pyspark.sql import functions as F

    return (F.col("cdc_op") == "t") & F.col("_problem").startswith("truncate event")


def _before_stop(stop: dict[int, int]) -> Any:
    from pyspark.sql import functions as F

    part, off = F.col("_kafka_partition"), F.col("_kafka_offset")
    condition = ~part.isin(*stop.keys())
    for partition, offset in stop.items():
        condition = condition | ((part == partition) & (off < offset))
    return condition
