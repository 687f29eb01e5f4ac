"""DDL and MERGE statements for the live, tombstone and dead-letter tables.

The statement builders are pure (strings in, strings out) and unit tested; the
:class:`IcebergTables` methods run them on a SparkSession.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cdc_iceberg.debezium_types import ColumnType, UnsupportedType, column_type
from cdc_iceberg.schema import (
    DLQ_COLUMNS,
    DLQ_REPLAY_COLUMNS,
    HISTORY_COLUMNS,
    IMAGE,
    METADATA_COLUMNS,
    RESERVED,
    SAFE_WIDENING,
    SEQUENCE,
    SEQUENCE_COLUMNS,
    SEQUENCE_PROPERTY,
    SUMMARY_OFFSETS,
    SUMMARY_PIPELINE,
    SUMMARY_TOPIC,
    SUMMARY_UNAVAILABLE,
    image_type,
)
from cdc_iceberg.settings import Settings, check_identifier
from cdc_iceberg.table_model import (
    CODECS_PROPERTY,
    KEY_PROPERTY,
    TableModel,
    TableModelError,
    default_codec,
    identifiable,
    parse_codecs,
    parse_key,
    row_schema_of,
)
from jobs import session

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from cdc_iceberg.pipelines import PipelinesConfig

log = logging.getLogger("cdc_to_iceberg")

SNAPSHOT_PROPERTY = "spark.sql.iceberg.snapshot-property."

# Exceptions of a commit that lost a race with another writer of the table
# (maintenance rewriting files, a second job). Iceberg retries plain commit
# races itself (commit.retry.num-retries); these need the whole statement
# planned again on the new snapshot, which the sequence guard makes safe.
CONFLICTS = (
    "ValidationException",
    "CommitFailedException",
    "CommitStateUnknownException",
    "conflicting files",
    "Cannot commit",
)
CONFLICT_RETRIES = 5


class SequenceOrderMismatch(RuntimeError):
    """The table was built with another CDC_SEQUENCE than this run's."""


# Table layout: bucketing on the key lets MERGE touch only the buckets a batch
# changes and join bucket to bucket. ICEBERG_WRITE_MODE picks how MERGE, UPDATE
# and DELETE write (copy-on-write by default, chosen by measurement: see
# docs/layout.md); ensure() keeps existing tables on the configured mode.
LIVE_TABLE_PROPERTIES = {
    "format-version": "2",
    "write.distribution-mode": "hash",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "50",
    "commit.retry.num-retries": "10",
}
WRITE_MODE_PROPERTIES = ("write.merge.mode", "write.update.mode", "write.delete.mode")


def table_properties(write_mode: str) -> dict[str, str]:
    """Properties of the live and tombstone tables, writing in ``write_mode``."""
    return {**LIVE_TABLE_PROPERTIES, **dict.fromkeys(WRITE_MODE_PROPERTIES, write_mode)}


def seq_newer(left: str, right: str, order: Sequence[str] = SEQUENCE) -> str:
    """SQL: ``left``'s sequence tuple is strictly newer than ``right``'s."""
    lhs = ", ".join(f"{left}.{c}" for c in order)
    rhs = ", ".join(f"{right}.{c}" for c in order)
    return f"struct({lhs}) > struct({rhs})"


def key_match(left: str, right: str, key: Sequence[str]) -> str:
    """SQL: ``left`` and ``right`` have the same key tuple."""
    return " AND ".join(f"{left}.`{k}` = {right}.`{k}`" for k in key)


def partitioned_by(model: TableModel, buckets: int, bucket_column: str = "") -> str:
    """The PARTITIONED BY clause of a table of ``model`` ("" when it is not partitioned)."""
    column = model.partition_column(int(buckets), bucket_column)
    return f"PARTITIONED BY (bucket({int(buckets)}, `{column}`)) " if column else ""


def partition_fields(model: TableModel, buckets: int, bucket_column: str = "") -> list[str]:
    """The partition fields :func:`partitioned_by` gives, as Iceberg prints them."""
    column = model.partition_column(int(buckets), bucket_column)
    return [f"bucket[{int(buckets)}]({column})"] if column else []


def _columns_sql(columns: Sequence[tuple[str, str]], required: Sequence[str] = ()) -> str:
    return ", ".join(
        f"`{check_identifier(n, 'column')}` {t}{' NOT NULL' if n in required else ''}"
        for n, t in columns
    )


