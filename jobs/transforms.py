"""Pure DataFrame transforms of the CDC job: parse, validate, collapse.

Each function takes and returns DataFrames and does no I/O, so each is tested
on a local SparkSession with hand-made input. No Python UDFs: everything runs
in the JVM, so executors never need this package.

The raw input has Kafka's columns ``key``, ``value`` (binary), ``topic``,
``partition``, ``offset`` and ``timestamp``. The parse renames them, and every
column the job adds for its own work has a name with a leading ``_``: a source
column may be called ``key``, ``offset``, ``op`` or ``problem`` without meeting
one of them (a source column with a leading ``_`` is refused by the table model).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import Any, TypeVar

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cdc_iceberg.debezium_types import TOAST_PLACEHOLDER, ColumnType, placeholder_texts
from cdc_iceberg.schema import IMAGE, SEQUENCE, VALID_OPS
from cdc_iceberg.table_model import default_codec
from jobs.debezium_decode import decode
from jobs.json_text import (
    _candidate,
    _has_lone_surrogate,
    _in_range,
    _json_object,
    _json_read,
    _typed,
)

_Built = TypeVar("_Built")

# Kafka's columns of a record, as the source gives them, and as the parse names them
KAFKA_RECORD = ("key", "value", "topic", "partition", "offset", "timestamp")
# ... and whether the record is the delete of a primary-key change (its headers say so)
KAFKA_COLUMNS = (*(f"_kafka_{name}" for name in KAFKA_RECORD), "_kafka_moved")
# Debezium's headers of a primary-key change: the create names the old key, the delete the new
OLD_KEY_HEADER = "__debezium.oldkey"
NEW_KEY_HEADER = "__debezium.newkey"
# Kafka's timestampType of a record stamped by the broker (0: by its producer)
LOG_APPEND_TIME = 1
FLAT_FIELDS = ("__op", "__deleted", "__source_ts_ms", "__lsn", "__ts_ms", "__table", "__db")


def _is_wrapped(root: Column) -> Column:
    """A ``{"schema":…,"payload":…}`` wrapper: the change is its ``payload``."""
    return F.map_contains_key(root, "payload") & F.map_contains_key(root, "schema")


def _parse_objects(texts: dict[str, Column]) -> list[list[Column | str]]:
    """Projections adding one map column per ``{name: JSON text}``, each read once.

    Reading and checking are separate projections so that Spark evaluates each
    from_json once per row instead of inlining it into every use.
    """
    return [
        ["*", *[text.alias(f"_{n}_text") for n, text in texts.items()]],
        ["*", *[_json_read(F.col(f"_{n}_text")).alias(f"_{n}_read") for n in texts]],
        ["*", *[_json_object(F.col(f"_{n}_read"), F.col(f"_{n}_text")).alias(n) for n in texts]],
    ]


def reused(build: Callable[..., _Built], *args: Hashable) -> _Built:
    """``build(*args)``, built once per Spark driver and then reused by every batch.

    Building a batch's expressions is thousands of calls into the JVM, a second
    or two per batch. The Columns name their inputs and hold no data, so the
    same ones serve every batch; being JVM objects, they are kept on the
    SparkContext that made them and go with it.
    """
    from pyspark import SparkContext

    context = SparkContext._active_spark_context
    if context is None:
        return build(*args)
    store: dict[Any, Any] = context.__dict__.setdefault("_cdc_columns", {})
    key = (build.__module__, build.__qualname__, args)
    if key not in store:
        store[key] = build(*args)
    return store[key]


def _projected(frame: DataFrame, projections: Sequence[Sequence[Column | str]]) -> DataFrame:
    for projection in projections:
        frame = frame.select(*projection)
    return frame


def parse_events(raw: DataFrame, event_format: str, key: Sequence[str]) -> DataFrame:
    """Decode Debezium records into one row per change, keeping the raw bytes.

    Output columns: Kafka's (``_kafka_key``, ``_kafka_value``, ``_kafka_topic``,
    ``_kafka_partition``, ``_kafka_offset``, ``_kafka_timestamp``), ``_kafka_moved``
    (the record carries the ``__debezium.newkey`` header of a primary-key change's
    delete; false when ``raw`` has no ``headers``), ``_op``,
    ``ts_ms``, ``lsn``, one column per ``key`` column (its JSON text, from the
    row image or else the Kafka key), ``_row`` (the new row, or the old row of a
    delete, as map<string,string>), ``_schema_json`` (the envelope's schema block
    when wrapped), and ``_problem``: null, or why the record cannot be applied.
    Kafka tombstones (null value) are flagged ``_tombstone``: they carry
    no new state after the delete that precedes them.

    A value must be UTF-8 text holding exactly one strict JSON object; the
    envelope, its payload, source block and row image must be JSON objects with
    unique keys. A Kafka key that is not such an object is not used.
    """
    headers = "headers" in raw.columns
    return _projected(raw, reused(_parse_projections, event_format, tuple(key), headers))


def _parse_projections(
    event_format: str, key: tuple[str, ...], headers: bool
) -> list[list[Column | str]]:
    """The projections of :func:`parse_events`, one ``select`` each."""
    value_text = F.col("_kafka_value").cast("string")
    key_text = F.col("_kafka_key").cast("string")
    moved = (
        F.coalesce(F.exists(F.col("headers"), lambda h: h["key"] == NEW_KEY_HEADER), F.lit(False))
        if headers
        else F.lit(False)
    )
    projections: list[list[Column | str]] = [
        [
            *[F.col(name).alias(f"_kafka_{name}") for name in KAFKA_RECORD],
            moved.alias("_kafka_moved"),
        ]
    ]
    projections += _parse_objects(
        {"_root": value_text, "_key_root": F.when(F.is_valid_utf8(key_text), key_text)}
    )
    root, key_root = F.col("_root"), F.col("_key_root")
    projections += _parse_objects(
        {
            "_payload": F.when(_is_wrapped(root), root["payload"]),
            "_key_payload": F.when(_is_wrapped(key_root), key_root["payload"]),
        }
    )
    projections.append(
        [
            *KAFKA_COLUMNS,
            value_text.alias("_value_text"),
            F.when(_is_wrapped(root), F.col("_payload")).otherwise(root).alias("_body"),
            F.when(_is_wrapped(key_root), F.col("_key_payload")).otherwise(key_root).alias("_key"),
            F.when(_is_wrapped(root), root["schema"]).alias("_schema_json"),
            root.isNull().alias("_bad_json"),
        ]
    )
    body = F.col("_body")

    if event_format == "flattened":
        deleted = F.lower(F.coalesce(body["__deleted"], F.lit("false"))) == "true"
        op = F.when(deleted, F.lit("d")).otherwise(body["__op"])
        ts_raw = body["__source_ts_ms"]
        lsn_raw = body["__lsn"]
        snapshot_flag = body["__source_snapshot"]
        row = F.map_filter(body, lambda k, _v: ~k.startswith("__"))
        source_ok = F.lit(True)
    else:
        op = body["op"]
        projections += _parse_objects(
            {
                "_source": body["source"],
                "_image": F.when(op == "d", body["before"]).otherwise(body["after"]),
            }
        )
        ts_raw = F.col("_source")["ts_ms"]
        lsn_raw = F.col("_source")["lsn"]
        snapshot_flag = F.col("_source")["snapshot"]
        row = F.col("_image")
        source_ok = F.col("_source").isNotNull()

    projections.append(
        [
            *KAFKA_COLUMNS,
            op.alias("_op"),
            ts_raw.alias("_ts_ms_raw"),
            lsn_raw.alias("_lsn_raw"),
            snapshot_flag.alias("_snapshot_flag"),
            row.alias("_row"),
            *[
                F.coalesce(row[k], F.col("_key")[k]).alias(f"_key_raw{i}")
                for i, k in enumerate(key)
            ],
            "_schema_json",
            (~F.is_valid_utf8(F.col("_value_text"))).alias("_bad_utf8"),
            _has_lone_surrogate(F.col("_value_text")).alias("_bad_unicode"),
            "_bad_json",
            body.isNull().alias("_bad_body"),
            source_ok.alias("_source_ok"),
            F.col("_kafka_value").isNull().alias("_tombstone"),
        ]
    )
    # typed once per row in a projection of their own: the checks below read them often
    projections.append(
        [
            "*",
            _typed(F.col("_ts_ms_raw"), "bigint").alias("_ts_ms"),
            _typed(F.col("_lsn_raw"), "bigint").alias("_lsn"),
        ]
    )
    ts_ms, lsn = F.col("_ts_ms"), F.col("_lsn")
    problem = (
        F.when(F.col("_tombstone"), F.lit(None).cast("string"))
        .when(F.col("_bad_utf8"), F.lit("value is not valid UTF-8"))
        .when(
            F.col("_bad_unicode"),
            F.lit("value holds an unpaired surrogate escape (\\uD800-\\uDFFF): not Unicode text"),
        )
        .when(
            F.col("_bad_json"),
            F.lit("value is not a JSON object (one strict JSON object, unique keys)"),
        )
        .when(F.col("_bad_body"), F.lit("payload is not a JSON object (or repeats a key)"))
        .when(F.col("_op").isNull(), F.lit("no op field"))
        .when(
            ~F.col("_op").isin(*VALID_OPS, "t"),
            F.concat(F.lit("unknown op '"), F.col("_op"), F.lit("'")),
        )
        .when(
            ~F.col("_source_ok"), F.lit("source block missing or not an object (or repeats a key)")
        )
        .when(F.col("_ts_ms_raw").isNull(), F.lit("ordering field source.ts_ms is null"))
        .when(
            ts_ms.isNull(), F.lit("ordering field source.ts_ms is not a number (a 64-bit integer)")
        )
        .when(F.col("_lsn_raw").isNull(), F.lit("ordering field source.lsn is null"))
        .when(lsn.isNull(), F.lit("ordering field source.lsn is not a number (a 64-bit integer)"))
        # after the ordering fields: a truncate the 'clear' policy applies needs its sequence
        .when(F.col("_op") == "t", F.lit("truncate event (op=t)"))
        .when(
            F.col("_row").isNull() & (F.col("_op") != "d"),
            F.concat(
                F.lit("no row image (after) for op '"),
                F.col("_op"),
                F.lit("' (or it repeats a key)"),
            ),
        )
    )
    for i, name in enumerate(key):
        problem = problem.when(
            F.col(f"_key_raw{i}").isNull(), F.lit(f"no {name} in the event or the Kafka key")
        )
    projections.append(
        [
            *KAFKA_COLUMNS,
            "_op",
            ts_ms.alias("ts_ms"),
            snapshot_read_lsn(F.col("_op"), F.col("_snapshot_flag"), lsn).alias("lsn"),
            "_row",
            *[F.col(f"_key_raw{i}").alias(k) for i, k in enumerate(key)],
            "_schema_json",
            "_tombstone",
            problem.alias("_problem"),
        ]
    )
    return projections


def snapshot_read_lsn(op: Column, snapshot_flag: Column, lsn: Column) -> Column:
    """The LSN a change is ordered by: a snapshot read's is one before the one it carries.

    Debezium stamps every read of a blocking snapshot with the LSN of the
    replication slot's consistent point, and the snapshot shows the rows as
    they were *before* that point. The first change streamed after the slot
    exists carries that same LSN (and an earlier ``ts_ms`` than the read), so
    at equal LSN the change must win: the read is ordered at LSN - 1. Reads of
    an incremental snapshot (``snapshot = incremental``) already reflect every
    change streamed before them and keep their LSN.
    """
    blocking_read = (op == "r") & ~F.coalesce(snapshot_flag == "incremental", F.lit(False))
    return F.when(blocking_read & (lsn > 0), lsn - 1).otherwise(lsn)


def type_columns(
    parsed: DataFrame,
    columns: Sequence[tuple[str, str] | tuple[str, str, str]],
    key: Sequence[str],
    keep: Sequence[str] = (),
) -> DataFrame:
    """Project ``_row`` (and the key columns of :func:`parse_events`) onto the table's columns.

    ``columns`` are ``(name, Spark type)`` or ``(name, Spark type, codec)``: the
    codec says how the event's text decodes (:mod:`jobs.debezium_decode`), by
    default the one the type implies. Key columns are typed like the others; a
    key value that does not fit its column is a ``_problem`` too.

    A value that does not fit its column becomes a ``_problem``. A value equal to
    Debezium's TOAST placeholder is not a value: its column name goes into
    ``_unavailable`` and the stored value is kept when the change is applied.

    Each step is a projection of its own (the row's texts, their casts, the
    range checks, the result), so Spark looks up, matches and casts each value
    once per row: an expression read several times by the next projection is
    not inlined into each read.
    """
    full = tuple((c[0], c[1], c[2] if len(c) > 2 else default_codec(c[1])) for c in columns)
    return _projected(parsed, reused(_type_projections, full, tuple(key), tuple(keep)))


# the codecs of the plain JSON types: typed by a pattern check and a cast, then a range check
_PLAIN_CODECS = {"string", "int", "bigint", "float", "double", "boolean", "zoned_timestamp"}


# ... of which these are typed by the parser's own two steps, the rest by their codec
_CAST_CODECS = {"string", "int", "bigint", "boolean", "zoned_timestamp"}


def _first_step(raw: Column, spark_type: str, codec: str) -> Column:
    if codec in _CAST_CODECS and codec == default_codec(spark_type):
        return _candidate(raw, spark_type)
    return decode(raw, ColumnType(spark_type, codec))


def _second_step(candidate: Column, spark_type: str, codec: str) -> Column:
    if codec in _CAST_CODECS and codec == default_codec(spark_type):
        return _in_range(candidate, spark_type)
    return candidate


def _unavailable_text(raw: Column, codec: str) -> Column:
    """``raw`` is the TOAST placeholder in the form Debezium gives it for ``codec``.

    A plain JSON type's column takes the placeholder's text as it always has.
    """
    if codec in _PLAIN_CODECS:
        return raw == F.lit(TOAST_PLACEHOLDER)
    texts = placeholder_texts(codec)
    return raw.isin(*texts) if texts else F.lit(False)


def _type_projections(
    columns: tuple[tuple[str, str, str], ...], key: tuple[str, ...], keep: tuple[str, ...]
) -> list[list[Column | str]]:
    """The projections of :func:`type_columns`, one ``select`` each."""
    every = [(i, (name, kind)) for i, (name, kind, _) in enumerate(columns)]
    codecs = [codec for _, _, codec in columns]

    def text(name: str) -> Column:
        # the key's text is a column of the parse (the row image's, else the Kafka key's)
        return F.col(name) if name in key else F.col("_row")[name]

    projections: list[list[Column | str]] = [
        ["*", F.struct(*[text(name).alias(f"c{i}") for i, (name, _) in every]).alias("_raw")],
        [
            "*",
            *[
                _first_step(F.col(f"_raw.c{i}"), kind, codecs[i]).alias(f"_cand{i}")
                for i, (_, kind) in every
            ],
        ],
        [
            "*",
            *[
                _second_step(F.col(f"_cand{i}"), kind, codecs[i]).alias(f"_typed{i}")
                for i, (_, kind) in every
            ],
        ],
    ]
    selected: list[Column] = []
    unavailable: list[Column] = []
    misfits: list[Column] = []
    for i, (name, spark_type) in every:
        raw = F.col(f"_raw.c{i}")
        typed = F.col(f"_typed{i}")
        if name in key:  # never TOASTed: a key is in every change's image
            placeholder = F.lit(False)
            selected.append(typed.alias(name))
        else:
            placeholder = _unavailable_text(raw, codecs[i])
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
    unavailable_list = (
        F.filter(F.array(*unavailable), lambda c: c.isNotNull())
        if unavailable
        else F.array().cast("array<string>")
    )
    projections.append(
        [
            *_kafka_and_sequence(),
            *selected,
            unavailable_list.alias("_unavailable"),
            F.coalesce(F.col("_problem"), *misfits).alias("_problem"),
            *keep,
        ]
    )
    return projections


def _kafka_and_sequence() -> list[Column | str]:
    """The leading columns of :func:`type_columns`: Kafka's, the op and the sequence."""
    return [
        *KAFKA_COLUMNS,
        F.col("_op").alias("cdc_op"),
        "ts_ms",
        "lsn",
        F.col("_kafka_partition").cast("int").alias("kafka_partition"),
        F.col("_kafka_offset").alias("kafka_offset"),
    ]


