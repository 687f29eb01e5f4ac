"""Debezium's Postgres column types: their mapping, TOAST placeholders and decoding.

The Connect fields are written by hand in the shapes Debezium 3.x's JsonConverter
emits. Each decode case runs on a local SparkSession through the row map the
parser builds, and its hand-written expected value is also checked against the
plain-Python oracle of ``tests/debezium_values.py``.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from debezium_values import expected_value

from cdc_iceberg.debezium_types import (
    TOAST_PLACEHOLDER,
    ColumnType,
    UnsupportedType,
    column_type,
    placeholder_texts,
)

MISFIT = object()
"""The expected outcome of a value that does not fit its column."""


def _field(kind: str, name: str | None = None, **extra: Any) -> dict[str, Any]:
    """A Connect schema field as the JsonConverter writes it."""
    field: dict[str, Any] = {"type": kind, "optional": True}
    if name is not None:
        field |= {"name": name, "version": 1}
    return field | extra | {"field": "c"}


def _decimal_field(scale: int, precision: int | None) -> dict[str, Any]:
    parameters = {"scale": str(scale)}
    if precision is not None:
        parameters["connect.decimal.precision"] = str(precision)
    return _field("bytes", "org.apache.kafka.connect.data.Decimal", parameters=parameters)


VARIABLE_SCALE_DECIMAL_FIELD = _field(
    "struct",
    "io.debezium.data.VariableScaleDecimal",
    doc="Variable scaled decimal",
    fields=[
        {"type": "int32", "optional": False, "field": "scale"},
        {"type": "bytes", "optional": False, "field": "value"},
    ],
)


def _array_of(items: dict[str, Any]) -> dict[str, Any]:
    element = {k: v for k, v in items.items() if k != "field"}
    return {"type": "array", "items": element, "optional": True, "field": "c"}


# -- column_type ----------------------------------------------------------------

COLUMN_TYPES = [
    # Postgres type, its Connect field, the column type
    ("smallint", _field("int16"), ColumnType("int", "int")),
    ("integer", _field("int32"), ColumnType("int", "int")),
    ("bigint", _field("int64"), ColumnType("bigint", "bigint")),
    ("boolean", _field("boolean"), ColumnType("boolean", "boolean")),
    ("real", _field("float"), ColumnType("float", "float")),
    ("double precision", _field("double"), ColumnType("double", "double")),
    ("real (Connect enum name)", _field("float32"), ColumnType("float", "float")),
    ("numeric(10,2)", _decimal_field(2, 10), ColumnType("decimal(10,2)", "decimal")),
    ("numeric(38,0)", _decimal_field(0, 38), ColumnType("decimal(38,0)", "decimal")),
    ("numeric(2,5)", _decimal_field(5, 2), ColumnType("decimal(5,5)", "decimal")),
    ("numeric", VARIABLE_SCALE_DECIMAL_FIELD, ColumnType("string", "variable_decimal")),
    ("money", _decimal_field(2, None), ColumnType("decimal(38,2)", "decimal")),
    ("numeric [string]", _field("string"), ColumnType("string", "string")),
    ("numeric [double]", _field("double"), ColumnType("double", "double")),
    ("date", _field("int32", "io.debezium.time.Date"), ColumnType("date", "date")),
    (
        "date [connect]",
        _field("int32", "org.apache.kafka.connect.data.Date"),
        ColumnType("date", "date"),
    ),
    ("time(3)", _field("int32", "io.debezium.time.Time"), ColumnType("bigint", "milli_time")),
    ("time", _field("int64", "io.debezium.time.MicroTime"), ColumnType("bigint", "micro_time")),
    (
        "time [connect]",
        _field("int32", "org.apache.kafka.connect.data.Time"),
        ColumnType("bigint", "milli_time"),
    ),
    ("timetz", _field("string", "io.debezium.time.ZonedTime"), ColumnType("bigint", "zoned_time")),
    (
        "timestamp(3)",
        _field("int64", "io.debezium.time.Timestamp"),
        ColumnType("timestamp_ntz", "milli_timestamp"),
    ),
    (
        "timestamp",
        _field("int64", "io.debezium.time.MicroTimestamp"),
        ColumnType("timestamp_ntz", "micro_timestamp"),
    ),
    (
        "timestamp [connect]",
        _field("int64", "org.apache.kafka.connect.data.Timestamp"),
        ColumnType("timestamp_ntz", "milli_timestamp"),
    ),
    (
        "timestamptz",
        _field("string", "io.debezium.time.ZonedTimestamp"),
        ColumnType("timestamp", "zoned_timestamp"),
    ),
    (
        "interval",
        _field("int64", "io.debezium.time.MicroDuration"),
        ColumnType("bigint", "micro_duration"),
    ),
    (
        "interval [string]",
        _field("string", "io.debezium.time.Interval"),
        ColumnType("string", "string"),
    ),
    ("uuid", _field("string", "io.debezium.data.Uuid"), ColumnType("string", "uuid")),
    ("json", _field("string", "io.debezium.data.Json"), ColumnType("string", "json")),
    ("jsonb", _field("string", "io.debezium.data.Json"), ColumnType("string", "json")),
    ("xml", _field("string", "io.debezium.data.Xml"), ColumnType("string", "string")),
    (
        "enum",
        _field("string", "io.debezium.data.Enum", parameters={"allowed": "happy,sad"}),
        ColumnType("string", "string"),
    ),
    ("bytea", _field("bytes"), ColumnType("binary", "bytes")),
    ("inet", _field("string"), ColumnType("string", "string")),
    ("cidr", _field("string"), ColumnType("string", "string")),
    ("macaddr", _field("string"), ColumnType("string", "string")),
    ("varchar(20)", _field("string"), ColumnType("string", "string")),
    ("text", _field("string"), ColumnType("string", "string")),
    ("integer[]", _array_of(_field("int32")), ColumnType("array<int>", "array:int")),
    ("text[]", _array_of(_field("string")), ColumnType("array<string>", "array:string")),
    (
        "numeric(4,2)[]",
        _array_of(_decimal_field(2, 4)),
        ColumnType("array<decimal(4,2)>", "array:decimal"),
    ),
    (
        "numeric[]",
        _array_of(VARIABLE_SCALE_DECIMAL_FIELD),
        ColumnType("array<string>", "array:variable_decimal"),
    ),
    (
        "timestamptz[]",
        _array_of(_field("string", "io.debezium.time.ZonedTimestamp")),
        ColumnType("array<timestamp>", "array:zoned_timestamp"),
    ),
    (
        "uuid[]",
        _array_of(_field("string", "io.debezium.data.Uuid")),
        ColumnType("array<string>", "array:uuid"),
    ),
    (
        "date[]",
        _array_of(_field("int32", "io.debezium.time.Date")),
        ColumnType("array<date>", "array:date"),
    ),
    ("bytea[]", _array_of(_field("bytes")), ColumnType("array<binary>", "array:bytes")),
]


@pytest.mark.parametrize(
    ("field", "expected"),
    [pytest.param(field, expected, id=pg) for pg, field, expected in COLUMN_TYPES],
)
def test_column_type(field: dict[str, Any], expected: ColumnType) -> None:
    assert column_type(field) == expected


def test_column_type_is_hashable_and_json_friendly() -> None:
    column = column_type(_decimal_field(2, 10))
    assert {column: 1}[ColumnType("decimal(10,2)", "decimal")] == 1
    assert json.loads(json.dumps(asdict(column))) == {
        "spark_type": "decimal(10,2)",
        "codec": "decimal",
    }
    assert ColumnType("array<decimal(4,2)>", "array:decimal").element() == ColumnType(
        "decimal(4,2)", "decimal"
    )


UNSUPPORTED = [
    ("numeric(50,10)", _decimal_field(10, 50), "decimal.handling.mode=string"),
    ("numeric(5,-2)", _decimal_field(-2, 5), "negative scale"),
    ("point", _field("struct", "io.debezium.data.geometry.Point"), "io.debezium.data.geometry"),
    ("bit(8)", _field("bytes", "io.debezium.data.Bits"), "io.debezium.data.Bits"),
    ("hstore", _field("map", keys={"type": "string"}, values={"type": "string"}), "'map'"),
    ("isostring date", _field("string", "io.debezium.time.IsoDate"), "IsoDate"),
    ("wrong base type", _field("string", "io.debezium.time.MicroTimestamp"), "int64"),
    ("nested array", _array_of(_array_of(_field("int32"))), "arrays of arrays"),
    ("struct", _field("struct"), "'struct'"),
]


@pytest.mark.parametrize(
    ("field", "words"), [pytest.param(f, w, id=pg) for pg, f, w in UNSUPPORTED]
)
def test_unsupported_types_are_refused_by_name(field: dict[str, Any], words: str) -> None:
    with pytest.raises(UnsupportedType) as raised:
        column_type(field)
    message = str(raised.value)
    assert "'c'" in message and words in message
    assert f"Connect type {field['type']!r}" in message
    assert isinstance(raised.value, ValueError)


# -- TOAST placeholders -----------------------------------------------------------

# The placeholder's bytes as Java's (int) b of each: what Debezium puts in an int4[],
# int8[] or date[] column
PLACEHOLDER_NUMBERS = [
    95, 95, 100, 101, 98, 101, 122, 105, 117, 109, 95, 117, 110, 97,
    118, 97, 105, 108, 97, 98, 108, 101, 95, 118, 97, 108, 117, 101,
]  # fmt: skip
PLACEHOLDER_BASE64 = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="
PLACEHOLDER_UUID = "b68a35a7-17ad-35b3-af2a-ae46edb4545a"  # UUID.nameUUIDFromBytes (DBZ-6720)

# codec, the value as Debezium's JSON carries it (None: no placeholder), its row-map text
PLACEHOLDERS: list[tuple[str, Any, tuple[str, ...]]] = [
    ("string", TOAST_PLACEHOLDER, (TOAST_PLACEHOLDER,)),
    ("json", TOAST_PLACEHOLDER, (TOAST_PLACEHOLDER,)),
    ("uuid", TOAST_PLACEHOLDER, (TOAST_PLACEHOLDER,)),
    ("bytes", PLACEHOLDER_BASE64, (PLACEHOLDER_BASE64,)),
    ("array:string", [TOAST_PLACEHOLDER], ('["__debezium_unavailable_value"]',)),
    ("array:json", [TOAST_PLACEHOLDER], ('["__debezium_unavailable_value"]',)),
    ("array:int", PLACEHOLDER_NUMBERS, ("[" + ",".join(map(str, PLACEHOLDER_NUMBERS)) + "]",)),
    ("array:bigint", PLACEHOLDER_NUMBERS, ("[" + ",".join(map(str, PLACEHOLDER_NUMBERS)) + "]",)),
    ("array:date", PLACEHOLDER_NUMBERS, ("[" + ",".join(map(str, PLACEHOLDER_NUMBERS)) + "]",)),
    ("array:bytes", [PLACEHOLDER_BASE64], (f'["{PLACEHOLDER_BASE64}"]',)),
    ("array:uuid", [PLACEHOLDER_UUID], (f'["{PLACEHOLDER_UUID}"]',)),
    # never TOASTed (fixed width), or dropped to null by Debezium (debezium/dbz#2418)
    ("int", None, ()),
    ("decimal", None, ()),
    ("variable_decimal", None, ()),
    ("micro_timestamp", None, ()),
    ("date", None, ()),
    ("array:decimal", None, ()),
    ("array:float", None, ()),
    ("array:boolean", None, ()),
]


@pytest.mark.parametrize(("codec", "texts"), [(c, t) for c, _, t in PLACEHOLDERS])
def test_placeholder_texts(codec: str, texts: tuple[str, ...]) -> None:
    assert placeholder_texts(codec) == texts


def test_placeholder_bytes_are_the_placeholder() -> None:
    assert base64.b64decode(PLACEHOLDER_BASE64) == TOAST_PLACEHOLDER.encode()
    assert bytes(PLACEHOLDER_NUMBERS) == TOAST_PLACEHOLDER.encode()


def test_placeholders_as_the_row_map_holds_them(spark: Any) -> None:
    """Debezium's placeholder values, parsed like a row image, are exactly those texts."""
    from pyspark.sql import functions as F

    from jobs.json_text import JSON_MAP, JSON_OPTIONS

    emitted = [(codec, value) for codec, value, _ in PLACEHOLDERS if value is not None]
    rows = [(codec, json.dumps({"c": value})) for codec, value in emitted]
    frame = spark.createDataFrame(rows, "codec string, image string")
    texts = frame.select("codec", F.from_json("image", JSON_MAP, JSON_OPTIONS)["c"].alias("t"))
    assert {(r.codec, r.t) for r in texts.collect()} == {
        (codec, placeholder_texts(codec)[0]) for codec, _ in emitted
    }