def tombstone_columns(model: TableModel) -> list[tuple[str, str]]:
    """A remembered delete: the key, its sequence and when it was remembered, and for the
    delete of a primary-key change the row it removed (``transforms.key_change_images``)."""
    return [
        *[(c.name, c.spark_type) for c in model.key_columns],
        *SEQUENCE_COLUMNS,
        ("deleted_at", "timestamp"),
        (IMAGE, image_type(model.column_types, key=model.key)),
    ]


def _properties_sql(properties: Mapping[str, str]) -> str:
    return ", ".join(f"'{k}'='{_sql_text(v)}'" for k, v in properties.items())


def _sql_text(value: str) -> str:
    """``value`` inside a single-quoted SQL string literal."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def create_live_sql(
    table: str,
    model: TableModel,
    buckets: int,
    write_mode: str = Settings.iceberg_write_mode,
    bucket_column: str = "",
) -> str:
    """The live table: the source's columns (key columns required), then the pipeline's."""
    props = {
        **table_properties(write_mode),
        CODECS_PROPERTY: model.codecs_json(),
        KEY_PROPERTY: json.dumps(list(model.key)),
    }
    columns = _columns_sql((*model.column_types, *METADATA_COLUMNS), required=model.key)
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ({columns}) USING iceberg "
        f"{partitioned_by(model, buckets, bucket_column)}"
        f"TBLPROPERTIES ({_properties_sql(props)})"
    )


def create_tombstones_sql(
    table: str,
    model: TableModel,
    buckets: int,
    write_mode: str = Settings.iceberg_write_mode,
    bucket_column: str = "",
) -> str:
    props = _properties_sql(table_properties(write_mode))
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ({_columns_sql(tombstone_columns(model))}) "
        f"USING iceberg {partitioned_by(model, buckets, bucket_column)}"
        f"TBLPROPERTIES ({props})"
    )


def history_columns(model: TableModel) -> list[tuple[str, str]]:
    """A version of a row: the source's columns, its sequence and op, when it was valid."""
    return [*model.column_types, *SEQUENCE_COLUMNS, ("cdc_op", "string"), *HISTORY_COLUMNS]


def create_history_sql(table: str, model: TableModel, buckets: int, bucket_column: str = "") -> str:
    clash = sorted({c.name for c in model.columns} & {n for n, _ in HISTORY_COLUMNS})
    if clash:
        raise TableModelError(
            f"{table}: the source has column(s) {', '.join(clash)}, which a history table "
            "uses for itself: keep no history for this table, or rename the column(s)"
        )
    props = _properties_sql(table_properties("copy-on-write"))
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ({_columns_sql(history_columns(model), model.key)}) "
        f"USING iceberg {partitioned_by(model, buckets, bucket_column)}"
        f"TBLPROPERTIES ({props})"
    )


def merge_history_sql(
    table: str, source: str, data_columns: Sequence[str], key: Sequence[str]
) -> str:
    """Add the versions of ``source`` the history does not hold yet.

    A version is a change of a key: its key, source commit time and LSN (a
    redelivered change is the same version, whatever its Kafka offset).
    """
    names = [*data_columns, *SEQUENCE, "cdc_op", "valid_from", "valid_to", "_toasted"]
    columns = ", ".join(f"`{c}`" for c in (*names, "recorded_at"))
    values = ", ".join([*(f"s.`{c}`" for c in names), "current_timestamp()"])
    return (
        f"MERGE INTO {table} t USING {source} s ON {key_match('t', 's', key)} "
        "AND t.ts_ms <=> s.ts_ms AND t.lsn <=> s.lsn "
        f"WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})"
    )


def create_dlq_sql(table: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ({_columns_sql(DLQ_COLUMNS)}) USING iceberg "
        "TBLPROPERTIES ('format-version'='2')"
    )


def live_source_sql(
    source: str, tombstones: str | None, order: Sequence[str] = SEQUENCE, *, key: Sequence[str]
) -> str:
    """The changes a MERGE may apply: those no remembered delete of the same key outdates.

    A delete always passes: the MERGE's own sequence guard decides it.
    The tombstone table is named in SQL rather than joined as a DataFrame, so
    Spark plans it like any table of the statement, copy-on-write included.
    """
    if tombstones is None:
        return source
    return (
        f"(SELECT s.* FROM {source} s LEFT ANTI JOIN {tombstones} x "
        f"ON {key_match('s', 'x', key)} AND s.cdc_op <> 'd' "
        f"AND NOT ({seq_newer('s', 'x', order)}))"
    )


