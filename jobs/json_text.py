"""Strict JSON text in Spark: reading one JSON object, and typing a value's text.

The parser (:mod:`jobs.transforms`) and the codecs of Debezium's types
(:mod:`jobs.debezium_decode`) both build on these Column expressions.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, MapType, StringType, StructField, StructType

JSON_MAP = MapType(StringType(), StringType())

# Strict JSON (RFC 8259). Spark's reader also takes 'single quotes' and NaN/Infinity
# by default: neither is JSON, so a record using them is malformed.
JSON_OPTIONS = {
    "mode": "PERMISSIVE",
    "allowSingleQuotes": "false",
    "allowNonNumericNumbers": "false",
}
# Spark's JSON reader stops after the first value and ignores what follows. Each
# object is read as the value of this wrapper: the closing field only parses when
# nothing but whitespace follows the object, so `{…}{…}` or `{…} junk` is malformed
# instead of silently losing its tail.
_END_FIELD = "__cdc_end__"
_WRAPPED = StructType([StructField("v", JSON_MAP), StructField(_END_FIELD, IntegerType())])
# A \uD800-\uDFFF escape that is not half of a pair is not Unicode text; Spark would
# store it as '?'. Matched on the JSON text, skipping escaped backslashes.
_LONE_SURROGATE = (
    r"(?<!\\)(?:\\\\)*\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\)(?:\\\\)*(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
# Integer columns and the ordering fields take a JSON integer, or a string of exactly
# an optional sign and ASCII digits: no fraction, exponent, whitespace or other digits.
INTEGER_PATTERN = r"^[+-]?[0-9]+$"
INTEGER_TYPES = ("tinyint", "smallint", "int", "bigint")
# Timestamp columns take RFC 3339 text as Debezium's ZonedTimestamp writes it: date,
# 'T' (or a space), time with seconds, at most 6 fraction digits (the column's
# precision: nothing is rounded), and a zone, 'Z' or ±HH:MM up to ±18:00. A time
# without a zone is ambiguous and does not fit.
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-]((0[0-9]|1[0-7]):[0-5][0-9]|18:00))$"
)
# ... and only instants from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z
# (microseconds since the epoch), the range every reader of the table can represent.
TIMESTAMP_MIN_MICROS = -62_135_596_800_000_000
TIMESTAMP_MAX_MICROS = 253_402_300_799_999_999


def _wrapped_text(text: Column) -> Column:
    """``text`` as the value ``v`` of the wrapper object above."""
    return F.concat(F.lit('{"v":'), text, F.lit(f',"{_END_FIELD}":1}}'))


def _json_read(text: Column) -> Column:
    """Spark's reading of ``text`` as the object of the wrapper above (a struct)."""
    return F.from_json(_wrapped_text(text), _WRAPPED, JSON_OPTIONS)


def _json_object(read: Column, text: Column) -> Column:
    """The map<string,string> of a ``_json_read``, or null.

    Null unless ``text`` is exactly one strict JSON object (whitespace around it is
    fine), with no duplicate key at its top level and no lone surrogate escape.
    Nested values keep their compact JSON text: ``1`` -> ``1``, ``true`` -> ``true``,
    ``1e3`` -> ``1000.0``, ``{"a": [1]}`` -> ``{"a":[1]}``.
    """
    parsed = F.when(read[_END_FIELD] == 1, read["v"])
    keys = F.map_keys(parsed)
    unique = F.size(keys) == F.size(F.array_distinct(keys))
    return F.when(unique & ~_has_lone_surrogate(text), parsed)


def _has_lone_surrogate(text: Column) -> Column:
    """``text`` holds an unpaired surrogate escape.

    The pattern only matches after ``\\ud`` or ``\\uD``: a substring search
    skips the regex (the costliest step of parsing a record) for almost every text.
    """
    maybe = text.contains("\\ud") | text.contains("\\uD")
    return maybe & text.rlike(_LONE_SURROGATE)


def _typed(raw: Column, spark_type: str) -> Column:
    """``raw`` (JSON text) as ``spark_type``, null when it does not fit (see the patterns above)."""
    return _in_range(_candidate(raw, spark_type), spark_type)


def _candidate(raw: Column, spark_type: str) -> Column:
    """The first half of :func:`_typed`: the text's pattern checked, then cast."""
    if spark_type == "string":
        return raw
    if spark_type == "timestamp":
        return F.when(raw.rlike(TIMESTAMP_PATTERN), raw.try_cast("timestamp"))
    if spark_type == "boolean":
        return F.when(F.lower(raw).isin("true", "false"), F.lower(raw) == "true")
    if spark_type in INTEGER_TYPES:
        return F.when(raw.rlike(INTEGER_PATTERN), raw.try_cast(spark_type))
    return raw.try_cast(spark_type)


def _in_range(candidate: Column, spark_type: str) -> Column:
    """The second half of :func:`_typed`: a timestamp only within what every reader holds."""
    if spark_type != "timestamp":
        return candidate
    in_range = F.unix_micros(candidate).between(TIMESTAMP_MIN_MICROS, TIMESTAMP_MAX_MICROS)
    return F.when(in_range, candidate)