def sequence(prefix: str = "", order: Sequence[str] = SEQUENCE) -> Column:
    """The ordering tuple as one comparable struct, its fields in comparison order."""
    return F.struct(*[F.col(f"{prefix}{c}").alias(c) for c in order])


def collapse_newest(
    events: DataFrame,
    columns: Sequence[str],
    order: Sequence[str] = SEQUENCE,
    *,
    key: Sequence[str],
) -> DataFrame:
    """Keep one row per key: the newest change by the whole sequence tuple.

    A column the newest change left unavailable (TOAST) takes the newest
    available value from earlier changes of the same key in the batch; if none
    has it, it stays in ``_unavailable`` and the MERGE keeps the stored value.
    """
    grouped = events.groupBy(*key).agg(*newest_aggregates(columns, order, key=key))
    return finish_newest(grouped, columns, key=key)


def _per_column(
    columns: Sequence[str], toasted: Collection[str] | None, key: Sequence[str]
) -> list[str]:
    """The data columns whose newest available value is looked for change by change."""
    data = [c for c in columns if c not in key]
    return data if toasted is None else [c for c in data if c in toasted]


def newest_aggregates(
    columns: Sequence[str],
    order: Sequence[str] = SEQUENCE,
    toasted: Collection[str] | None = None,
    *,
    key: Sequence[str],
) -> list[Column]:
    """The aggregates of :func:`collapse_newest` over some changes of one key.

    ``_n`` is the newest change: its sequence and op, and the values of the
    columns not in ``toasted``. ``_a_<column>`` is the newest available value
    of each column in ``toasted`` (all of them when None) with its sequence,
    ``_events`` the count. A column no change of the key left unavailable
    (TOAST) has the newest change's value, so only the columns some change
    did leave unavailable need an aggregate of their own. Computed over parts
    of a key's changes, they combine with :func:`combine_newest` (given the
    same ``toasted``).
    """
    seq = sequence(order=order)
    per_column = _per_column(columns, toasted, key)
    whole = [c for c in _per_column(columns, None, key) if c not in per_column]
    newest = F.struct(*[F.col(c) for c in (*SEQUENCE, "cdc_op", *whole)])
    aggregates = [F.max_by(newest, seq).alias("_n")]
    for name in per_column:
        # a delete's row image carries no values, so it never supplies one
        available = ~F.array_contains(F.col("_unavailable"), name) & (F.col("cdc_op") != "d")
        newest_available = F.max_by(
            F.struct(seq.alias("s"), F.col(name).alias("v")), F.when(available, seq)
        )
        aggregates.append(newest_available.alias(f"_a_{name}"))
    aggregates.append(F.count(F.lit(1)).alias("_events"))
    return aggregates