def merge_live_sql(
    table: str,
    source: str,
    data_columns: Sequence[str],
    order: Sequence[str] = SEQUENCE,
    toast: bool = True,
    *,
    key: Sequence[str],
) -> str:
    """Apply the collapsed changes: newer wins, deletes delete, TOAST keeps stored values.

    ``toast=False`` when no change of the batch has an unavailable column: the
    update then reads nothing but the key and the sequence of the target rows.
    """
    non_key = [c for c in data_columns if c not in key]
    if toast:
        updates = [
            f"`{c}` = CASE WHEN array_contains(s._unavailable, '{c}') THEN t.`{c}` ELSE s.`{c}` END"
            for c in non_key
        ]
    else:
        updates = [f"`{c}` = s.`{c}`" for c in non_key]
    updates += [f"`{c}` = s.`{c}`" for c in (*SEQUENCE, "cdc_op")]
    updates.append("ingested_at = current_timestamp()")
    insert_cols = [*data_columns, *SEQUENCE, "cdc_op", "ingested_at"]
    insert_vals = [f"s.`{c}`" for c in (*data_columns, *SEQUENCE, "cdc_op")]
    insert_vals.append("current_timestamp()")
    newer = seq_newer("s", "t", order)
    return (
        f"MERGE INTO {table} t USING {source} s ON {key_match('t', 's', key)} "
        f"WHEN MATCHED AND s.cdc_op = 'd' AND {newer} THEN DELETE "
        f"WHEN MATCHED AND s.cdc_op <> 'd' AND {newer} THEN UPDATE SET {', '.join(updates)} "
        f"WHEN NOT MATCHED AND s.cdc_op <> 'd' THEN INSERT "
        f"({', '.join(f'`{c}`' for c in insert_cols)}) VALUES ({', '.join(insert_vals)})"
    )


def append_tombstones_sql(
    table: str,
    source: str,
    order: Sequence[str] = SEQUENCE,
    *,
    key: Sequence[str],
    images: bool = False,
) -> str:
    """Remember the deletes of ``source`` (collapsed changes) with their sequence.

    An append, not a MERGE, so a batch writes only its new deletes instead of
    rewriting the files of every key it touches. A key may gather several
    tombstones (deleted, re-created, deleted again) and every reader takes the
    newest; a tombstone only rejects changes older than itself, so an older
    one changes nothing, and maintenance prunes it (``prune_tombstones``). A
    delete already remembered, or outdated by a remembered one, is not
    appended again: a replayed batch adds nothing. With ``images``, ``source``
    has an ``image`` column too (the row a key change's delete removed).
    """
    extra = (IMAGE,) if images else ()
    cols = ", ".join((*[f"`{k}`" for k in key], *SEQUENCE, *extra, "deleted_at"))
    values = ", ".join((*[f"s.`{k}`" for k in key], *[f"s.{c}" for c in (*SEQUENCE, *extra)]))
    return (
        f"INSERT INTO {table} ({cols}) SELECT {values}, current_timestamp() "
        f"FROM {source} s LEFT ANTI JOIN {table} x ON {key_match('x', 's', key)} "
        f"AND NOT ({seq_newer('s', 'x', order)}) WHERE s.cdc_op = 'd'"
    )


def rewrite_data_files_sql(table: str, target_bytes: int, partial_progress: bool = True) -> str:
    """Iceberg's compaction of ``catalog.namespace.table``: small files, and files with deletes.

    With ``partial_progress``, committed in parts, so that a long rewrite that
    loses a race with the drain keeps what it finished. Without it, one commit:
    on a table of many small files (320 files of a 16-bucket table, measured)
    that took 1.5 to 2.6 s and left a file per bucket, where the rewrite in
    parts took 9 to 12 s and left 54 to 130 files.
    """
    catalog, name = table.split(".", 1)
    partial = "true" if partial_progress else "false"
    return (
        f"CALL {catalog}.system.rewrite_data_files(table => '{name}', "
        f"options => map('min-input-files', '2', 'delete-file-threshold', '1', "
        f"'target-file-size-bytes', '{target_bytes}', 'partial-progress.enabled', '{partial}'))"
    )


