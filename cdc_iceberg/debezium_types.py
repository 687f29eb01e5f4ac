"""The lossless mapping of Debezium's Postgres column types onto Spark and Iceberg types.

Each field of a change event's Kafka Connect schema (as the JsonConverter writes it)
maps to a :class:`ColumnType`: the Spark type of the table column, and the *codec*
naming how the field's JSON text becomes a value of that type
(:func:`jobs.debezium_decode.decode`). A field no codec can hold without loss is
refused with :class:`UnsupportedType` when the table is defined, rather than having
its values rounded or truncated one by one.

Debezium's default connector settings apply (``decimal.handling.mode=precise``,
``time.precision.mode=adaptive``, ``interval.handling.mode=numeric``,
``binary.handling.mode=bytes``) except where marked: ``[string]`` and ``[double]``
are ``decimal.handling.mode`` (or ``interval.handling.mode``) values, ``[connect]``
is ``time.precision.mode=connect``. Names are shortened: ``connect.`` is
``org.apache.kafka.connect.data.``, ``data.`` is ``io.debezium.data.`` and ``time.``
is ``io.debezium.time.``.

=========================  ===========================  ================  =========================
Postgres type              Connect type, name           codec             Spark / Iceberg type
=========================  ===========================  ================  =========================
smallint, integer          int16, int32                 int               int / int
bigint, oid                int64                        bigint            bigint / long
boolean, bit(1)            boolean                      boolean           boolean / boolean
real                       float (FLOAT32)              float             float / float
double precision           double (FLOAT64)             double            double / double
numeric(p,s), p <= 38      bytes, connect.Decimal       decimal           decimal(p,s)
numeric(p,s), p > 38       bytes, connect.Decimal       (refused)         -
numeric (no typmod)        struct, data.                variable_decimal  string
                           VariableScaleDecimal
money                      bytes, connect.Decimal       decimal           decimal(38,2)
numeric, money [string]    string                       string            string
numeric, money [double]    double (FLOAT64)             double            double
text, varchar, char,       string                       string            string
inet, cidr, macaddr,
ranges, citext
enum types                 string, data.Enum            string            string
xml                        string, data.Xml             string            string
json, jsonb                string, data.Json            json              string
uuid                       string, data.Uuid            uuid              string
bytea                      bytes                        bytes             binary / binary
date                       int32, time.Date             date              date / date
date [connect]             int32, connect.Date          date              date / date
time(0..3)                 int32, time.Time             milli_time        bigint / long
time, time(4..6)           int64, time.MicroTime        micro_time        bigint / long
time [connect]             int32, connect.Time          milli_time        bigint / long
timetz                     string, time.ZonedTime       zoned_time        bigint / long
timestamp(0..3)            int64, time.Timestamp        milli_timestamp   timestamp_ntz / timestamp
timestamp, timestamp(4-6)  int64, time.MicroTimestamp   micro_timestamp   timestamp_ntz / timestamp
timestamp [connect]        int64, connect.Timestamp     milli_timestamp   timestamp_ntz / timestamp
timestamptz                string, time.ZonedTimestamp  zoned_timestamp   timestamp / timestamptz
interval                   int64, time.MicroDuration    micro_duration    bigint / long
interval [string]          string, time.Interval        string            string
T[] (T any type above)     array, items: T's schema     array:<T codec>   array<T> / list<T>
=========================  ===========================  ================  =========================

Decisions behind the table:

* ``numeric(p,s)`` with ``p > 38`` is refused: Iceberg's decimal holds at most 38
  digits, and the exact text of such a value cannot be rebuilt from its unscaled
  bytes without arbitrary-precision arithmetic. Capture the column with
  ``decimal.handling.mode=string``: it then arrives as its exact text (codec
  ``string``). A scale above the precision (Postgres 15+, e.g. ``numeric(2,5)``) is
  held as ``decimal(s,s)``; a negative scale is refused.
* An unconstrained ``numeric`` has no fixed scale, while an Iceberg decimal column
  has one: any choice of ``decimal(38,s)`` would either drop fraction digits or
  overflow. The column holds the exact plain decimal text Debezium sent
  (``-12.50``: unscaled value and scale as given, no exponent), which sorts as text
  but never loses a digit. Values whose unscaled integer has more than 38 digits do
  not fit (the same limit as above); ``decimal.handling.mode=string`` lifts it.
* ``money`` arrives as a Connect Decimal with the scale of ``money.fraction.digits``
  (2) and no precision: Postgres money is a 64-bit count of cents (at most 19
  digits), held as ``decimal(38,s)``, the widest decimal, since a Decimal without a
  precision says no more.
* Spark 4.1 cannot write Iceberg's ``time``. Every time of day is held as the
  ``bigint`` count of microseconds since midnight (0 to 86,400,000,000, Postgres
  allowing 24:00:00), the physical value of Iceberg's ``time``, so a later move to
  that type is a cast. ``timetz`` is the same count for the UTC time Debezium sends
  (Debezium itself normalises the offset to UTC and drops the original).
* ``interval`` is ``MicroDuration``: Debezium's approximate microseconds (a month
  counted as 30.4375 days); the column keeps exactly what Debezium sent.
  ``interval.handling.mode=string`` gives the exact ISO 8601 text instead.
* ``date`` and timestamps fit only from year 1 to 9999 (what every reader of the
  table holds); Postgres' ``infinity`` and dates outside that range do not fit.
* ``uuid`` and ``json`` are Spark strings (Spark cannot write Iceberg's ``uuid``);
  their own codecs keep the type's meaning and check a UUID's shape.
* Arrays of arrays, ``hstore``, geometric and PostGIS types, ``bit(n>1)``,
  ``ltree``, vectors and ``time.precision.mode=isostring``'s names are refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TOAST_PLACEHOLDER = "__debezium_unavailable_value"
"""Debezium's default ``unavailable.value.placeholder``: an unchanged TOASTed column's value."""

ARRAY_PREFIX = "array:"
MAX_DECIMAL_PRECISION = 38
"""The most digits an Iceberg (and Spark) decimal holds."""

DECIMAL = "org.apache.kafka.connect.data.Decimal"
VARIABLE_SCALE_DECIMAL = "io.debezium.data.VariableScaleDecimal"

_DECIMAL_TYPE = re.compile(r"^decimal\((\d+),(\d+)\)$")

# Fields without a semantic name: Connect type -> (codec, Spark type). The JsonConverter
# names FLOAT32 and FLOAT64 "float" and "double" in its schema blocks; the Connect enum
# names are accepted too.
_PLAIN: dict[str, tuple[str, str]] = {
    "float": ("float", "float"),
    "double": ("double", "double"),
    "int8": ("int", "int"),
    "int16": ("int", "int"),
    "int32": ("int", "int"),
    "int64": ("bigint", "bigint"),
    "float32": ("float", "float"),
    "float64": ("double", "double"),
    "boolean": ("boolean", "boolean"),
    "string": ("string", "string"),
    "bytes": ("bytes", "binary"),
}

# Named (semantic) types of fixed shape: name -> (Connect type it must have, codec, Spark type).
_NAMED: dict[str, tuple[str, str, str]] = {
    "io.debezium.data.Json": ("string", "json", "string"),
    "io.debezium.data.Xml": ("string", "string", "string"),
    "io.debezium.data.Uuid": ("string", "uuid", "string"),
    "io.debezium.data.Enum": ("string", "string", "string"),
    "io.debezium.time.Date": ("int32", "date", "date"),
    "org.apache.kafka.connect.data.Date": ("int32", "date", "date"),
    "io.debezium.time.Time": ("int32", "milli_time", "bigint"),
    "org.apache.kafka.connect.data.Time": ("int32", "milli_time", "bigint"),
    "io.debezium.time.MicroTime": ("int64", "micro_time", "bigint"),
    "io.debezium.time.ZonedTime": ("string", "zoned_time", "bigint"),
    "io.debezium.time.Timestamp": ("int64", "milli_timestamp", "timestamp_ntz"),
    "org.apache.kafka.connect.data.Timestamp": ("int64", "milli_timestamp", "timestamp_ntz"),
    "io.debezium.time.MicroTimestamp": ("int64", "micro_timestamp", "timestamp_ntz"),
    "io.debezium.time.ZonedTimestamp": ("string", "zoned_timestamp", "timestamp"),
    "io.debezium.time.MicroDuration": ("int64", "micro_duration", "bigint"),
    "io.debezium.time.Interval": ("string", "string", "string"),
}

SCALAR_CODECS = frozenset(
    {codec for codec, _ in _PLAIN.values()}
    | {codec for _, codec, _ in _NAMED.values()}
    | {"decimal", "variable_decimal"}
)
"""Every codec but ``array:<codec>``."""


class UnsupportedType(ValueError):
    """A Connect field no column type holds without loss."""


@dataclass(frozen=True)
class ColumnType:
    """A table column's Spark type and the codec reading Debezium's JSON text into it.

    Frozen, hashable and made of two strings, so it serves as a cache key for the
    Spark expressions built from it and is stored as JSON as it is.
    """

    spark_type: str
    codec: str

    @property
    def is_array(self) -> bool:
        return self.codec.startswith(ARRAY_PREFIX)

    def element(self) -> ColumnType:
        """The column type of an array column's elements."""
        if not self.is_array:
            raise ValueError(f"{self} is not an array column type")
        inner = self.spark_type.removeprefix("array<").removesuffix(">")
        return ColumnType(inner, self.codec.removeprefix(ARRAY_PREFIX))