def combine_newest(
    parts: DataFrame,
    columns: Sequence[str],
    order: Sequence[str] = SEQUENCE,
    toasted: Collection[str] | None = None,
    *,
    key: Sequence[str],
) -> DataFrame:
    """One row per key from rows of :func:`newest_aggregates` over parts of its changes."""
    newest = F.struct(*[F.col(f"_n.{c}") for c in order])
    aggregates = [F.max_by(F.col("_n"), newest).alias("_n")]
    for name in _per_column(columns, toasted, key):
        part = F.col(f"_a_{name}")
        aggregates.append(F.max_by(part, part["s"]).alias(f"_a_{name}"))
    aggregates.append(F.sum("_events").alias("_events"))
    return finish_newest(parts.groupBy(*key).agg(*aggregates), columns, toasted, key=key)


def finish_newest(
    grouped: DataFrame,
    columns: Sequence[str],
    toasted: Collection[str] | None = None,
    *,
    key: Sequence[str],
) -> DataFrame:
    """The collapsed change of each key from its :func:`newest_aggregates`."""
    per_column = _per_column(columns, toasted, key)
    out: list[Column] = [F.col(k) for k in key]
    out += [F.col(f"_n.{c}").alias(c) for c in (*SEQUENCE, "cdc_op")]
    still_unavailable: list[Column] = []
    for name in _per_column(columns, None, key):
        if name not in per_column:
            out.append(F.col(f"_n.{name}").alias(name))
            continue
        out.append(F.col(f"_a_{name}.v").alias(name))
        still_unavailable.append(F.when(F.col(f"_a_{name}").isNull(), F.lit(name)))
    unavailable = (
        F.filter(F.array(*still_unavailable), lambda c: c.isNotNull())
        if still_unavailable
        else F.array().cast("array<string>")
    )
    out.append(
        F.when(F.col("_n.cdc_op") == "d", F.array().cast("array<string>"))
        .otherwise(unavailable)
        .alias("_unavailable")
    )
    out.append(F.col("_events").cast("bigint").alias("_events"))
    return grouped.select(*out)