def merge_dlq_sql(table: str, source: str) -> str:
    """Dead letters keyed by their Kafka coordinates, so a replay adds nothing."""
    return (
        f"MERGE INTO {table} t USING {source} s ON t.topic = s.topic "
        "AND t.kafka_partition = s.kafka_partition AND t.kafka_offset = s.kafka_offset "
        "WHEN NOT MATCHED THEN INSERT *"
    )


def row_columns_from_schema(schema_json: str) -> dict[str, ColumnType | None]:
    """Columns and types of the row in an envelope's schema block (or a flattened one's).

    A field whose type cannot be held without loss maps to None: it is kept
    out of automatic evolution, like a column the events carry undeclared.
    """
    try:
        schema = json.loads(schema_json)
    except (TypeError, ValueError):
        return {}
    if not isinstance(schema, dict):
        return {}
    row = row_schema_of(schema)
    fields = row.get("fields") if row is not None else None
    if not isinstance(fields, list):
        return {}
    out: dict[str, ColumnType | None] = {}
    for field in fields:
        if not isinstance(field, dict) or not isinstance(field.get("field"), str):
            continue
        try:
            out[field["field"]] = column_type(field)
        except UnsupportedType:
            out[field["field"]] = None
    return out


def row_fields_from_schema(schema_json: str) -> dict[str, str | None]:
    """Columns and Spark types of the row in an envelope schema block."""
    return {n: t.spark_type if t else None for n, t in row_columns_from_schema(schema_json).items()}


def merge_declared(
    declared: dict[str, str | None], more: Mapping[str, str | None]
) -> dict[str, str | None]:
    """Combine the column types of several schema blocks of one batch: the widest wins."""
    out = dict(declared)
    for name, kind in more.items():
        current = out.get(name)
        if current is None or (current, kind) in SAFE_WIDENING:
            out[name] = kind
        elif kind is not None and kind != current and (kind, current) not in SAFE_WIDENING:
            out[name] = kind  # a real conflict: plan_evolution reports it
    return out


def plan_evolution(
    table_columns: Mapping[str, str],
    seen_columns: Sequence[str],
    declared: Mapping[str, str | None],
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict[str, str]]:
    """Decide schema changes: (columns to add, columns to widen, incompatible -> reason).

    New columns get the declared type (string when undeclared); int->bigint and
    float->double widen in place; any other declared change is incompatible.
    """
    add: list[tuple[str, str]] = []
    widen: list[tuple[str, str]] = []
    incompatible: dict[str, str] = {}
    for name in sorted(set(seen_columns) | set(declared)):
        if name in RESERVED or name.startswith("__"):
            continue
        wanted = declared.get(name)
        current = table_columns.get(name)
        if current is None:
            if name not in seen_columns and wanted is None:
                continue
            try:
                check_identifier(name, "column")
            except ValueError:
                incompatible[name] = f"column name {name!r} is not a plain identifier"
                continue
            add.append((name, wanted or "string"))
        elif wanted and wanted != current:
            if (current, wanted) in SAFE_WIDENING:
                widen.append((name, wanted))
            elif (wanted, current) in SAFE_WIDENING:
                continue  # narrower values fit the wider column
            else:
                incompatible[name] = (
                    f"incompatible schema change: column {name} is {current} in the table, "
                    f"the event declares {wanted}"
                )
    return add, widen, incompatible


def offsets_in(summary: Mapping[str, str] | None) -> dict[int, int]:
    """The end offsets a pipeline commit's summary records ({} without one)."""
    if summary is None or SUMMARY_OFFSETS not in summary:
        return {}
    return {int(p): int(o) for p, o in json.loads(summary[SUMMARY_OFFSETS]).items()}


def unavailable_in(summary: Mapping[str, str] | None) -> frozenset[str]:
    """The columns a pipeline commit's summary lists as left unavailable (TOAST)."""
    try:
        names = json.loads((summary or {}).get(SUMMARY_UNAVAILABLE, "[]"))
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        log.warning("ignoring malformed %s in the pipeline's newest commit", SUMMARY_UNAVAILABLE)
        return frozenset()
    return frozenset(names)


_NAMESPACE_LOCK = threading.Lock()