def decimal_precision_scale(spark_type: str) -> tuple[int, int]:
    """``(p, s)`` of a ``decimal(p,s)`` Spark type name."""
    match = _DECIMAL_TYPE.match(spark_type.replace(" ", ""))
    if match is None:
        raise ValueError(f"not a decimal type: {spark_type!r}")
    return int(match.group(1)), int(match.group(2))


def column_type(field: Mapping[str, Any]) -> ColumnType:
    """The column type of one Connect schema field (``{"type": ..., "name": ..., "field": ...}``).

    Raises :class:`UnsupportedType`, naming the field and its Connect type and name,
    for anything this table cannot hold without loss.
    """
    return _column_type(field, str(field.get("field", "?")))


def _describe(field: Mapping[str, Any], label: str) -> str:
    name = field.get("name")
    kind = field.get("type")
    return f"field {label!r} (Connect type {kind!r}" + (f", name {name!r})" if name else ")")


def _column_type(field: Mapping[str, Any], label: str) -> ColumnType:
    kind = field.get("type")
    name = field.get("name")
    if kind == "array":
        items = field.get("items")
        if not isinstance(items, Mapping):
            raise UnsupportedType(f"{_describe(field, label)}: an array without an items schema")
        if items.get("type") == "array":
            raise UnsupportedType(f"{_describe(field, label)}: arrays of arrays are not supported")
        element = _column_type(items, f"{label}[]")
        return ColumnType(f"array<{element.spark_type}>", ARRAY_PREFIX + element.codec)
    if name == DECIMAL:
        return _decimal(field, label)
    if name == VARIABLE_SCALE_DECIMAL:
        if kind != "struct":
            raise UnsupportedType(f"{_describe(field, label)}: expected a struct")
        return ColumnType("string", "variable_decimal")
    if name is not None:
        known = _NAMED.get(name)
        if known is None:
            raise UnsupportedType(f"{_describe(field, label)}: no lossless column type is known")
        connect_type, codec, spark_type = known
        if kind != connect_type:
            raise UnsupportedType(f"{_describe(field, label)}: {name} must be {connect_type}")
        return ColumnType(spark_type, codec)
    plain = _PLAIN.get(str(kind))
    if plain is None:
        raise UnsupportedType(f"{_describe(field, label)}: no lossless column type is known")
    codec, spark_type = plain
    return ColumnType(spark_type, codec)