# -- primary-key changes of rows with TOASTed columns ---------------------------

# a typed change's Kafka coordinates
_COORDINATES = ["kafka_partition", "kafka_offset"]


def _key_struct(key: Sequence[str], prefix: str = "") -> Column:
    """A key tuple as one comparable struct, its fields named by position."""
    return F.struct(*[F.col(f"{prefix}{k}").alias(f"k{i}") for i, k in enumerate(key)])


def old_keys(raw: DataFrame, key: Sequence[tuple[str, str]]) -> DataFrame:
    """``kafka_partition, kafka_offset, _old_key`` of the records Debezium marks as a key change.

    ``raw`` is Kafka's records as the source gives them (with ``headers``).
    ``key`` is the table's key columns with their types; ``_old_key`` is the old
    key as the struct :func:`_key_struct` makes of the table's key columns.

    Debezium sends a primary-key update as a delete of the old key and a create
    of the new one; the create carries the old key in the ``__debezium.oldkey``
    header (the key as its converter wrote it, with or without the schema
    wrapper). Needs the Kafka source's ``includeHeaders``.
    """
    header = F.filter(F.col("headers"), lambda h: h["key"] == OLD_KEY_HEADER)
    text = F.element_at(header, 1)["value"].cast("string")
    old_key = F.struct(
        *[
            _typed(
                F.coalesce(
                    F.get_json_object(text, f"$.payload.{name}"),
                    F.get_json_object(text, f"$.{name}"),
                ),
                spark_type,
            ).alias(f"k{i}")
            for i, (name, spark_type) in enumerate(key)
        ]
    )
    return raw.where(F.size(header) > 0).select(
        F.col("partition").cast("int").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        old_key.alias("_old_key"),
        (F.col("timestampType") == LOG_APPEND_TIME).alias("_log_append_time"),
    )