def test_int_array_placeholder_is_a_valid_value(spark: Any) -> None:
    """Why placeholders are matched on the raw text: int4[]'s decodes as a list of numbers."""
    from pyspark.sql import functions as F

    from jobs.debezium_decode import decode

    (text,) = placeholder_texts("array:int")
    frame = spark.createDataFrame([(text,)], "raw string")
    (row,) = frame.select(decode(F.col("raw"), ColumnType("array<int>", "array:int"))).collect()
    assert row[0] == PLACEHOLDER_NUMBERS


# -- decode -----------------------------------------------------------------------


def _unscaled(number: int, length: int | None = None) -> str:
    """Base64 of ``number``'s two's-complement big-endian bytes (minimal, or ``length``)."""
    size = length or (number.bit_length() + 8) // 8
    return base64.b64encode(number.to_bytes(size, "big", signed=True)).decode()


def _variable(scale: Any, number: int) -> dict[str, Any]:
    return {"scale": scale, "value": _unscaled(number)}


NINES_38 = 10**38 - 1

INT = ColumnType("int", "int")
BIGINT = ColumnType("bigint", "bigint")
BOOLEAN = ColumnType("boolean", "boolean")
FLOAT = ColumnType("float", "float")
DOUBLE = ColumnType("double", "double")
STRING = ColumnType("string", "string")
JSON_TEXT = ColumnType("string", "json")
UUID = ColumnType("string", "uuid")
BYTES = ColumnType("binary", "bytes")
PRICE = ColumnType("decimal(10,2)", "decimal")
WHOLE_38 = ColumnType("decimal(38,0)", "decimal")
TINY = ColumnType("decimal(5,5)", "decimal")
VARIABLE = ColumnType("string", "variable_decimal")
DATE = ColumnType("date", "date")
MICRO_TS = ColumnType("timestamp_ntz", "micro_timestamp")
MILLI_TS = ColumnType("timestamp_ntz", "milli_timestamp")
ZONED_TS = ColumnType("timestamp", "zoned_timestamp")
MICRO_TIME = ColumnType("bigint", "micro_time")
MILLI_TIME = ColumnType("bigint", "milli_time")
ZONED_TIME = ColumnType("bigint", "zoned_time")
DURATION = ColumnType("bigint", "micro_duration")
INTS = ColumnType("array<int>", "array:int")
TEXTS = ColumnType("array<string>", "array:string")
PRICES = ColumnType("array<decimal(4,2)>", "array:decimal")
VARIABLES = ColumnType("array<string>", "array:variable_decimal")
INSTANTS = ColumnType("array<timestamp>", "array:zoned_timestamp")
DATES = ColumnType("array<date>", "array:date")