def _decimal(field: Mapping[str, Any], label: str) -> ColumnType:
    """A Connect Decimal: ``decimal(p,s)`` from its ``connect.decimal.precision`` and ``scale``."""
    described = _describe(field, label)
    if field.get("type") != "bytes":
        raise UnsupportedType(f"{described}: a Decimal must be bytes")
    parameters = field.get("parameters") or {}
    try:
        scale = int(parameters["scale"])
        # money carries no precision: the widest decimal holds its 64-bit count of cents
        precision = int(parameters.get("connect.decimal.precision", MAX_DECIMAL_PRECISION))
    except (KeyError, TypeError, ValueError) as error:
        raise UnsupportedType(f"{described}: no integer scale/precision parameters") from error
    if scale < 0:
        raise UnsupportedType(f"{described}: a negative scale ({scale}) is not supported")
    if precision < 1:
        raise UnsupportedType(f"{described}: precision {precision} is not a precision")
    # numeric(2,5) holds values below 10^-3: decimal(5,5) holds them all
    digits = max(precision, scale)
    if digits > MAX_DECIMAL_PRECISION:
        raise UnsupportedType(
            f"{described}: precision {digits} exceeds the {MAX_DECIMAL_PRECISION} digits of an "
            "Iceberg decimal; capture it with decimal.handling.mode=string"
        )
    return ColumnType(f"decimal({digits},{scale})", "decimal")