def _toasted_creates(events: DataFrame, old: DataFrame) -> DataFrame:
    """The creates of key changes (``old``: :func:`old_keys`) with TOAST placeholders."""
    return events.join(old, _COORDINATES).where(
        (F.col("cdc_op") == "c") & (F.size("_unavailable") > 0)
    )


def creates_before_their_delete(
    events: DataFrame, old: DataFrame, tombstones: DataFrame, *, key: Sequence[str]
) -> DataFrame:
    """The creates of key changes whose TOAST placeholders may stand for changes not read yet.

    A create with placeholders (``events`` are typed valid changes, ``old``
    comes from :func:`old_keys`) whose old key's delete, the other half of the
    same change (same ``ts_ms`` and ``lsn``, marked ``_kafka_moved``), is
    neither among ``events`` nor remembered with its image in ``tombstones``:
    the old key's partition has not been read up to the change. Output: the
    creates' ``_kafka_timestamp`` and ``_log_append_time``.
    """
    creates = _toasted_creates(events, old)
    change = ["_of", "_ots", "_olsn"]

    def deletes(frame: DataFrame) -> DataFrame:
        return frame.select(
            _key_struct(key).alias("_of"), F.col("ts_ms").alias("_ots"), F.col("lsn").alias("_olsn")
        )

    seen = deletes(events.where((F.col("cdc_op") == "d") & F.col("_kafka_moved"))).unionByName(
        deletes(tombstones.where(F.col(IMAGE).isNotNull()))
    )
    same = (
        (F.col("_old_key") == F.col("_of"))
        & F.col("ts_ms").eqNullSafe(F.col("_ots"))
        & F.col("lsn").eqNullSafe(F.col("_olsn"))
    )
    return creates.join(seen.select(*change), same, "left_anti").select(
        "_kafka_timestamp", "_log_append_time"
    )