@dataclass(frozen=True)
class Case:
    """One value of a column and what the table holds for it (or MISFIT)."""

    column: ColumnType
    value: Any
    expected: Any


CASES = [
    # integers: JSON integers, or their exact text
    Case(INT, 42, 42),
    Case(INT, -(2**31), -(2**31)),
    Case(INT, 2**31, MISFIT),
    Case(INT, "17", 17),
    Case(INT, 1.0, MISFIT),
    Case(INT, "1e3", MISFIT),
    Case(INT, " 7", MISFIT),
    Case(INT, None, None),
    Case(BIGINT, 2**63 - 1, 2**63 - 1),
    Case(BIGINT, 2**63, MISFIT),
    Case(BOOLEAN, True, True),
    Case(BOOLEAN, "false", False),
    Case(BOOLEAN, 1, MISFIT),
    Case(BOOLEAN, "yes", MISFIT),
    # floats: JSON numbers and the JsonConverter's NaN/Infinity texts
    Case(DOUBLE, 0.1, 0.1),
    Case(DOUBLE, -2.5e-10, -2.5e-10),
    Case(DOUBLE, "NaN", math.nan),
    Case(DOUBLE, "-Infinity", -math.inf),
    Case(DOUBLE, 7, 7.0),
    Case(DOUBLE, "1.5d", MISFIT),
    Case(DOUBLE, "abc", MISFIT),
    Case(DOUBLE, "", MISFIT),
    Case(DOUBLE, True, MISFIT),
    Case(FLOAT, 0.5, 0.5),
    Case(FLOAT, 0.1, 0.10000000149011612),
    Case(FLOAT, 1e39, MISFIT),
    Case(FLOAT, "Infinity", math.inf),
    # strings
    Case(STRING, "héllo", "héllo"),
    Case(STRING, "", ""),
    Case(JSON_TEXT, '{"a": [1, 2]}', '{"a": [1, 2]}'),
    Case(UUID, "b68a35a7-17ad-35b3-af2a-ae46edb4545a", "b68a35a7-17ad-35b3-af2a-ae46edb4545a"),
    Case(UUID, "B68A35A7-17AD-35B3-AF2A-AE46EDB4545A", "b68a35a7-17ad-35b3-af2a-ae46edb4545a"),
    Case(UUID, "b68a35a717ad35b3af2aae46edb4545a", MISFIT),
    Case(UUID, "{b68a35a7-17ad-35b3-af2a-ae46edb4545a}", MISFIT),
    # bytea: canonical base64
    Case(BYTES, "AQID", b"\x01\x02\x03"),
    Case(BYTES, "AP8=", b"\x00\xff"),
    Case(BYTES, "", b""),
    Case(BYTES, "AP8", MISFIT),
    Case(BYTES, "AP 8=", MISFIT),
    Case(BYTES, "AP9=", MISFIT),
    Case(BYTES, "A*8=", MISFIT),
    # Connect Decimal: unscaled two's complement, the column's scale
    Case(PRICE, "MDk=", Decimal("123.45")),
    Case(PRICE, "z8c=", Decimal("-123.45")),
    Case(PRICE, "AA==", Decimal("0.00")),
    Case(PRICE, "/w==", Decimal("-0.01")),
    Case(PRICE, "AQ==", Decimal("0.01")),
    Case(PRICE, _unscaled(9_999_999_999), Decimal("99999999.99")),
    Case(PRICE, _unscaled(10_000_000_000), MISFIT),
    Case(PRICE, _unscaled(-10_000_000_000), MISFIT),
    Case(PRICE, _unscaled(5, 20), Decimal("0.05")),
    Case(PRICE, _unscaled(-5, 20), Decimal("-0.05")),
    Case(PRICE, "", MISFIT),
    Case(PRICE, "MDk", MISFIT),
    Case(PRICE, 12345, MISFIT),
    Case(WHOLE_38, _unscaled(NINES_38), Decimal(NINES_38)),
    Case(WHOLE_38, _unscaled(-NINES_38), Decimal(-NINES_38)),
    Case(WHOLE_38, _unscaled(10**38), MISFIT),
    Case(WHOLE_38, _unscaled(-(10**38)), MISFIT),
    Case(WHOLE_38, _unscaled(2**127 - 1), MISFIT),
    Case(WHOLE_38, _unscaled(-(2**127)), MISFIT),
    Case(WHOLE_38, _unscaled(2**64), Decimal("18446744073709551616")),
    Case(WHOLE_38, _unscaled(-(2**64) - 1), Decimal("-18446744073709551617")),
    Case(TINY, "MDk=", Decimal("0.12345")),
    Case(TINY, _unscaled(100_000), MISFIT),
    # VariableScaleDecimal: the exact plain text
    Case(VARIABLE, _variable(2, 150), "1.50"),
    Case(VARIABLE, _variable(0, -7), "-7"),
    Case(VARIABLE, _variable(5, -3), "-0.00003"),
    Case(VARIABLE, _variable(3, 0), "0.000"),
    Case(VARIABLE, _variable(40, NINES_38), "0.00" + "9" * 38),
    Case(VARIABLE, _variable(0, 10**38), MISFIT),
    Case(VARIABLE, _variable(-1, 5), MISFIT),
    Case(VARIABLE, _variable("x", 5), MISFIT),
    Case(VARIABLE, {"scale": 1}, MISFIT),
    Case(VARIABLE, {"scale": 1, "value": "AQ==", "extra": 1}, MISFIT),
    Case(VARIABLE, "1.5", MISFIT),
    Case(VARIABLE, _variable("2", 150), "1.50"),
    Case(VARIABLE, {"scale": 1, "value": _unscaled(-15, 24)}, "-1.5"),
    Case(VARIABLE, json.dumps(_variable(1, 15)), "1.5"),
    Case(VARIABLE, {"scale": 1, "value": None}, MISFIT),
    Case(VARIABLE, [1, 5], MISFIT),
    # dates: days since the epoch, year 1 to 9999
    Case(DATE, 0, date(1970, 1, 1)),
    Case(DATE, -1, date(1969, 12, 31)),
    Case(DATE, -25_567, date(1900, 1, 1)),
    Case(DATE, -719_162, date(1, 1, 1)),
    Case(DATE, -719_163, MISFIT),
    Case(DATE, 2_932_896, date(9999, 12, 31)),
    Case(DATE, 2_932_897, MISFIT),
    Case(DATE, "2024-01-01", MISFIT),
    # timestamps without a zone (timestamp_ntz)
    Case(MICRO_TS, 1_700_000_000_123_456, datetime(2023, 11, 14, 22, 13, 20, 123456)),
    Case(MICRO_TS, -1, datetime(1969, 12, 31, 23, 59, 59, 999999)),
    Case(MICRO_TS, -2_208_988_800_000_001, datetime(1899, 12, 31, 23, 59, 59, 999999)),
    Case(MICRO_TS, -62_135_596_800_000_000, datetime(1, 1, 1)),
    Case(MICRO_TS, -62_135_596_800_000_001, MISFIT),
    Case(MICRO_TS, 253_402_300_799_999_999, datetime(9999, 12, 31, 23, 59, 59, 999999)),
    Case(MICRO_TS, 253_402_300_800_000_000, MISFIT),
    Case(MICRO_TS, 9_223_372_036_825_200_000, MISFIT),  # Debezium's 'infinity'
    Case(MICRO_TS, "2024-01-01T00:00:00", MISFIT),
    Case(MILLI_TS, 1_700_000_000_123, datetime(2023, 11, 14, 22, 13, 20, 123000)),
    Case(MILLI_TS, -62_135_596_800_000, datetime(1, 1, 1)),
    Case(MILLI_TS, -62_135_596_800_001, MISFIT),
    Case(MILLI_TS, 253_402_300_800_000, MISFIT),
    # timestamptz: ZonedTimestamp text, read as an instant
    Case(ZONED_TS, "2023-11-14T22:13:20.123456Z", datetime(2023, 11, 14, 22, 13, 20, 123456, UTC)),
    Case(ZONED_TS, "1969-07-20T20:17:40+02:00", datetime(1969, 7, 20, 18, 17, 40, tzinfo=UTC)),
    Case(ZONED_TS, "2023-11-14T22:13:20", MISFIT),
    Case(ZONED_TS, "2023-11-14T22:13:20.1234567Z", MISFIT),
    Case(ZONED_TS, "infinity", MISFIT),
    Case(ZONED_TS, "2023-11-14T22:13:20+18:01", MISFIT),
    Case(ZONED_TS, "0001-01-01T00:00:00+01:00", MISFIT),
    Case(ZONED_TS, "2023-02-30T00:00:00Z", MISFIT),
    # times of day, as microseconds since midnight
    Case(MICRO_TIME, 49_530_123_456, 49_530_123_456),
    Case(MICRO_TIME, 86_400_000_000, 86_400_000_000),
    Case(MICRO_TIME, 86_400_000_001, MISFIT),
    Case(MICRO_TIME, -1, MISFIT),
    Case(MILLI_TIME, 49_530_123, 49_530_123_000),
    Case(MILLI_TIME, 86_400_001, MISFIT),
    Case(MILLI_TIME, "12:00", MISFIT),
    Case(ZONED_TIME, "13:45:30.123456Z", 49_530_123_456),
    Case(ZONED_TIME, "13:45:30.5Z", 49_530_500_000),
    Case(ZONED_TIME, "00:00:00Z", 0),
    Case(ZONED_TIME, "24:00:00Z", 86_400_000_000),
    Case(ZONED_TIME, "24:00:01Z", MISFIT),
    Case(ZONED_TIME, "13:45:30+01:00", MISFIT),
    Case(ZONED_TIME, "13:45Z", MISFIT),
    Case(ZONED_TIME, "13:45:30.1234567Z", MISFIT),
    Case(ZONED_TIME, "13:60:00Z", MISFIT),
    # interval: MicroDuration
    Case(DURATION, 2_629_800_000_000, 2_629_800_000_000),
    Case(DURATION, -1, -1),
    Case(DURATION, "P1M", MISFIT),
    # arrays: null elements stay null, one misfit element makes the value a misfit
    Case(INTS, [1, None, -3], [1, None, -3]),
    Case(INTS, [], []),
    Case(INTS, [1, "x"], MISFIT),
    Case(INTS, [1, 2**31], MISFIT),
    Case(INTS, [1.5], MISFIT),
    Case(INTS, "[1,2] tail", MISFIT),
    Case(INTS, {"a": 1}, MISFIT),
    Case(INTS, "1", MISFIT),
    Case(TEXTS, ["a", None, "", 'q"uote'], ["a", None, "", 'q"uote']),
    Case(TEXTS, "not an array", MISFIT),
    Case(PRICES, ["AJY=", None, "/w=="], [Decimal("1.50"), None, Decimal("-0.01")]),
    Case(PRICES, ["AJY=", _unscaled(10_000)], MISFIT),
    Case(VARIABLES, [_variable(1, 15), None], ["1.5", None]),
    Case(
        INSTANTS,
        ["2023-11-14T22:13:20Z", None],
        [datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), None],
    ),
    Case(DATES, [-1, 0], [date(1969, 12, 31), date(1970, 1, 1)]),
    Case(DATES, [-719_163], MISFIT),
]