# -- TOAST placeholders ---------------------------------------------------------
#
# Postgres does not send an unchanged TOASTed (out-of-line) value in an update's new
# row; Debezium's Postgres connector (io.debezium.connector.postgresql) puts a
# placeholder there, built from the bytes of ``unavailable.value.placeholder``:
#
# * UnchangedToastedReplicationMessageColumn.markerForType picks a marker by the
#   column's Postgres type: a text-array marker for text[], varchar[], bpchar[],
#   json[], jsonb[]; a binary-array marker for bytea[]; an int-array marker for
#   int4[] and date[]; a bigint-array marker for int8[]; a uuid marker for uuid[];
#   the plain marker for every other type.
# * UnchangedToastedPlaceholder maps each marker to its value: the placeholder
#   string; a one-element list of that string; a one-element list of its bytes;
#   the list of its bytes as int32 or int64 numbers; a one-element list of
#   UUID.nameUUIDFromBytes(bytes) (DBZ-6720: b68a35a7-17ad-35b3-af2a-ae46edb4545a).
# * PostgresValueConverter.convertString gives the placeholder string to every
#   string-schema column (text, json, xml, uuid, enum, inet, ...), and
#   convertBinaryToBytes its bytes to bytea (base64 text in the JsonConverter's JSON).
# * For any other column (numeric, arrays of other element types, ...) the plain
#   marker becomes the placeholder string in handleUnknownData, which does not fit
#   the field's schema: Connect raises "Invalid Java object for schema", and with the
#   default event.converting.failure.handling.mode=warn the field is left null
#   (debezium/dbz#2418). Such a column has no placeholder: it arrives as null.
#   Fixed-width types (integers, floats, dates, times, timestamps, uuid, money,
#   interval) are never TOASTed at all.

_STRING_SCHEMA_CODECS = frozenset({"string", "json", "uuid", "zoned_timestamp", "zoned_time"})
_TEXT_ARRAY_ELEMENTS = frozenset({"string", "json"})
_NUMBER_ARRAY_ELEMENTS = frozenset({"int", "bigint", "date"})


def _compact(value: Any) -> str:
    """``value`` as JSON text the way Spark keeps a nested value in the row's map."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def placeholder_texts(codec: str, placeholder: str = TOAST_PLACEHOLDER) -> tuple[str, ...]:
    """The row-map texts that mean "unavailable (unchanged TOASTed) value" for ``codec``.

    These are the texts of ``map<string,string>`` row images (strings without their
    quotes, arrays as compact JSON), compared before decoding: an int4[] placeholder
    is a valid list of numbers, so a value is checked against these first.
    """
    raw = placeholder.encode("utf-8")
    encoded = base64.b64encode(raw).decode("ascii")
    if codec in _STRING_SCHEMA_CODECS:
        return (placeholder,)
    if codec == "bytes":
        return (encoded,)
    if not codec.startswith(ARRAY_PREFIX):
        return ()
    element = codec.removeprefix(ARRAY_PREFIX)
    if element in _TEXT_ARRAY_ELEMENTS:
        return (_compact([placeholder]),)
    if element in _NUMBER_ARRAY_ELEMENTS:
        # Java bytes are signed: (int) b of each placeholder byte
        return (_compact([b - 256 if b > 127 else b for b in raw]),)
    if element == "bytes":
        return (_compact([encoded]),)
    if element == "uuid":
        return (_compact([str(_name_uuid(raw))]),)
    return ()


def _name_uuid(raw: bytes) -> uuid.UUID:
    """Java's ``UUID.nameUUIDFromBytes``: the MD5 of the bytes as a version 3 UUID."""
    digest = bytearray(hashlib.md5(raw, usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x30
    digest[8] = (digest[8] & 0x3F) | 0x80
    return uuid.UUID(bytes=bytes(digest))
