"""Debezium's JSON texts as Spark values of their column types, in Spark expressions only.

A row image is a ``map<string,string>`` of JSON texts (strings without their quotes,
numbers as their text, structs and arrays as compact JSON). :func:`decode` turns one
such text into the value of its :class:`~cdc_iceberg.debezium_types.ColumnType`, or
null when the text does not fit: a wrong shape, a value out of the type's range, or
more digits than the declared precision or scale. Nothing is ever rounded, and no
expression can raise (Spark runs with ANSI mode on): every cast is a ``try_cast`` or
guarded by a pattern, all arithmetic is ``try_`` arithmetic, so one bad value makes
one misfit, never a failed batch. No Python UDFs: everything runs in the JVM.

A text that is not null but decodes to null does not fit (:func:`misfit`). TOAST
placeholders (:func:`~cdc_iceberg.debezium_types.placeholder_texts`) are matched on
the raw text before decoding: an int4[] placeholder is a valid list of numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, IntegerType, StringType, StructField, StructType

from cdc_iceberg.debezium_types import ColumnType, decimal_precision_scale
from jobs.json_text import (
    _END_FIELD,
    JSON_OPTIONS,
    TIMESTAMP_MAX_MICROS,
    TIMESTAMP_MIN_MICROS,
    _json_object,
    _json_read,
    _typed,
    _wrapped_text,
)

# A JSON number as Spark renders it in the map (``0.1``, ``-0.0``, ``1.0E10``), or one of
# the texts the JsonConverter writes for non-finite floats (as JSON strings).
FLOAT_PATTERN = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
NON_FINITE = ("NaN", "Infinity", "-Infinity")
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# ZonedTime as Debezium writes it: the UTC time of day, seconds always, up to 6 fraction
# digits (Postgres keeps microseconds), 'Z'; 24:00:00 is Postgres' end of day.
ZONED_TIME_PATTERN = (
    r"^(?:([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])(?:\.([0-9]{1,6}))?|24:00:00(?:\.0{1,6})?)Z$"
)
# Dates from 0001-01-01 to 9999-12-31 (days since the epoch), like timestamps
DATE_MIN_DAYS = -719_162
DATE_MAX_DAYS = 2_932_896
TIMESTAMP_MIN_MILLIS = -(-TIMESTAMP_MIN_MICROS // 1000)
TIMESTAMP_MAX_MILLIS = TIMESTAMP_MAX_MICROS // 1000
MICROS_PER_DAY = 86_400_000_000
MILLIS_PER_DAY = 86_400_000
# Postgres' largest numeric display scale (NUMERIC_DSCALE_MAX)
MAX_VARIABLE_SCALE = 16_383
_HEX_DIGITS = "0123456789ABCDEF"
_TWO_64 = Decimal(2**64)
_ARRAY_WRAPPED = StructType(
    [StructField("v", ArrayType(StringType())), StructField(_END_FIELD, IntegerType())]
)
_VARIABLE_KEYS = ("scale", "value")


def decode(raw: Column, column: ColumnType) -> Column:
    """``raw`` (a row map's JSON text) as a value of ``column.spark_type``, null if it does not fit.

    Null stays null. The result's type is exactly ``column.spark_type``.
    """
    if column.is_array:
        return _array(raw, column.element())
    build = _DECODERS.get(column.codec)
    if build is None:
        raise ValueError(f"unknown codec {column.codec!r}")
    return build(raw, column.spark_type)


def misfit(raw: Column, decoded: Column) -> Column:
    """The text does not fit its column: there was a value, and it decoded to null."""
    return raw.isNotNull() & decoded.isNull()


def _as_is(raw: Column, _spark_type: str) -> Column:
    return raw


def _typed_as(raw: Column, spark_type: str) -> Column:
    """The table's existing rules (``transforms._typed``) for int, bigint, boolean, timestamp."""
    return _typed(raw, spark_type)


def _floating(raw: Column, spark_type: str) -> Column:
    """A JSON number, or NaN/Infinity/-Infinity, as float or double.

    A finite text that overflows the type (``1e39`` as float) does not fit.
    """
    number = F.when(raw.rlike(FLOAT_PATTERN), raw.try_cast(spark_type))
    finite = F.abs(number) < F.lit(float("inf"))  # false for NaN too
    return F.when(raw.isin(*NON_FINITE), raw.try_cast(spark_type)).when(finite, number)


def _uuid(raw: Column, _spark_type: str) -> Column:
    """A UUID in its 8-4-4-4-12 hex form, kept in lower case as Debezium writes it."""
    return F.when(raw.rlike(UUID_PATTERN), F.lower(raw))


def _let(value: Column, body: Callable[[Column], Column]) -> Column:
    """``body(v)`` with ``v`` bound to ``value``, evaluated once.

    Catalyst copies a Column each time an expression refers to it: a decoder that
    refers to its steps a few times each would grow exponentially (a
    VariableScaleDecimal's plan would exhaust the driver's heap). A lambda variable
    is a reference, so each step is built, planned and evaluated once.
    """
    return F.get(F.transform(F.array(value), body), 0)


def _bytes(raw: Column, _spark_type: str) -> Column:
    """Canonical base64 (padded, no whitespace): exactly the text encoding its bytes gives.

    The round trip replaces a pattern (whose repetition would recurse per group in
    Java's regex engine on a large value).
    """
    return _let(
        F.try_to_binary(raw, F.lit("base64")),
        lambda decoded: F.when(F.base64(decoded) == raw, decoded),
    )


def _unscaled_text(raw: Column) -> Column:
    """The signed integer text of base64 two's-complement big-endian bytes, or null.

    Null for no bytes, and for values of more than 38 digits. A negative value is
    read as the complement of its bytes (``-(~v) - 1``), so the magnitude folded into
    ``decimal(38,0)`` never exceeds what the value needs; sign-extension bytes of any
    length are accepted. The two 64-bit halves come from ``conv`` (unsigned), joined
    with ``try_`` arithmetic that yields null past 38 digits.
    """
    return _let(F.hex(_bytes(raw, "binary")), _unscaled_from_hex)


def _unscaled_from_hex(hexed: Column) -> Column:
    """:func:`_unscaled_text` of the bytes' upper-case hex digits."""
    negative = F.substring(hexed, 1, 1).isin(*"89ABCDEF")
    complemented = F.when(negative, F.translate(hexed, _HEX_DIGITS, _HEX_DIGITS[::-1])).otherwise(
        hexed
    )

    def joined(significant: Column) -> Column:
        padded = F.lpad(significant, 32, "0")
        high = F.conv(F.substring(padded, 1, 16), 16, 10).try_cast("decimal(20,0)")
        low = F.conv(F.substring(padded, 17, 16), 16, 10).try_cast("decimal(20,0)")
        magnitude = F.try_add(F.try_multiply(high, F.lit(_TWO_64)), low)
        absolute = F.when(negative, F.try_add(magnitude, F.lit(Decimal(1)))).otherwise(magnitude)
        fits = (F.length(hexed) >= 2) & (F.length(significant) <= 32) & absolute.isNotNull()
        sign = F.when(negative, F.lit("-")).otherwise(F.lit(""))
        return F.when(fits, F.concat(sign, absolute.cast("string")))

    return _let(F.regexp_replace(complemented, "^0+", ""), joined)


def _with_point(integer: Column, scale: Column) -> Column:
    """The plain decimal text of ``integer * 10^-scale`` (``-12345``, 2 -> ``-123.45``)."""

    def placed(signed: Column) -> Column:
        negative = signed.startswith("-")
        digits = F.when(negative, F.substring(signed, 2, 2**31 - 1)).otherwise(signed)
        zeros = F.repeat(F.lit("0"), F.greatest(scale + 1 - F.length(digits), F.lit(0)))
        sign = F.when(negative, F.lit("-")).otherwise(F.lit(""))
        return _let(F.concat(zeros, digits), lambda padded: F.concat(sign, point(padded)))

    def point(padded: Column) -> Column:
        whole = padded.substr(F.lit(1), F.length(padded) - scale)
        fraction = padded.substr(F.length(padded) - scale + 1, scale)
        return F.when(scale > 0, F.concat(whole, F.lit("."), fraction)).otherwise(whole)

    return _let(integer, placed)


def _decimal(raw: Column, spark_type: str) -> Column:
    """A Connect Decimal: base64 unscaled bytes, the scale being the column's.

    The text built has exactly the column's scale, so the cast never rounds; more
    integer digits than the precision allows make it null.
    """
    _precision, scale = decimal_precision_scale(spark_type)
    return _with_point(_unscaled_text(raw), F.lit(scale)).try_cast(spark_type)


def _variable_decimal(raw: Column, _spark_type: str) -> Column:
    """A VariableScaleDecimal ``{"scale": s, "value": base64}`` as its exact plain text."""

    def read(fields: Column) -> Column:
        keys = F.array_sort(F.map_keys(fields))
        shaped = keys == F.array(*[F.lit(k) for k in sorted(_VARIABLE_KEYS)])
        return _let(
            F.when(shaped, _typed(fields["scale"], "int")), lambda scale: text(fields, scale)
        )

    def text(fields: Column, scale: Column) -> Column:
        scale_ok = scale.between(0, MAX_VARIABLE_SCALE)
        return F.when(scale_ok, _with_point(_unscaled_text(fields["value"]), scale))

    return _let(_json_object(_json_read(raw), raw), read)


def _date(raw: Column, _spark_type: str) -> Column:
    """Days since the epoch (Debezium's and Connect's Date) from year 1 to 9999."""
    days = _typed(raw, "int")
    return F.when(days.between(DATE_MIN_DAYS, DATE_MAX_DAYS), F.date_from_unix_date(days))


def _epoch_ntz() -> Column:
    """1970-01-01T00:00 as timestamp_ntz, whatever the session's time zone."""
    return F.lit("1970-01-01 00:00:00").cast("timestamp_ntz")


def _micro_timestamp(raw: Column, _spark_type: str) -> Column:
    """MicroTimestamp: microseconds since the epoch of a local date-time (timestamp_ntz)."""
    micros = _typed(raw, "bigint")
    in_range = micros.between(TIMESTAMP_MIN_MICROS, TIMESTAMP_MAX_MICROS)
    return F.when(in_range, F.timestamp_add("MICROSECOND", micros, _epoch_ntz()))


def _milli_timestamp(raw: Column, _spark_type: str) -> Column:
    """Debezium's and Connect's Timestamp: milliseconds since the epoch (timestamp_ntz)."""
    millis = _typed(raw, "bigint")
    in_range = millis.between(TIMESTAMP_MIN_MILLIS, TIMESTAMP_MAX_MILLIS)
    return F.when(in_range, F.timestamp_add("MILLISECOND", millis, _epoch_ntz()))


def _micro_time(raw: Column, _spark_type: str) -> Column:
    """MicroTime: microseconds since midnight, 24:00:00 included."""
    micros = _typed(raw, "bigint")
    return F.when(micros.between(0, MICROS_PER_DAY), micros)


def _milli_time(raw: Column, _spark_type: str) -> Column:
    """Debezium's and Connect's Time (milliseconds since midnight) as microseconds."""
    millis = _typed(raw, "int")
    return F.when(millis.between(0, MILLIS_PER_DAY), millis.cast("bigint") * 1000)


def _zoned_time(raw: Column, _spark_type: str) -> Column:
    """ZonedTime (``HH:MM:SS[.ffffff]Z``) as microseconds since midnight UTC."""
    matches = raw.rlike(ZONED_TIME_PATTERN)

    def part(index: int) -> Column:
        return F.regexp_extract(raw, ZONED_TIME_PATTERN, index)

    hours, minutes, seconds = (part(i).try_cast("bigint") for i in (1, 2, 3))
    fraction = F.rpad(part(4), 6, "0").try_cast("bigint")
    micros = ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + fraction
    return F.when(matches & raw.startswith("24"), F.lit(MICROS_PER_DAY)).when(matches, micros)


def _array(raw: Column, element: ColumnType) -> Column:
    """A JSON array, each element decoded as ``element``; null elements stay null.

    The array is read as the field of a wrapper object so that text after it makes
    it malformed (as ``transforms`` reads objects). One element that does not fit
    makes the whole value not fit.
    """
    wrapped = F.from_json(_wrapped_text(raw), _ARRAY_WRAPPED, JSON_OPTIONS)
    items = F.when(wrapped[_END_FIELD] == 1, wrapped["v"])
    decoded = F.transform(items, lambda item: decode(item, element))
    lost = F.exists(F.zip_with(items, decoded, misfit), lambda bad: bad)
    return F.when(~lost, decoded)


_DECODERS: dict[str, Callable[[Column, str], Column]] = {
    "string": _as_is,
    "json": _as_is,
    "uuid": _uuid,
    "int": _typed_as,
    "bigint": _typed_as,
    "boolean": _typed_as,
    "float": _floating,
    "double": _floating,
    "decimal": _decimal,
    "variable_decimal": _variable_decimal,
    "bytes": _bytes,
    "date": _date,
    "milli_time": _milli_time,
    "micro_time": _micro_time,
    "zoned_time": _zoned_time,
    "milli_timestamp": _milli_timestamp,
    "micro_timestamp": _micro_timestamp,
    "zoned_timestamp": _typed_as,
    "micro_duration": lambda raw, _spark_type: _typed(raw, "bigint"),
}
