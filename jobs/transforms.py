"""Pure DataFrame transforms of the CDC job: parse, validate, collapse.

Each function takes and returns DataFrames and does no I/O, so each is tested
on a local SparkSession with hand-made input. No Python UDFs: everything runs
in the JVM, so executors never need this package.

The raw input has Kafka's columns ``key``, ``value`` (binary), ``topic``,
``partition``, ``offset`` and ``timestamp``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import MapType, StringType

from cdc_iceberg.generator import TOAST_PLACEHOLDER
from cdc_iceberg.schema import SEQUENCE, SOURCE_KEY

JSON_MAP = MapType(StringType(), StringType())
VALID_OPS = ("c", "u", "r", "d")
FLAT_FIELDS = ("__op", "__deleted", "__source_ts_ms", "__lsn", "__ts_ms", "__table", "__db")


def _json_map(text: Column) -> Column:
    """Parse a JSON object into map<string,string>; nested values keep their JSON text."""
    return F.from_json(text, JSON_MAP, {"mode": "PERMISSIVE"})


def _unwrap(root: Column) -> Column:
    """The ``payload`` of a ``{"schema":…,"payload":…}`` wrapper, else the object itself."""
    wrapped = F.map_contains_key(root, "payload") & F.map_contains_key(root, "schema")
    return F.when(wrapped, _json_map(root["payload"])).otherwise(root)


def parse_events(raw: DataFrame, event_format: str = "envelope") -> DataFrame:
    """Decode Debezium records into one row per change, keeping the raw bytes.

    Output columns: Kafka coordinates and raw bytes, ``op``, ``ts_ms_raw``,
    ``lsn_raw``, ``key_raw`` (the row key as text), ``row`` (the new row, or the
    old row of a delete, as map<string,string>), ``schema_json`` (the envelope's
    schema block when wrapped), and ``problem``: null, or why the record cannot
    be applied. Kafka tombstones (null value) are flagged ``kafka_tombstone``:
    they carry no new state after the delete that precedes them.
    """
    value_text = F.col("value").cast("string")
    root = _json_map(value_text)
    body = _unwrap(root)
    key_root = _unwrap(_json_map(F.col("key").cast("string")))
    wrapped_schema = F.when(
        F.map_contains_key(root, "payload") & F.map_contains_key(root, "schema"), root["schema"]
    )

    if event_format == "flattened":
        deleted = F.lower(F.coalesce(body["__deleted"], F.lit("false"))) == "true"
        op = F.when(deleted, F.lit("d")).otherwise(body["__op"])
        ts_raw = body["__source_ts_ms"]
        lsn_raw = body["__lsn"]
        row = F.map_filter(body, lambda k, _v: ~k.startswith("__"))
        source_ok = F.lit(True)
    else:
        op = body["op"]
        source = _json_map(body["source"])
        ts_raw = source["ts_ms"]
        lsn_raw = source["lsn"]
        after = _json_map(body["after"])
        before = _json_map(body["before"])
        row = F.when(op == "d", before).otherwise(after)
        source_ok = source.isNotNull()

    parsed = raw.select(
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        "timestamp",
        op.alias("op"),
        ts_raw.alias("ts_ms_raw"),
        lsn_raw.alias("lsn_raw"),
        row.alias("row"),
        F.coalesce(row[SOURCE_KEY], key_root[SOURCE_KEY]).alias("key_raw"),
        wrapped_schema.alias("schema_json"),
        root.isNull().alias("_bad_json"),
        body.isNull().alias("_bad_body"),
        source_ok.alias("_source_ok"),
        F.col("value").isNull().alias("kafka_tombstone"),
    )
    ts_ms = F.col("ts_ms_raw").try_cast("bigint")
    lsn = F.col("lsn_raw").try_cast("bigint")
    problem = (
        F.when(F.col("kafka_tombstone"), F.lit(None).cast("string"))
        .when(F.col("_bad_json"), F.lit("value is not a JSON object"))
        .when(F.col("_bad_body"), F.lit("payload is not a JSON object"))
        .when(F.col("op").isNull(), F.lit("no op field"))
        .when(F.col("op") == "t", F.lit("truncate event (op=t)"))
        .when(
            ~F.col("op").isin(*VALID_OPS), F.concat(F.lit("unknown op '"), F.col("op"), F.lit("'"))
        )
        .when(~F.col("_source_ok"), F.lit("source block missing or not an object"))
        .when(F.col("ts_ms_raw").isNull(), F.lit("ordering field source.ts_ms is null"))
        .when(ts_ms.isNull(), F.lit("ordering field source.ts_ms is not a number"))
        .when(F.col("lsn_raw").isNull(), F.lit("ordering field source.lsn is null"))
        .when(lsn.isNull(), F.lit("ordering field source.lsn is not a number"))
        .when(
            F.col("row").isNull() & (F.col("op") != "d"),
            F.concat(F.lit("no row image (after) for op '"), F.col("op"), F.lit("'")),
        )
        .when(F.col("key_raw").isNull(), F.lit(f"no {SOURCE_KEY} in the event or the Kafka key"))
    )
    return parsed.select(
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        "timestamp",
        "op",
        ts_ms.alias("ts_ms"),
        lsn.alias("lsn"),
        "row",
        F.col("key_raw").alias(SOURCE_KEY),
        "schema_json",
        "kafka_tombstone",
        problem.alias("problem"),
    )


def _typed(raw: Column, spark_type: str) -> Column:
    if spark_type == "string":
        return raw
    if spark_type == "timestamp":
        return raw.try_cast("timestamp")
    if spark_type == "boolean":
        return F.when(F.lower(raw).isin("true", "false"), F.lower(raw) == "true")
    return raw.try_cast(spark_type)


def type_columns(
    parsed: DataFrame, columns: Sequence[tuple[str, str]], keep: Sequence[str] = ()
) -> DataFrame:
    """Project ``row`` onto the table's columns with their types.

    A value that does not fit its column becomes a ``problem``. A value equal to
    Debezium's TOAST placeholder is not a value: its column name goes into
    ``unavailable`` and the stored value is kept when the change is applied.
    """
    selected: list[Column] = []
    unavailable: list[Column] = []
    misfits: list[Column] = []
    for name, spark_type in columns:
        raw = F.col("row")[name]
        placeholder = raw == F.lit(TOAST_PLACEHOLDER)
        typed = _typed(raw, spark_type)
        if name == SOURCE_KEY:
            selected.append(F.col(SOURCE_KEY))
            continue
        selected.append(F.when(placeholder, F.lit(None)).otherwise(typed).alias(name))
        unavailable.append(F.when(placeholder, F.lit(name)))
        misfits.append(
            F.when(
                raw.isNotNull() & ~placeholder & typed.isNull(),
                F.concat(
                    F.lit(f"column {name}: value '"),
                    F.substring(raw, 1, 80),
                    F.lit(f"' does not fit type {spark_type}"),
                ),
            )
        )
    problem = F.coalesce(F.col("problem"), *misfits) if misfits else F.col("problem")
    return parsed.select(
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        "timestamp",
        F.col("op").alias("cdc_op"),
        "ts_ms",
        "lsn",
        F.col("partition").cast("int").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        *selected,
        F.filter(F.array(*unavailable), lambda c: c.isNotNull()).alias("unavailable")
        if unavailable
        else F.array().cast("array<string>").alias("unavailable"),
        problem.alias("problem"),
        *keep,
    )


def sequence(prefix: str = "", order: Sequence[str] = SEQUENCE) -> Column:
    """The ordering tuple as one comparable struct, its fields in comparison order."""
    return F.struct(*[F.col(f"{prefix}{c}").alias(c) for c in order])


def collapse_newest(
    events: DataFrame, columns: Sequence[str], order: Sequence[str] = SEQUENCE
) -> DataFrame:
    """Keep one row per key: the newest change by the whole sequence tuple.

    A column the newest change left unavailable (TOAST) takes the newest
    available value from earlier changes of the same key in the batch; if none
    has it, it stays in ``unavailable`` and the MERGE keeps the stored value.
    """
    seq = sequence(order=order)
    aggregates = [F.max_by(F.struct(*[F.col(c) for c in (*SEQUENCE, "cdc_op")]), seq).alias("_n")]
    for name in columns:
        if name == SOURCE_KEY:
            continue
        # a delete's row image carries no values, so it never supplies one
        available = ~F.array_contains(F.col("unavailable"), name) & (F.col("cdc_op") != "d")
        newest_available = F.max_by(
            F.struct(seq.alias("s"), F.col(name).alias("v")), F.when(available, seq)
        )
        aggregates.append(newest_available.alias(f"_a_{name}"))
    grouped = events.groupBy(SOURCE_KEY).agg(*aggregates, F.count(F.lit(1)).alias("_events"))
    out: list[Column] = [F.col(SOURCE_KEY)]
    out += [F.col(f"_n.{c}").alias(c) for c in (*SEQUENCE, "cdc_op")]
    still_unavailable: list[Column] = []
    for name in columns:
        if name == SOURCE_KEY:
            continue
        out.append(F.col(f"_a_{name}.v").alias(name))
        still_unavailable.append(F.when(F.col(f"_a_{name}").isNull(), F.lit(name)))
    unavailable = (
        F.filter(F.array(*still_unavailable), lambda c: c.isNotNull())
        if still_unavailable
        else F.array().cast("array<string>")
    )
    out.append(
        F.when(F.col("cdc_op_n") == "d", F.array().cast("array<string>"))
        .otherwise(unavailable)
        .alias("unavailable")
    )
    out.append(F.col("_events"))
    return grouped.withColumn("cdc_op_n", F.col("_n.cdc_op")).select(*out)