def _comparable(column: Any, spark_type: str) -> Any:
    """A Spark value the driver reads back exactly: a timestamp as its epoch micros."""
    from pyspark.sql import functions as F

    if spark_type == "timestamp":
        return F.unix_micros(column)
    if spark_type == "array<timestamp>":
        return F.transform(column, F.unix_micros)
    return column


def _read_back(value: Any, spark_type: str) -> Any:
    """The collected value as pyiceberg/pyarrow give it (aware UTC timestamps, bytes)."""
    if value is None:
        return None
    if spark_type.startswith("array<"):
        inner = spark_type.removeprefix("array<").removesuffix(">")
        return [_read_back(v, inner) for v in value]
    if spark_type == "timestamp":
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)
    if spark_type == "binary":
        return bytes(value)
    return value


def _same(left: Any, right: Any) -> bool:
    """Equal values of the same type, NaN equal to NaN and a Decimal's scale compared."""
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_same, left, right))
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    if isinstance(left, Decimal) and isinstance(right, Decimal):
        return left.as_tuple() == right.as_tuple()
    return type(left) is type(right) and left == right


@pytest.fixture(scope="module")
def decoded(spark: Any) -> dict[int, tuple[Any, bool]]:
    """``{case index: (value, misfit)}``, every column type decoding every case's text.

    One DataFrame holds all cases, and every decoder runs on every row: a text of
    any kind, wrong for most of the types, never fails the batch.
    """
    from pyspark.sql import functions as F

    from jobs.debezium_decode import decode, misfit
    from jobs.json_text import JSON_MAP, JSON_OPTIONS

    columns = list(dict.fromkeys(case.column for case in CASES))
    rows = [(i, json.dumps({"c": case.value})) for i, case in enumerate(CASES)]
    frame = spark.createDataFrame(rows, "i int, image string")
    raw = F.from_json("image", JSON_MAP, JSON_OPTIONS)["c"]
    frame = frame.select("i", raw.alias("raw"))
    typed = frame.select(
        "i", "raw", *[decode(F.col("raw"), c).alias(f"t{n}") for n, c in enumerate(columns)]
    )
    for n, column in enumerate(columns):
        assert typed.schema[f"t{n}"].dataType.simpleString() == column.spark_type
    out = typed.select(
        "i",
        *[
            item
            for n, column in enumerate(columns)
            for item in (
                _comparable(F.col(f"t{n}"), column.spark_type).alias(f"v{n}"),
                misfit(F.col("raw"), F.col(f"t{n}")).alias(f"m{n}"),
            )
        ],
    )
    results = {}
    for row in out.collect():
        n = columns.index(CASES[row.i].column)
        column = columns[n]
        results[row.i] = (_read_back(row[f"v{n}"], column.spark_type), row[f"m{n}"])
    return results


@pytest.mark.parametrize(
    "index",
    range(len(CASES)),
    ids=[f"{c.column.codec}-{json.dumps(c.value)[:40]}" for c in CASES],
)
def test_decode(decoded: dict[int, tuple[Any, bool]], index: int) -> None:
    case = CASES[index]
    value, is_misfit = decoded[index]
    fits, oracle = expected_value(case.column.codec, case.column.spark_type, case.value)
    if case.expected is MISFIT:
        assert is_misfit and value is None
        assert not fits
    else:
        assert not is_misfit
        assert _same(value, case.expected), (value, case.expected)
        assert fits and _same(oracle, case.expected), (oracle, case.expected)