def stored_versions(
    live: DataFrame, tombstones: DataFrame, columns: Sequence[str], *, key: Sequence[str]
) -> list[DataFrame]:
    """The versions of rows the tables remember: key, sequence and the other columns.

    The live table's rows, and the images the tombstone table keeps of rows
    whose key changed (:func:`key_change_images`): the last version of the old
    key, which the delete of a key change removed from the live table before the
    create of the new key (in another Kafka partition) may have been applied.
    Two frames, each joined on its own (a union of the two below a join trips
    Spark's dynamic partition pruning on a partitioned table).
    """
    data = [c for c in columns if c not in key]
    image = F.col(IMAGE)
    return [
        live.select(*key, *SEQUENCE, *data),
        tombstones.where(image.isNotNull()).select(
            *key, *[image[c].alias(c) for c in (*SEQUENCE, *data)]
        ),
    ]


def _values_before(
    targets: DataFrame,
    events: DataFrame,
    stored: Sequence[DataFrame],
    data: Sequence[str],
    order: Sequence[str],
    key: Sequence[str],
    ahead: DataFrame | None = None,
) -> DataFrame:
    """What a key held just before a point: per target, from the batch and the tables.

    ``targets`` has ``kafka_partition, kafka_offset`` (the target's coordinates),
    ``_of`` (a key as :func:`_key_struct` makes it) and ``_tseq`` (the point, a
    :func:`sequence`). Per target: ``_b_<column>``, the newest value the batch's
    earlier non-delete changes of the key have available, as ``struct(v, s)``
    (``s`` the change's sequence), or null; ``_bseq``, the newest such change's
    sequence; ``_stored``, the newest version ``stored`` holds of the key before
    the point (a struct of the columns), and ``_sseq`` its sequence. ``ahead``,
    typed valid changes read beyond the batch, count as the batch's own.
    """
    seq = sequence(order=order)

    def changes(frame: DataFrame) -> DataFrame:
        return frame.where(F.col("cdc_op") != "d").select(
            _key_struct(key).alias("_dkey"),
            seq.alias("_dseq"),
            F.col("_unavailable").alias("_dun"),
            *[F.col(c).alias(f"_d_{c}") for c in data],
        )

    donors = changes(events)
    if ahead is not None:
        donors = donors.unionByName(changes(ahead))
    points = targets.select(*_COORDINATES, "_of", "_tseq")
    in_batch = (
        points.join(
            donors,
            (F.col("_dkey") == F.col("_of")) & (F.col("_dseq") < F.col("_tseq")),
            "left",
        )
        .groupBy(*_COORDINATES)
        .agg(
            F.max("_dseq").alias("_bseq"),
            *[
                F.max_by(
                    F.struct(F.col(f"_d_{c}").alias("v"), F.col("_dseq").alias("s")),
                    F.when(
                        F.col("_dseq").isNotNull() & ~F.array_contains(F.col("_dun"), c),
                        F.col("_dseq"),
                    ),
                ).alias(f"_b_{c}")
                for c in data
            ],
        )
    )
    found = []
    for frame in stored:
        versions = frame.select(
            _key_struct(key).alias("_skey"),
            seq.alias("_vseq"),
            F.struct(*[F.col(c) for c in data]).alias("_vrow"),
        )
        condition = (F.col("_skey") == F.col("_of")) & (F.col("_vseq") < F.col("_tseq"))
        found.append(points.join(versions, condition).select(*_COORDINATES, "_vseq", "_vrow"))
    remembered = (
        functools.reduce(DataFrame.unionByName, found)
        .groupBy(*_COORDINATES)
        .agg(F.max_by("_vrow", "_vseq").alias("_stored"), F.max("_vseq").alias("_sseq"))
    )
    return targets.join(in_batch, _COORDINATES, "left").join(remembered, _COORDINATES, "left")