class IcebergTables:
    """The three tables of one pipeline, through Spark SQL.

    ``model`` is what the pipeline knows of the source table before it looks
    at the live table (declared, or read from the events' schema blocks); once
    the table exists, :meth:`table_model` is the model: the table records its
    key (identifier fields), columns and codecs.
    """

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        model: TableModel | None = None,
        history: bool = False,
        buckets: int | None = None,
        bucket_column: str = "",
    ) -> None:
        self.spark = spark
        self.settings = settings
        # also keep every version of every row (pipelines.yaml: history: true)
        self.history = settings.qualified(settings.history_table) if history else None
        # what the pipeline knows of the table before it exists: how to create it
        self.given = model
        self._model: TableModel | None = None
        # bucket(buckets, bucket_column) partitioning (pipelines.yaml, else ICEBERG_BUCKETS)
        self.buckets = settings.iceberg_buckets if buckets is None else buckets
        self.bucket_column = bucket_column
        self.live = settings.qualified(settings.iceberg_table)
        self.tombstones = settings.qualified(settings.tombstone_table)
        self.dlq = settings.qualified(settings.iceberg_dlq_table)

    def ensure(self) -> None:
        namespaces = {
            t.split(".")[0] for t in (self.settings.iceberg_table, self.settings.iceberg_dlq_table)
        }
        # tables drained at once in one application (jobs.drain_tables) share namespaces:
        # the JDBC catalog's IF NOT EXISTS is a check, then an insert that a twin can beat
        with _NAMESPACE_LOCK:
            for namespace in sorted(namespaces):
                self.spark.sql(
                    f"CREATE NAMESPACE IF NOT EXISTS "
                    f"{self.settings.iceberg_catalog_name}.{namespace}"
                )
        mode = self.settings.iceberg_write_mode
        if not self.exists(self.live):
            if self.given is None:
                raise TableModelError(
                    f"{self.live} does not exist and nothing says what it looks like: "
                    f"declare its schema in {self.settings.pipelines_file}"
                )
            self.spark.sql(
                create_live_sql(self.live, self.given, self.buckets, mode, self.bucket_column)
            )
            if all(identifiable(c.spark_type) for c in self.given.key_columns):
                keys = ", ".join(f"`{k}`" for k in self.given.key)
                self.spark.sql(f"ALTER TABLE {self.live} SET IDENTIFIER FIELDS {keys}")
            else:  # a floating-point key column: the key is recorded in KEY_PROPERTY only
                log.info("%s: keyed on %s (no identifier fields)", self.live, self.given.key)
        self._model = self.table_model()
        self.spark.sql(
            create_tombstones_sql(
                self.tombstones, self.model, self.buckets, mode, self.bucket_column
            )
        )
        self._sync_tombstone_images()
        self.spark.sql(create_dlq_sql(self.dlq))
        self._add_replay_columns()
        if self.history is not None:
            self.spark.sql(
                create_history_sql(self.history, self.model, self.buckets, self.bucket_column)
            )
            self._sync_history_columns()
        self._check_sequence_order()
        for table in (self.live, self.tombstones):
            self._keep_write_mode(table, mode)
        for written in (self.live, self.tombstones, self.history):
            if written is not None:
                self._keep_partitioning(written)

    def _add_replay_columns(self) -> None:
        """A dead-letter table made before replays existed gains their columns (metadata only)."""
        have = {str(f.name()) for f in self.java_table(self.dlq).schema().columns()}
        types = dict(DLQ_COLUMNS)
        missing = [c for c in DLQ_REPLAY_COLUMNS if c not in have]
        if missing:
            columns = ", ".join(f"`{c}` {types[c]}" for c in missing)
            self.spark.sql(f"ALTER TABLE {self.dlq} ADD COLUMNS ({columns})")

    def _sync_history_columns(self) -> None:
        """The history table takes the live table's new and widened columns."""
        if self.history is None:
            return
        have = {
            str(f.name()): str(f.type()) for f in self.java_table(self.history).schema().columns()
        }
        self._follow_live(self.history, have, self.model.column_types)

    def _sync_tombstone_images(self) -> None:
        """The tombstone table's ``image`` takes the live table's columns as they are now
        (a table made before images existed gains the column): metadata only."""
        field = self.java_table(self.tombstones).schema().findField(IMAGE)
        if field is None:
            wanted = image_type(self.model.column_types, key=self.model.key)
            self.spark.sql(f"ALTER TABLE {self.tombstones} ADD COLUMN {IMAGE} {wanted}")
            return
        have = {str(f.name()): str(f.type()) for f in field.type().asStructType().fields()}
        data = [(n, t) for n, t in self.model.column_types if n not in self.model.key]
        self._follow_live(self.tombstones, have, data, f"{IMAGE}.")

    def _follow_live(
        self,
        table: str,
        have: Mapping[str, str],
        columns: Sequence[tuple[str, str]],
        prefix: str = "",
    ) -> None:
        """Columns of ``table`` (``have``: name to type, under ``prefix``) follow the
        live table's: those of ``columns`` it lacks are added, those the live table
        has widened are widened."""
        live = {str(f.name()): str(f.type()) for f in self.java_table().schema().columns()}
        for name, spark_type in columns:
            if name not in have:
                self.spark.sql(f"ALTER TABLE {table} ADD COLUMN {prefix}`{name}` {spark_type}")
            elif have[name] != live.get(name, have[name]):
                self.spark.sql(
                    f"ALTER TABLE {table} ALTER COLUMN {prefix}`{name}` TYPE {spark_type}"
                )

    def _keep_write_mode(self, table: str, mode: str) -> None:
        """A table made under another ICEBERG_WRITE_MODE is switched (a metadata-only commit)."""
        properties = self.java_table(table).properties()
        if all(str(properties.get(p)) == mode for p in WRITE_MODE_PROPERTIES):
            return
        wanted = dict.fromkeys(WRITE_MODE_PROPERTIES, mode)
        log.info("%s: write mode set to %s (ICEBERG_WRITE_MODE)", table, mode)
        self.spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ({_properties_sql(wanted)})")

    def _keep_partitioning(self, table: str) -> None:
        """A table partitioned otherwise than configured (ICEBERG_BUCKETS, or the entry's
        ``buckets`` / ``bucket_column``) is given the configured partitioning: a
        metadata-only change; files already written keep theirs until rewritten."""
        wanted = partition_fields(self.model, self.buckets, self.bucket_column)
        java = self.java_table(table)
        spec = java.spec()
        schema = java.schema()
        have = [
            f"{f.transform()}({schema.findColumnName(f.sourceId())})"
            for f in spec.fields()
            if str(f.transform()) != "void"
        ]
        if have == wanted:
            return
        log.warning(
            "%s: partitioning %s becomes %s (a new partition spec for the files written next)",
            table,
            have or "none",
            wanted or "none",
        )
        jvm = session.jvm(self.spark)
        update = java.updateSpec()
        for field in spec.fields():
            if str(field.transform()) != "void":
                update = update.removeField(field.name())
        if wanted:
            column = self.model.partition_column(self.buckets, self.bucket_column)
            term = jvm.org.apache.iceberg.expressions.Expressions.bucket(column, self.buckets)
            update = update.addField(f"{column}_bucket_{self.buckets}", term)
        update.commit()

    def _check_sequence_order(self) -> None:
        """Record CDC_SEQUENCE on the table once; refuse to mix two orders on one table."""
        wanted = self.settings.sequence_order
        recorded = self.java_table().properties().get(SEQUENCE_PROPERTY)
        if recorded is None:
            self.spark.sql(
                f"ALTER TABLE {self.live} SET TBLPROPERTIES ('{SEQUENCE_PROPERTY}'='{wanted}')"
            )
        elif str(recorded) != wanted:
            raise SequenceOrderMismatch(
                f"{self.live} orders changes by {recorded!r} but CDC_SEQUENCE is {wanted!r}; "
                "set CDC_SEQUENCE back, or rebuild the table (cdc_reset, scope 'full-rebuild')"
            )

    @classmethod
    def declared(
        cls, spark: SparkSession, settings: Settings, config: PipelinesConfig | None = None
    ) -> IcebergTables:
        """The tables of a pipeline as ``pipelines.yaml`` configures its topic: the declared
        schema, the history table and the partitioning of the topic's entry, if it has one."""
        from cdc_iceberg import pipelines

        config = config or pipelines.load(settings.pipelines_file)
        entry = config.for_topic(settings.kafka_topic)
        if entry is None:
            return cls(spark, settings)
        return cls(
            spark, settings, entry.declared, entry.history, entry.buckets, entry.bucket_column
        )

    @property
    def model(self) -> TableModel:
        """The live table's model (read from the table once it exists)."""
        if self._model is None:
            self._model = self.table_model()
        return self._model

    def exists(self, table: str) -> bool:
        """Whether the catalog has ``table`` (asked of Iceberg: the JDBC catalog keeps no views,
        which Spark's own ``tableExists`` would look for too)."""
        try:
            self.java_table(table)
        except Exception as error:
            if any(
                s in str(error)
                for s in ("NoSuchTable", "NoSuchNamespace", "TABLE_OR_VIEW_NOT_FOUND")
            ):
                return False
            raise
        return True

    def table_model(self) -> TableModel:
        """The model the live table records: columns, identifier fields, codecs.

        A table made before it recorded its key (no identifier fields) keeps the
        key of the model the pipeline was given.
        """
        table = self.java_table()
        columns = self.data_columns()
        order = [n for n, _ in columns]
        recorded_key = parse_key(table.properties().get(KEY_PROPERTY))
        key = [str(n) for n in table.schema().identifierFieldNames()] or recorded_key
        given_key = list(self.given.key) if self.given else []
        if recorded_key and set(key) == set(recorded_key):
            key = recorded_key  # the source's key order: the first is the bucket column
        elif not key or set(key) == set(given_key):
            key = given_key
        else:
            key.sort(key=order.index)
        if not key:
            raise TableModelError(
                f"{self.live} records no key (identifier fields) and none is declared: "
                f"declare the table's schema in {self.settings.pipelines_file}"
            )
        recorded = parse_codecs(table.properties().get(CODECS_PROPERTY))
        given = {c.name: c for c in self.given.columns} if self.given else {}
        codecs = {}
        for name, spark_type in columns:
            if name in recorded:
                codecs[name] = recorded[name]
            elif name in given and given[name].spark_type == spark_type:
                codecs[name] = given[name].codec
        source = self.given.source if self.given else ""
        return TableModel.from_table(columns, key, codecs, source)

    def columns(self, table: str | None = None) -> dict[str, str]:
        """Column name -> Spark SQL type name of a table, in order."""
        schema = self.spark.table(table or self.live).schema
        return {f.name: f.dataType.simpleString() for f in schema.fields}

    def data_columns(self) -> list[tuple[str, str]]:
        return [(n, t) for n, t in self.columns().items() if n not in RESERVED]

    def apply_evolution(
        self,
        add: list[tuple[str, str]],
        widen: list[tuple[str, str]],
        codecs: Mapping[str, str] | None = None,
    ) -> None:
        """Add and widen columns; record the codecs of added columns their types do not imply."""
        for name, spark_type in add:
            log.warning("schema evolution: adding column %s %s to %s", name, spark_type, self.live)
            self.spark.sql(f"ALTER TABLE {self.live} ADD COLUMN `{name}` {spark_type}")
        for name, spark_type in widen:
            log.warning("schema evolution: widening %s to %s in %s", name, spark_type, self.live)
            self.spark.sql(f"ALTER TABLE {self.live} ALTER COLUMN `{name}` TYPE {spark_type}")
        recorded = parse_codecs(self.java_table().properties().get(CODECS_PROPERTY))
        for name, spark_type in add:
            codec = (codecs or {}).get(name, default_codec(spark_type))
            if codec != default_codec(spark_type):
                recorded[name] = codec
        for name, _ in widen:
            recorded.pop(name, None)  # a widened column takes its new type's codec
        text = json.dumps(recorded, sort_keys=True)
        self.spark.sql(
            f"ALTER TABLE {self.live} SET TBLPROPERTIES "
            f"({_properties_sql({CODECS_PROPERTY: text})})"
        )
        self.refresh_model()
        self._sync_history_columns()
        self._sync_tombstone_images()

    def refresh_model(self) -> TableModel:
        """Read the live table's model again (after evolution, or at the start of a batch)."""
        self._model = self.table_model()
        return self._model

    def java_table(self, table: str | None = None) -> Any:
        """The Iceberg ``Table`` behind a Spark table name, refreshed (cheap metadata access)."""
        jvm = session.jvm(self.spark)
        loaded = jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(
            self.spark._jsparkSession,  # type: ignore[attr-defined]
            table or self.live,
        )
        loaded.refresh()
        return loaded

    def current_snapshot_id(self, table: str | None = None) -> int | None:
        snapshot = self.java_table(table).currentSnapshot()
        return int(snapshot.snapshotId()) if snapshot is not None else None

    def record_count(self, table: str | None = None) -> int:
        """Records in data files of the current snapshot (deletes not subtracted)."""
        snapshot = self.java_table(table).currentSnapshot()
        if snapshot is None:
            return 0
        return int(snapshot.summary().get("total-records") or 0)

    def data_file_count(self, table: str | None = None) -> int:
        """Data files of the current snapshot."""
        snapshot = self.java_table(table).currentSnapshot()
        if snapshot is None:
            return 0
        return int(snapshot.summary().get("total-data-files") or 0)

    def committed_offsets(self) -> dict[int, int]:
        """The end offsets the live table records for this pipeline (its newest commit)."""
        return offsets_in(self.latest_pipeline_summary())

    def latest_pipeline_summary(self) -> dict[str, str] | None:
        pipeline = self.settings.pipeline_id.replace("'", "''")
        topic = self.settings.kafka_topic.replace("'", "''")
        rows = self.spark.sql(
            f"SELECT s.summary FROM {self.live}.snapshots s JOIN {self.live}.history h "
            "ON s.snapshot_id = h.snapshot_id "
            f"WHERE h.is_current_ancestor AND s.summary['{SUMMARY_PIPELINE}'] = '{pipeline}' "
            f"AND s.summary['{SUMMARY_TOPIC}'] = '{topic}' "
            "ORDER BY s.committed_at DESC LIMIT 1"
        ).collect()
        return dict(rows[0][0]) if rows else None

    def snapshot_summary(self, snapshot_id: int, table: str | None = None) -> dict[str, str]:
        snapshot = self.java_table(table).snapshot(int(snapshot_id))
        if snapshot is None:
            return {}
        summary = snapshot.summary()
        return {str(k): str(summary.get(k)) for k in summary.keySet()}

    def empty_commit(self, properties: Mapping[str, str]) -> None:
        """A snapshot that changes no data but records progress in its summary."""
        _empty_append(self.java_table(), properties).commit()

    def commit_progress_after(self, parent_id: int, properties: Mapping[str, str]) -> bool:
        """An empty commit of ``properties`` that lands only directly on ``parent_id``.

        A plain append is re-applied on top of whatever another writer committed
        meanwhile, so a progress record copied from an older snapshot could land
        after a newer batch and move the table's position back. Here the append
        goes to a private branch at ``parent_id``, and ``main`` is fast-forwarded
        to it, which fails when ``main`` has moved on. Returns whether it landed.
        """
        table = self.java_table()
        branch = f"cdc-progress-{uuid.uuid4().hex[:12]}"
        table.manageSnapshots().createBranch(branch, int(parent_id)).commit()
        try:
            _empty_append(table, properties).toBranch(branch).commit()
            try:
                table.manageSnapshots().fastForwardBranch("main", branch).commit()
            except Exception as error:
                if "Cannot fast-forward" not in str(error):
                    raise
                return False
            return True
        finally:
            table.manageSnapshots().removeBranch(branch).commit()

    def set_snapshot_properties(self, properties: Mapping[str, str]) -> None:
        for key, value in properties.items():
            self.spark.conf.set(SNAPSHOT_PROPERTY + key, value)

    def clear_snapshot_properties(self, properties: Mapping[str, str]) -> None:
        for key in properties:
            self.spark.conf.unset(SNAPSHOT_PROPERTY + key)

    def run(self, statement: str) -> DataFrame:
        return self.spark.sql(statement)

    def run_retrying(self, statement: str, retries: int = CONFLICT_RETRIES) -> None:
        """Run a MERGE again when its commit conflicts with another writer's commit."""
        sql_retrying(self.spark, statement, retries)


def _empty_append(table: Any, properties: Mapping[str, str]) -> Any:
    """An Iceberg append of no files carrying ``properties`` in its snapshot summary."""
    append = table.newAppend()
    for key, value in properties.items():
        append = append.set(key, value)
    return append


def sql_retrying(spark: SparkSession, statement: str, retries: int = CONFLICT_RETRIES) -> list[Any]:
    """Run a statement, planning it again when its commit loses a race with another writer."""
    for attempt in range(retries + 1):
        try:
            return spark.sql(statement).collect()
        except Exception as error:
            text = str(error)
            if attempt == retries or not any(c in text for c in CONFLICTS):
                raise
            wait = min(0.5 * 2**attempt, 8.0)
            log.warning(
                "commit conflict (%s); planning the statement again in %.1f s (%d of %d)",
                text.splitlines()[0][:300],
                wait,
                attempt + 1,
                retries,
            )
            time.sleep(wait)
    raise AssertionError("unreachable")