def _newest_value(column: str) -> tuple[Column, Column]:
    """Of :func:`_values_before`'s output: the newest value of ``column``, and whether
    there is one (the batch's, unless the table remembers a newer version)."""
    batch = F.col(f"_b_{column}")
    stored = F.col("_stored")
    batch_wins = batch.isNotNull() & (stored.isNull() | (batch["s"] > F.col("_sseq")))
    value = F.when(batch_wins, batch["v"]).otherwise(stored[column])
    return value, batch.isNotNull() | stored.isNotNull()


def fill_from_old_key(
    events: DataFrame,
    old: DataFrame,
    stored: Sequence[DataFrame],
    columns: Sequence[str],
    order: Sequence[str] = SEQUENCE,
    *,
    key: Sequence[str],
    ahead: DataFrame | None = None,
) -> DataFrame:
    """Give the create of a key change the values its TOAST placeholders stand for.

    Under Postgres' default replica identity, an unchanged TOASTed column of a
    row whose key changes arrives as the placeholder in the create of the new
    key, which has no stored value of its own. The value is the old key's
    newest one before the create: among the batch's earlier changes of the old
    key (those with the column available), the changes ``ahead`` (read beyond
    the batch: the old key's Kafka partition may lag behind the new key's, so
    its last updates before the key change are not read yet) and the versions
    ``stored`` holds (:func:`stored_versions`). ``events`` are typed valid
    changes; ``old`` comes from :func:`old_keys`. Other events pass as they are.
    """
    targets = _toasted_creates(events, old.select(*_COORDINATES, "_old_key"))
    data = [c for c in columns if c not in key]
    joined = _values_before(
        targets.withColumn("_of", F.col("_old_key")).withColumn("_tseq", sequence(order=order)),
        events,
        stored,
        data,
        order,
        key,
        ahead,
    )
    values = {}
    still: list[Column] = []
    for c in data:
        wanted = F.array_contains(F.col("_unavailable"), c)
        value, found = _newest_value(c)
        values[c] = F.when(wanted & found, value).otherwise(F.col(c))
        still.append(F.when(wanted & ~found, F.lit(c)))
    passed = [c for c in events.columns if c != "_unavailable"]
    filled = joined.select(
        *[values[c].alias(c) if c in values else F.col(c) for c in passed],
        F.filter(F.array(*still), lambda c: c.isNotNull()).alias("_unavailable"),
    )
    rest = events.join(targets.select(*_COORDINATES), _COORDINATES, "left_anti")
    return rest.unionByName(filled.select(*events.columns))


def key_change_images(
    events: DataFrame,
    stored: Sequence[DataFrame],
    columns: Sequence[str],
    order: Sequence[str] = SEQUENCE,
    *,
    key: Sequence[str],
) -> DataFrame:
    """The last version of each key the batch's primary-key changes delete.

    Debezium sends a key change as a delete of the old key (marked with the
    ``__debezium.newkey`` header: ``_kafka_moved``) and a create of the new one,
    in the old and the new key's Kafka partitions. When the delete is applied
    in an earlier batch than the create, the create's TOAST placeholders must
    still find the old key's values: the tombstone of such a delete keeps them
    as its ``image``. Output: the delete's key, sequence and ``cdc_op``, and
    ``image``, a struct of the other columns and the version's own sequence
    (columns no change had available stay null); a key of which neither the
    batch nor ``stored`` has a version gets no image.
    """
    data = [c for c in columns if c not in key]
    seq = sequence(order=order)
    targets = events.where((F.col("cdc_op") == "d") & F.col("_kafka_moved")).select(
        *_COORDINATES,
        *[c for c in (*key, *SEQUENCE) if c not in _COORDINATES],
        _key_struct(key).alias("_of"),
        seq.alias("_tseq"),
    )
    joined = _values_before(targets, events, stored, data, order, key)
    version = F.greatest(F.col("_bseq"), F.col("_sseq"))
    image = F.struct(
        *[_newest_value(c)[0].alias(c) for c in data],
        *[version[c].alias(c) for c in SEQUENCE],
    )
    return joined.where(version.isNotNull()).select(
        *key, *SEQUENCE, F.lit("d").alias("cdc_op"), image.alias(IMAGE)
    )
