"""Faithful Debezium change events for any Postgres table, deterministic by seed.

:mod:`cdc_iceberg.generator` simulates one hand-written table; this module does the
same for any :class:`TableSpec`: composite primary keys, tables without one, and
every common Postgres type, encoded exactly as the Debezium 3.x Postgres connector
with the Kafka Connect ``JsonConverter`` writes them under the connector's default
settings (``decimal.handling.mode=precise``, ``time.precision.mode=adaptive``,
``interval.handling.mode=numeric``, ``binary.handling.mode=bytes``,
``unavailable.value.placeholder=__debezium_unavailable_value``,
``tombstones.on.delete=true``) and the worker's default ``SimpleHeaderConverter``.

Where each fact comes from (Debezium sources unless noted):

* Column schemas: ``PostgresValueConverter.schemaBuilder`` and the builders in
  ``io.debezium.data`` / ``io.debezium.time`` / ``SchemaFactory``; the JSON layout of a
  schema (``type``, ``items``/``fields``, ``optional``, ``name``, ``version``, ``doc``,
  ``parameters``, then ``field``) is ``JsonConverter.asJsonSchema`` in Apache Kafka.
  ``money`` is ``Decimal.builder(money.fraction.digits)``: scale ``"2"`` and, unlike
  ``numeric(p,s)``, no ``connect.decimal.precision`` parameter.
* Values: ``Decimal`` is the base64 of ``BigInteger.toByteArray()`` of the unscaled
  value; ``numeric`` without a type modifier is a ``VariableScaleDecimal`` struct whose
  value is ``stripTrailingZeros()``-ed (scale never negative); ``timestamptz`` is
  printed in UTC with exactly as many fraction digits as the column's precision
  (6 when unspecified: the connector's own test expects ``…30.000000Z``), and with
  ``ISO_OFFSET_DATE_TIME`` (no fraction when zero) for ``timestamptz(0)``;
  ``timetz`` is ``ISO_OFFSET_TIME`` in UTC (fraction digits trimmed, none when zero);
  ``interval`` is ``MicroDuration.durationMicros`` with 365.25 / 12 days per month,
  computed in double precision and truncated to a long, as the connector does;
  ``char(n)`` keeps Postgres' blank padding; ``jsonb`` is Postgres' normalised text
  (keys by length then bytes, ``", "`` and ``": "`` separators), ``json`` the text as
  stored (here: compact).
* TOAST: an unchanged out-of-line value under the default replica identity becomes
  ``UnchangedToastedPlaceholder``'s value for the column's type: the placeholder text
  for text-like columns, its bytes (so base64 in JSON) for ``bytea``, a one-element
  list for ``text[]``/``varchar[]``/``char[]``/``json[]``/``jsonb[]``/``bytea[]``, one
  number per placeholder byte for ``integer[]``/``date[]``/``bigint[]``, and
  ``UUID.nameUUIDFromBytes(placeholder)`` for ``uuid[]`` (DBZ-4941, DBZ-5936,
  DBZ-6122, DBZ-6720). Any other array type fails the Struct's validation, and with
  the default ``event.converting.failure.handling.mode=warn`` the column is left null
  (described in debezium/debezium PR 7815, still open, which would give every array
  an element-typed placeholder).
* Primary-key changes: ``RelationalChangeRecordEmitter`` emits a delete of the old
  key with header ``__debezium.newkey`` and a create of the new key with header
  ``__debezium.oldkey``; ``EventDispatcher`` copies the delete's headers onto its
  tombstone. Header values are the key Struct as ``Values.convertToString`` prints it
  (``SimpleHeaderConverter``): ``{"order_id":1001,"line_no":2}``, strings quoted with
  only ``\\`` and ``"`` escaped, decimals as ``BigDecimal.toString()``.
* Tables without a primary key have a null Kafka key. Postgres refuses UPDATE and
  DELETE on such a published table under the default replica identity, so the
  simulation treats them as ``REPLICA IDENTITY FULL``: full before images, and no
  TOAST placeholders (the connector fills them from the old tuple, DBZ-7193).

The envelope's ``source`` and ``transaction`` schemas are abbreviated exactly as in
:mod:`cdc_iceberg.generator`, so both generators feed the same readers.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import ipaddress
import json
import math
import random
import re
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import TYPE_CHECKING, Any, Literal

from cdc_iceberg.generator import (
    DEBEZIUM_VERSION,
    TOAST_PLACEHOLDER,
    SimulatedTable,
    partition_for,
    send_records,
)

if TYPE_CHECKING:
    from cdc_iceberg.settings import Settings

EventFormat = Literal["envelope", "flattened"]

OLDKEY_HEADER = "__debezium.oldkey"
NEWKEY_HEADER = "__debezium.newkey"

# labels of the enum types a ``pg_type`` of ``enum:<name>`` refers to, in sort order
ENUM_TYPES: dict[str, tuple[str, ...]] = {"mood": ("sad", "ok", "happy")}

DECIMAL = "org.apache.kafka.connect.data.Decimal"
VARIABLE_SCALE_DECIMAL = "io.debezium.data.VariableScaleDecimal"
MONEY_FRACTION_DIGITS = 2  # the connector's money.fraction.digits default

_PLACEHOLDER_BYTES = TOAST_PLACEHOLDER.encode()
# UUID.nameUUIDFromBytes(placeholder): the element of a toasted uuid[] (DBZ-6720)
_PLACEHOLDER_UUID = str(
    uuid.UUID(bytes=hashlib.md5(_PLACEHOLDER_BYTES, usedforsecurity=False).digest(), version=3)
)
# MicroDuration.DAYS_PER_MONTH_AVG
_DAYS_PER_MONTH = 365.25 / 12.0
_EPOCH_DATE = date(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1)
# numeric(38,10) at full precision needs more digits than Decimal's default context
_DECIMAL = Context(prec=200)


class _Unchanged:
    """The marker of an unchanged TOASTed value in a simulated row image."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


# put in an ``after`` image where Postgres sent no value for an unchanged TOASTed column
UNCHANGED_TOAST = _Unchanged()


# -- table descriptions --------------------------------------------------------


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a Postgres table: its name, type (as Postgres spells it), nullability."""

    name: str
    pg_type: str
    nullable: bool = True


@dataclass(frozen=True)
class TableSpec:
    """A Postgres table: its columns in order and its primary key (empty: none)."""

    schema: str
    table: str
    columns: tuple[ColumnSpec, ...]
    key: tuple[str, ...]

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.qualified}: duplicate column names")
        missing = [k for k in self.key if k not in names]
        if missing or len(set(self.key)) != len(self.key):
            raise ValueError(f"{self.qualified}: bad primary key {self.key}")
        for column in self.columns:
            _pg_type(column.pg_type)  # refuses an unknown type when the table is described

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def column(self, name: str) -> ColumnSpec:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @property
    def key_columns(self) -> tuple[ColumnSpec, ...]:
        return tuple(self.column(name) for name in self.key)

    def topic(self, prefix: str = "neuronews") -> str:
        """The topic Debezium writes the table's changes to: ``<prefix>.<schema>.<table>``."""
        return f"{prefix}.{self.schema}.{self.table}"


@dataclass(frozen=True)
class PgInterval:
    """A Postgres ``interval``: months, days and microseconds are kept apart, as Postgres does."""

    months: int = 0
    days: int = 0
    micros: int = 0


# -- Postgres types --------------------------------------------------------------


@dataclass(frozen=True)
class _PgType:
    base: str
    precision: int | None = None  # numeric(p,s) p; time/timestamp precision; varchar/char length
    scale: int | None = None
    enum_name: str = ""
    labels: tuple[str, ...] = ()
    element: _PgType | None = None  # set for arrays

    @property
    def is_array(self) -> bool:
        return self.element is not None


_ALIASES = {
    "int": "integer",
    "int4": "integer",
    "int2": "smallint",
    "int8": "bigint",
    "bool": "boolean",
    "float4": "real",
    "float8": "double precision",
    "decimal": "numeric",
    "character varying": "varchar",
    "character": "char",
    "bpchar": "char",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "time without time zone": "time",
    "time with time zone": "timetz",
}
_PLAIN = frozenset(
    {
        "smallint",
        "integer",
        "bigint",
        "boolean",
        "real",
        "double precision",
        "money",
        "date",
        "interval",
        "uuid",
        "json",
        "jsonb",
        "xml",
        "text",
        "bytea",
        "inet",
        "cidr",
        "macaddr",
    }
)
_TEMPORAL = frozenset({"time", "timetz", "timestamp", "timestamptz"})
_TYPE = re.compile(r"([a-z][a-z0-9 ]*?)\s*(?:\(\s*([0-9 ,]*?)\s*\))?")
_ENUM = re.compile(r"enum:([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?")
_INT_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}
# the connector's array schemas leave out these element types, so it drops such columns
_UNSUPPORTED_ARRAY_ELEMENTS = frozenset({"money", "interval", "xml"})


@functools.cache
def _pg_type(text: str) -> _PgType:
    """Parse a Postgres type name (``numeric(10,2)``, ``text[]``, ``enum:mood``)."""
    text = text.strip()
    if text.endswith("[]"):
        element = _pg_type(text[:-2])
        if element.is_array:
            raise ValueError(f"{text!r}: only one-dimensional arrays are described")
        if element.base in _UNSUPPORTED_ARRAY_ELEMENTS:
            raise ValueError(f"{text!r}: Debezium has no schema for this array type")
        return _PgType("array", element=element)
    enum = _ENUM.fullmatch(text)
    if enum:
        name, labels = enum.group(1), enum.group(2)
        if labels is not None:
            values = tuple(label.strip() for label in labels.split(","))
        elif name in ENUM_TYPES:
            values = ENUM_TYPES[name]
        else:
            raise ValueError(f"{text!r}: unknown enum; give its labels as enum:{name}(a,b,c)")
        return _PgType("enum", enum_name=name, labels=values)
    match = _TYPE.fullmatch(re.sub(r"\s+", " ", text.lower()))
    if not match:
        raise ValueError(f"{text!r}: not a Postgres type name")
    base = _ALIASES.get(match.group(1), match.group(1))
    args = [int(a) for a in match.group(2).split(",")] if match.group(2) else []
    if base == "numeric":
        if len(args) > 2 or (args and not 1 <= args[0] <= 1000):
            raise ValueError(f"{text!r}: bad numeric precision")
        if not args:
            return _PgType("numeric")
        scale = args[1] if len(args) == 2 else 0
        if not 0 <= scale <= args[0]:
            raise ValueError(f"{text!r}: bad numeric scale")
        return _PgType("numeric", precision=args[0], scale=scale)
    if base in ("varchar", "char"):
        if len(args) > 1 or (args and args[0] < 1):
            raise ValueError(f"{text!r}: bad length")
        length = args[0] if args else (1 if base == "char" else None)
        return _PgType(base, precision=length)
    if base in _TEMPORAL:
        if len(args) > 1 or (args and not 0 <= args[0] <= 6):
            raise ValueError(f"{text!r}: bad precision")
        return _PgType(base, precision=args[0] if args else 6)
    if base in _PLAIN and not args:
        return _PgType(base)
    raise ValueError(f"{text!r}: not a supported Postgres type")


def _numeric_bounds(t: _PgType) -> tuple[int, int]:
    assert t.precision is not None and t.scale is not None
    return t.precision, t.scale


# -- Kafka Connect schemas ---------------------------------------------------------


def _schema(
    kind: str,
    optional: bool,
    *,
    name: str | None = None,
    version: int | None = None,
    doc: str | None = None,
    parameters: Mapping[str, str] | None = None,
    items: dict[str, Any] | None = None,
    fields: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    # key order as JsonConverter.asJsonSchema writes it
    schema: dict[str, Any] = {"type": kind}
    if items is not None:
        schema["items"] = items
    if fields is not None:
        schema["fields"] = fields
    schema["optional"] = optional
    if name is not None:
        schema["name"] = name
    if version is not None:
        schema["version"] = version
    if doc is not None:
        schema["doc"] = doc
    if parameters is not None:
        schema["parameters"] = dict(parameters)
    return schema


def _type_schema(t: _PgType, optional: bool) -> dict[str, Any]:
    """The Connect schema of one Postgres type (PostgresValueConverter.schemaBuilder)."""
    base = t.base
    simple = {
        "smallint": "int16",
        "integer": "int32",
        "bigint": "int64",
        "boolean": "boolean",
        "real": "float",
        "double precision": "double",
        "text": "string",
        "varchar": "string",
        "char": "string",
        "inet": "string",
        "cidr": "string",
        "macaddr": "string",
        "bytea": "bytes",
    }
    if base in simple:
        return _schema(simple[base], optional)
    if base == "numeric":
        if t.precision is None:
            scale = _schema("int32", False) | {"field": "scale"}
            value = _schema("bytes", False) | {"field": "value"}
            return _schema(
                "struct",
                optional,
                fields=[scale, value],
                name=VARIABLE_SCALE_DECIMAL,
                version=1,
                doc="Variable scaled decimal",
            )
        precision, scale_ = _numeric_bounds(t)
        return _schema(
            "bytes",
            optional,
            name=DECIMAL,
            version=1,
            parameters={"scale": str(scale_), "connect.decimal.precision": str(precision)},
        )
    if base == "money":
        return _schema(
            "bytes",
            optional,
            name=DECIMAL,
            version=1,
            parameters={"scale": str(MONEY_FRACTION_DIGITS)},
        )
    if base == "date":
        return _schema("int32", optional, name="io.debezium.time.Date", version=1)
    if base == "time":
        # adaptive: time(0..3) in milliseconds, time and time(4..6) in microseconds
        if (t.precision or 0) <= 3:
            return _schema("int32", optional, name="io.debezium.time.Time", version=1)
        return _schema("int64", optional, name="io.debezium.time.MicroTime", version=1)
    if base == "timestamp":
        if (t.precision or 0) <= 3:
            return _schema("int64", optional, name="io.debezium.time.Timestamp", version=1)
        return _schema("int64", optional, name="io.debezium.time.MicroTimestamp", version=1)
    if base == "timetz":
        return _schema("string", optional, name="io.debezium.time.ZonedTime", version=1)
    if base == "timestamptz":
        return _schema("string", optional, name="io.debezium.time.ZonedTimestamp", version=1)
    if base == "interval":
        return _schema("int64", optional, name="io.debezium.time.MicroDuration", version=1)
    if base == "uuid":
        return _schema("string", optional, name="io.debezium.data.Uuid", version=1)
    if base in ("json", "jsonb"):
        return _schema("string", optional, name="io.debezium.data.Json", version=1)
    if base == "xml":
        return _schema("string", optional, name="io.debezium.data.Xml", version=1)
    if base == "enum":
        return _schema(
            "string",
            optional,
            name="io.debezium.data.Enum",
            version=1,
            parameters={"allowed": ",".join(t.labels)},
        )
    if base == "array":
        assert t.element is not None
        # element schemas are optional, except enum elements: that branch of the connector
        # builds Enum.builder(...) without .optional()
        element = _type_schema(t.element, t.element.base != "enum")
        return _schema("array", optional, items=element)
    raise ValueError(f"no Connect schema for {base}")


def connect_field(column: ColumnSpec, *, in_key: bool = False) -> dict[str, Any]:
    """The field of the row (or key) schema Debezium writes for ``column``.

    Key columns are never optional (Postgres makes primary-key columns NOT NULL).
    """
    optional = column.nullable and not in_key
    return _type_schema(_pg_type(column.pg_type), optional) | {"field": column.name}


def row_schema(spec: TableSpec, prefix: str = "neuronews") -> dict[str, Any]:
    """The ``<prefix>.<schema>.<table>.Value`` struct of the before and after images."""
    return {
        "type": "struct",
        "fields": [connect_field(c, in_key=c.name in spec.key) for c in spec.columns],
        "optional": True,
        "name": f"{spec.topic(prefix)}.Value",
    }


def key_schema(spec: TableSpec, prefix: str = "neuronews") -> dict[str, Any] | None:
    """The ``<prefix>.<schema>.<table>.Key`` struct; None for a table without a primary key."""
    if not spec.key:
        return None
    return {
        "type": "struct",
        "fields": [connect_field(c, in_key=True) for c in spec.key_columns],
        "optional": False,
        "name": f"{spec.topic(prefix)}.Key",
    }


def envelope_schema(spec: TableSpec, prefix: str = "neuronews") -> dict[str, Any]:
    """The ``.Envelope`` struct, laid out as :func:`cdc_iceberg.generator.envelope_schema`."""
    row = row_schema(spec, prefix)
    return {
        "type": "struct",
        "fields": [
            dict(row, field="before"),
            dict(row, field="after"),
            {
                "type": "struct",
                "fields": [],
                "optional": False,
                "name": "io.debezium.connector.postgresql.Source",
                "field": "source",
            },
            {"type": "struct", "fields": [], "optional": True, "field": "transaction"},
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
            {"type": "int64", "optional": True, "field": "ts_us"},
            {"type": "int64", "optional": True, "field": "ts_ns"},
        ],
        "optional": False,
        "name": f"{spec.topic(prefix)}.Envelope",
        "version": 2,
    }


# -- values ------------------------------------------------------------------------


def _unscaled_bytes(unscaled: int) -> bytes:
    """``BigInteger.toByteArray()``: minimal big-endian two's complement, at least one byte."""
    bits = unscaled.bit_length() if unscaled >= 0 else (~unscaled).bit_length()
    return unscaled.to_bytes(bits // 8 + 1, "big", signed=True)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _fixed_decimal(value: Any, scale: int, precision: int | None) -> Decimal:
    """The value as Postgres stores it at ``scale`` (it rounds half away from zero)."""
    if isinstance(value, float | bool):
        raise TypeError(f"decimal columns take Decimal or int, not {type(value).__name__}")
    number = Decimal(value).quantize(Decimal(1).scaleb(-scale), ROUND_HALF_UP, _DECIMAL)
    if not number.is_finite():
        raise ValueError("NaN and infinities need decimal.handling.mode=string")
    if precision is not None and len(number.as_tuple().digits) > precision and number != 0:
        raise ValueError(f"{value} does not fit numeric({precision},{scale})")
    return number


def _unscaled(number: Decimal) -> int:
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    return int(number.scaleb(-exponent, _DECIMAL))


def _variable_decimal(value: Any) -> tuple[int, int]:
    """(scale, unscaled) after ``stripTrailingZeros()`` and a floor of scale 0."""
    if isinstance(value, float | bool):
        raise TypeError("decimal columns take Decimal or int")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError("NaN and infinities need decimal.handling.mode=string")
    number = number.normalize(_DECIMAL)
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent > 0:
        number = number.quantize(Decimal(1), context=_DECIMAL)
        exponent = 0
    return -exponent, _unscaled(number)


def _float32(value: float) -> float:
    """A ``real``: the shortest decimal that reads back as the same 32-bit float."""
    single = struct.unpack("<f", struct.pack("<f", float(value)))[0]
    if single == 0 or not math.isfinite(single):
        return single
    for digits in range(1, 10):
        text = float(f"{single:.{digits}g}")
        if struct.unpack("<f", struct.pack("<f", text))[0] == single:
            return text
    return single


def _micros_of_day(moment: time) -> int:
    return ((moment.hour * 60 + moment.minute) * 60 + moment.second) * 1_000_000 + (
        moment.microsecond
    )


def _fraction(micros: int, width: int | None) -> str:
    """Fraction digits: ``width`` exactly, or trimmed (none when zero) without a width."""
    if width is None:
        return "" if micros == 0 else "." + f"{micros:06d}".rstrip("0")
    if micros % 10 ** (6 - width):
        raise ValueError(f"{micros} microseconds exceed the column's precision {width}")
    return "." + f"{micros:06d}"[:width] if width else _fraction(micros, None)


def _interval_micros(value: PgInterval | timedelta) -> int:
    """``MicroDuration.durationMicros``: double arithmetic, 365.25/12 days a month, truncated."""
    if isinstance(value, timedelta):
        value = PgInterval(0, value.days, value.seconds * 1_000_000 + value.microseconds)
    sign = -1 if value.micros < 0 else 1
    rest = abs(value.micros)
    hours, rest = divmod(rest, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    whole, micros = divmod(rest, 1_000_000)
    # PGInterval.getSeconds(): wholeSeconds + microSeconds / 1e6, signed like the time part
    seconds = sign * whole + (sign * micros) / 1_000_000.0
    number_of_days = value.months * _DAYS_PER_MONTH + value.days
    number_of_seconds = (((number_of_days * 24 + sign * hours) * 60) + sign * minutes) * 60
    return int((number_of_seconds + seconds) * 1e6)


def _jsonb_text(value: Any) -> str:
    """Postgres' output of a jsonb value: keys by length then bytes, ``", "`` and ``": "``."""
    if isinstance(value, Mapping):
        keys = sorted(value, key=lambda k: (len(str(k).encode()), str(k).encode()))
        items = (f"{json.dumps(str(k), ensure_ascii=False)}: {_jsonb_text(value[k])}" for k in keys)
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_jsonb_text(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("JSON has no NaN or infinities")
    return json.dumps(value, ensure_ascii=False)


def _inet_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        # Postgres prints a host address without its full-length mask
        if value.network.prefixlen == value.max_prefixlen:
            return str(value.ip)
        return str(value)
    return str(value)


def _encode_scalar(t: _PgType, value: Any) -> Any:
    base = t.base
    if base in _INT_RANGES:
        low, high = _INT_RANGES[base]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{value!r} is not a {base}")
        return value
    if base == "boolean":
        return bool(value)
    if base == "real":
        return _float32(value)
    if base == "double precision":
        return float(value)
    if base == "numeric":
        if t.precision is None:
            scale, unscaled = _variable_decimal(value)
            return {"scale": scale, "value": _b64(_unscaled_bytes(unscaled))}
        precision, scale = _numeric_bounds(t)
        return _b64(_unscaled_bytes(_unscaled(_fixed_decimal(value, scale, precision))))
    if base == "money":
        number = _fixed_decimal(value, MONEY_FRACTION_DIGITS, None)
        return _b64(_unscaled_bytes(_unscaled(number)))
    if base == "date":
        if isinstance(value, datetime) or not isinstance(value, date):
            raise TypeError(f"a date column takes a date, not {value!r}")
        return (value - _EPOCH_DATE).days
    if base == "time":
        if not isinstance(value, time) or value.tzinfo is not None:
            raise TypeError(f"a time column takes a naive time, not {value!r}")
        micros = _micros_of_day(value)
        return micros // 1000 if (t.precision or 0) <= 3 else micros
    if base == "timetz":
        if not isinstance(value, time) or value.utcoffset() is None:
            raise TypeError(f"a timetz column takes a time with tzinfo, not {value!r}")
        offset = value.utcoffset()
        assert offset is not None
        micros = (_micros_of_day(value) - offset // timedelta(microseconds=1)) % 86_400_000_000
        seconds, fraction = divmod(micros, 1_000_000)
        hours, seconds = divmod(seconds, 3600)
        minutes, seconds = divmod(seconds, 60)
        return f"{hours:02d}:{minutes:02d}:{seconds:02d}{_fraction(fraction, None)}Z"
    if base == "timestamp":
        if not isinstance(value, datetime) or value.tzinfo is not None:
            raise TypeError(f"a timestamp column takes a naive datetime, not {value!r}")
        micros = (value - _EPOCH) // timedelta(microseconds=1)
        return micros // 1000 if (t.precision or 0) <= 3 else micros
    if base == "timestamptz":
        if not isinstance(value, datetime) or value.utcoffset() is None:
            raise TypeError(f"a timestamptz column takes an aware datetime, not {value!r}")
        utc = value.astimezone(UTC)
        width = t.precision if t.precision else None
        return (
            f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
            f"{utc.second:02d}{_fraction(utc.microsecond, width)}Z"
        )
    if base == "interval":
        if not isinstance(value, PgInterval | timedelta):
            raise TypeError(f"an interval column takes PgInterval or timedelta, not {value!r}")
        return _interval_micros(value)
    if base == "uuid":
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    if base == "json":
        if isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if base == "jsonb":
        return _jsonb_text(json.loads(value) if isinstance(value, str) else value)
    if base == "bytea":
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"a bytea column takes bytes, not {value!r}")
        return _b64(bytes(value))
    if base in ("text", "xml"):
        return str(value)
    if base in ("varchar", "char"):
        text = str(value)
        if base == "char":
            text = text.rstrip(" ")
        if t.precision is not None and len(text) > t.precision:
            raise ValueError(f"{text!r} is longer than {base}({t.precision})")
        return text.ljust(t.precision or 0) if base == "char" else text
    if base == "enum":
        if value not in t.labels:
            raise ValueError(f"{value!r} is not a label of enum {t.enum_name}")
        return str(value)
    if base in ("inet", "cidr"):
        return _inet_text(value)
    if base == "macaddr":
        return str(value).lower()
    raise ValueError(f"cannot encode {base}")


def toast_placeholder(column: ColumnSpec) -> Any:
    """What Debezium writes for ``column`` when Postgres sent no value for it (unchanged TOAST).

    Raises ValueError for a type Postgres never moves out of line (fixed-size types).
    """
    t = _pg_type(column.pg_type)
    if t.base in ("text", "varchar", "char", "json", "jsonb", "xml"):
        return TOAST_PLACEHOLDER
    if t.base == "bytea":
        return _b64(_PLACEHOLDER_BYTES)
    if t.element is not None:
        element = t.element.base
        if element in ("text", "varchar", "char", "json", "jsonb"):
            return [TOAST_PLACEHOLDER]
        if element == "bytea":
            return [_b64(_PLACEHOLDER_BYTES)]
        if element in ("integer", "date", "bigint"):
            return list(_PLACEHOLDER_BYTES)
        if element == "uuid":
            return [_PLACEHOLDER_UUID]
        # the placeholder string fails the array schema; the connector warns and sends null
        return None
    raise ValueError(f"{column.name}: a {column.pg_type} value is never TOASTed")


def is_toastable(column: ColumnSpec) -> bool:
    """Whether Postgres may store the column's values out of line (varlena, not 'main')."""
    t = _pg_type(column.pg_type)
    return t.is_array or t.base in ("text", "varchar", "char", "json", "jsonb", "xml", "bytea")


def encode_value(column: ColumnSpec, value: Any) -> Any:
    """The JSON value Debezium writes for ``value`` (a Python value) in ``column``.

    Python values: int, bool, float, Decimal, date, time (aware for timetz), datetime
    (naive for timestamp, aware for timestamptz), :class:`PgInterval` or timedelta, UUID or
    str, any JSON-able object (or its text) for json/jsonb, bytes, str, lists for arrays
    (elements may be None), and :data:`UNCHANGED_TOAST`.
    """
    if value is None:
        return None
    if value is UNCHANGED_TOAST:
        return toast_placeholder(column)
    t = _pg_type(column.pg_type)
    if t.element is not None:
        if not isinstance(value, list | tuple):
            raise TypeError(f"{column.name}: an array column takes a list, not {value!r}")
        element = t.element
        return [None if v is None else _encode_scalar(element, v) for v in value]
    return _encode_scalar(t, value)


def _java_decimal(unscaled: int, scale: int) -> str:
    """``BigDecimal.toString()``: plain unless the adjusted exponent is below -6."""
    digits = str(abs(unscaled))
    sign = "-" if unscaled < 0 else ""
    adjusted = len(digits) - 1 - scale
    if scale >= 0 and adjusted >= -6:
        if scale == 0:
            return sign + digits
        digits = digits.rjust(scale + 1, "0")
        return f"{sign}{digits[:-scale]}.{digits[-scale:]}"
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}E{adjusted:+d}"


def _values_text(value: Any) -> str:
    """``Values.append(…, embedded=true)`` for a JSON-shaped Connect value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ",".join(_values_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ",".join(f"{_values_text(k)}:{_values_text(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"cannot print {value!r}")


def key_header(spec: TableSpec, key: Sequence[Any]) -> bytes:
    """A key as the ``__debezium.oldkey``/``newkey`` header value (SimpleHeaderConverter)."""
    parts = []
    for column, value in zip(spec.key_columns, key, strict=True):
        t = _pg_type(column.pg_type)
        if t.base == "numeric" and t.precision is not None:
            _, scale = _numeric_bounds(t)
            text = _java_decimal(_unscaled(_fixed_decimal(value, scale, None)), scale)
        elif t.base == "money":
            number = _fixed_decimal(value, MONEY_FRACTION_DIGITS, None)
            text = _java_decimal(_unscaled(number), MONEY_FRACTION_DIGITS)
        else:
            text = _values_text(encode_value(column, value))
        parts.append(f"{_values_text(column.name)}:{text}")
    return ("{" + ",".join(parts) + "}").encode()


# -- the simulated table ---------------------------------------------------------------


@dataclass(frozen=True)
class TableMessage:
    """One Kafka record as Debezium would write it, headers included."""

    key: bytes | None
    value: bytes | None
    partition: int
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class TableChange:
    """One change of the simulated table, before it is encoded as Kafka records."""

    op: str
    key: tuple[Any, ...] | None  # None for a table without a primary key
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    ts_ms: int
    lsn: int
    tx_id: int
    spec: TableSpec  # the table's columns when the change happened
    snapshot: str = "false"
    old_key: tuple[Any, ...] | None = None  # the key a create replaced (primary-key change)
    new_key: tuple[Any, ...] | None = None  # the key a delete was replaced by


_WORDS = (
    "market",
    "river",
    "policy",
    "Zoë",
    "Ångström",
    "Núñez",
    "李雷",
    "東京",
    "🚀",
    "naïve",
    'say "hi"',
    "back\\slash",
    "tab\there",
    "line\nbreak",
    "data",
    "cloud",
)
_TENANTS = ("acme", "globex", "Zoë & Co", "東京支社", "o'brien", 'quote"d', "initech")
_INET = ("192.168.1.17", "10.0.0.0/8", "2001:db8::1", "172.16.5.4/12", "::1")
_CIDR = ("192.168.100.128/25", "10.0.0.0/8", "2001:db8::/32", "0.0.0.0/0")


def _as_key(key: Any) -> tuple[Any, ...]:
    return key if isinstance(key, tuple) else (key,)


@dataclass
class TableSource(SimulatedTable):
    """A simulated Postgres table described by a :class:`TableSpec`, and the connector."""

    spec: TableSpec
    seed: int = 0
    partitions: int = 3
    wrapper: bool = True
    event_format: EventFormat = "envelope"
    prefix: str = "neuronews"
    database: str = "neuronews"
    null_share: float = 0.15
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    rows: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    _rng: random.Random = field(init=False, repr=False)
    _clock_ms: int = field(init=False, repr=False)
    _lsn: int = field(init=False, repr=False)
    _tx: int = field(init=False, repr=False)
    _next_id: int = field(init=False, repr=False)
    _pools: dict[str, list[Any]] = field(init=False, repr=False)
    _counters: dict[tuple[Any, ...], int] = field(init=False, repr=False)
    _adding: tuple[int, list[ColumnSpec]] = field(init=False, repr=False)
    _emitted: list[TableChange] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.event_format not in ("envelope", "flattened"):
            raise ValueError(f"event_format={self.event_format!r}")
        self._start(self.seed)
        self._pools = {}
        self._counters = {}
        self._adding = (0, [])  # columns a random history adds: how many, those still to add

    @property
    def topic(self) -> str:
        return self.spec.topic(self.prefix)

    # -- random values ---------------------------------------------------------

    def _text(self, low: int = 0, high: int = 6) -> str:
        return " ".join(self._rng.choice(_WORDS) for _ in range(self._rng.randint(low, high)))

    def _decimal(self, precision: int, scale: int) -> Decimal:
        rng = self._rng
        kind = rng.random()
        if kind < 0.1:
            unscaled = 0
        elif kind < 0.2:
            unscaled = -(10**scale)  # -1, at the column's scale
        elif kind < 0.35:
            unscaled = rng.choice((1, -1)) * (10**precision - 1)  # every digit used
        else:
            unscaled = rng.choice((1, -1)) * rng.randint(1, 10 ** rng.randint(1, precision) - 1)
        return Decimal(unscaled).scaleb(-scale, _DECIMAL)

    def _scalar(self, t: _PgType) -> Any:
        rng = self._rng
        base = t.base
        if base in _INT_RANGES:
            low, high = _INT_RANGES[base]
            if rng.random() < 0.3:
                return rng.choice((0, -1, 1, low, high))
            return rng.randint(low, high)
        if base == "boolean":
            return rng.random() < 0.5
        if base == "real":
            if rng.random() < 0.2:
                return rng.choice((0.0, 1.5, -2.25, 0.1))
            return _float32(round(rng.uniform(-1e5, 1e5), rng.randint(0, 3)))
        if base == "double precision":
            if rng.random() < 0.2:
                return rng.choice((0.0, -1.5, 0.1, 123456.789))
            return round(rng.uniform(-1e6, 1e6), rng.randint(0, 6))
        if base == "numeric":
            if t.precision is None:
                digits = rng.randint(1, 30)
                scale = rng.randint(0, min(digits, 15))
                number = self._decimal(digits, scale)
                # trailing zeros and zero show the connector's stripping
                return number if rng.random() < 0.7 else _DECIMAL.add(number, Decimal("0.000"))
            precision, scale = _numeric_bounds(t)
            return self._decimal(precision, scale)
        if base == "money":
            if rng.random() < 0.2:
                return rng.choice(
                    (Decimal("0.00"), Decimal("-0.01"), Decimal("92233720368547758.07"))
                )
            return Decimal(rng.randint(-(10**12), 10**12)).scaleb(-2)
        if base == "date":
            if rng.random() < 0.25:
                return rng.choice((date(1969, 12, 31), _EPOCH_DATE, date(1900, 1, 1)))
            return date(1850, 1, 1) + timedelta(days=rng.randint(0, 300 * 366))
        if base in ("time", "timetz"):
            micros = rng.randint(0, 86_400_000_000 - 1)
            if rng.random() < 0.15:
                micros = rng.choice((0, 86_400_000_000 - 1))
            micros -= micros % 10 ** (6 - (t.precision or 0))
            seconds, us = divmod(micros, 1_000_000)
            clock = time(seconds // 3600, seconds // 60 % 60, seconds % 60, us)
            if base == "timetz":
                offset = timedelta(hours=rng.randint(-12, 14), minutes=rng.choice((0, 0, 30)))
                clock = clock.replace(tzinfo=timezone(offset))
            return clock
        if base in ("timestamp", "timestamptz"):
            micros = rng.randint(-2_208_988_800_000_000, 4_102_444_800_000_000)  # 1900..2100
            if rng.random() < 0.15:
                micros = rng.choice((-1, 0, 1))
            micros -= micros % 10 ** (6 - (t.precision or 0))
            stamp = _EPOCH + timedelta(microseconds=micros)
            if base == "timestamptz":
                offset = timedelta(hours=rng.randint(-11, 13), minutes=rng.choice((0, 0, 45)))
                stamp = stamp.replace(tzinfo=UTC).astimezone(timezone(offset))
            return stamp
        if base == "interval":
            if rng.random() < 0.15:
                return PgInterval()
            sign = rng.choice((1, 1, 1, -1))
            return PgInterval(
                sign * rng.randint(0, 30),
                sign * rng.randint(0, 40),
                sign * rng.randint(0, 100_000_000_000),
            )
        if base == "uuid":
            return uuid.UUID(int=rng.getrandbits(128), version=4)
        if base in ("json", "jsonb"):
            return {
                "id": rng.randint(-1000, 10**9),
                "name": self._text(1, 3),
                "tags": [self._text(1, 1), None, rng.random() < 0.5][: rng.randint(0, 3)],
                "nested": {"deep": {"ok": rng.random() < 0.5, "ratio": rng.choice((0.5, -2.25))}},
                "empty": {},
            }
        if base == "xml":
            return f'<note id="{rng.randint(1, 999)}"><body>{self._text(1, 3)}</body></note>'
        if base == "text":
            return self._text()
        if base in ("varchar", "char"):
            text = self._text(0, 4)
            if t.precision is not None:
                text = text[: t.precision]
            return text.rstrip(" ") if base == "char" else text
        if base == "enum":
            return rng.choice(t.labels)
        if base == "bytea":
            if rng.random() < 0.2:
                return rng.choice((b"", b"\x00\xff", b"\x01\x02\x03"))
            return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 32)))
        if base == "inet":
            return rng.choice(_INET)
        if base == "cidr":
            return rng.choice(_CIDR)
        if base == "macaddr":
            return ":".join(f"{rng.getrandbits(8):02x}" for _ in range(6))
        raise ValueError(f"cannot generate {base}")

    def _value(self, column: ColumnSpec) -> Any:
        if column.nullable and self._rng.random() < self.null_share:
            return None
        t = _pg_type(column.pg_type)
        if t.element is None:
            return self._scalar(t)
        if self._rng.random() < 0.2:
            return []
        return [
            None if self._rng.random() < 0.15 else self._scalar(t.element)
            for _ in range(self._rng.randint(1, 4))
        ]

    # -- keys ------------------------------------------------------------------

    def _key_part(self, column: ColumnSpec, position: int, prefix: tuple[Any, ...]) -> Any:
        t = _pg_type(column.pg_type)
        last = position == len(self.spec.key) - 1
        if last and t.base in _INT_RANGES:
            # line numbers and the like: counted per value of the leading key columns
            self._counters[prefix] = self._counters.get(prefix, 0) + 1
            return self._counters[prefix]
        if last and len(self.spec.key) == 1 and t.base in ("text", "varchar"):
            self._next_id += 1
            return f"{self.spec.table}-{self.seed}-{self._next_id:07d}"[: t.precision]
        if not last:
            # leading key columns repeat across rows: they come from a slowly growing pool
            pool = self._pools.setdefault(column.name, [])
            target = max(3, math.isqrt(len(self.rows) + 1))
            if not pool or (len(pool) < target and self._rng.random() < 0.5):
                pool.append(self._new_pool_value(column, t, len(pool)))
            return self._rng.choice(pool)
        return self._scalar(t)

    def _new_pool_value(self, column: ColumnSpec, t: _PgType, index: int) -> Any:
        if t.base in ("text", "varchar"):
            value = _TENANTS[index] if index < len(_TENANTS) else f"tenant-{index}"
            return value[: t.precision]
        if t.base in _INT_RANGES:
            return self._rng.randint(1, min(_INT_RANGES[t.base][1], 10**7))
        return self._scalar(t)

    def _new_key(self) -> tuple[Any, ...]:
        if not self.spec.key:
            self._next_id += 1
            return (self._next_id,)  # the row's place in the table; never in an event
        for _ in range(1000):
            key: tuple[Any, ...] = ()
            for position, column in enumerate(self.spec.key_columns):
                key += (self._key_part(column, position, key),)
            if key not in self.rows:
                return key
        raise RuntimeError(f"{self.spec.qualified}: no unused key left")

    # -- the simulated database ---------------------------------------------------

    def _row(self, key: tuple[Any, ...]) -> dict[str, Any]:
        keys = dict(zip(self.spec.key, key, strict=False)) if self.spec.key else {}
        return {
            c.name: keys[c.name] if c.name in keys else self._value(c) for c in self.spec.columns
        }

    def _key_only(self, key: tuple[Any, ...]) -> dict[str, Any]:
        before = {c.name: None for c in self.spec.columns}
        before.update(zip(self.spec.key, key, strict=True))
        return before

    def _change(self, op: str, key: tuple[Any, ...], **kwargs: Any) -> TableChange:
        change = TableChange(
            op,
            key if self.spec.key else None,
            ts_ms=self._clock_ms,
            tx_id=self._tx,
            spec=self.spec,
            **kwargs,
        )
        self._emitted.append(change)
        return change

    def snapshot(self, count: int) -> list[TableChange]:
        """Initial snapshot: ``op = r`` for ``count`` existing rows, one LSN, snapshot flags."""
        changes = []
        lsn = self._next_lsn()
        self._tick()
        for i in range(count):
            key = self._new_key()
            self.rows[key] = self._row(key)
            flag = "last" if i == count - 1 else ("first" if i == 0 else "true")
            changes.append(
                self._change(
                    "r", key, before=None, after=dict(self.rows[key]), lsn=lsn, snapshot=flag
                )
            )
        return changes

    def insert(self, same_ms: bool = False) -> TableChange:
        self._tick(same_ms)
        key = self._new_key()
        self.rows[key] = self._row(key)
        return self._change("c", key, before=None, after=dict(self.rows[key]), lsn=self._next_lsn())

    def update(
        self, key: Any, toast: bool = False, same_ms: bool = False, in_tx: bool = False
    ) -> TableChange:
        """Change some non-key columns; with ``toast``, untouched TOASTable ones are not sent."""
        key = _as_key(key)
        if not in_tx:
            self._tick(same_ms)
        row = self.rows[key]
        old = dict(row)
        others = [c for c in self.spec.columns if c.name not in self.spec.key]
        candidates = [c for c in others if not is_toastable(c)] if toast else others
        candidates = candidates or others
        changed = [c for c in candidates if self._rng.random() < 0.5]
        if candidates and not changed:
            changed = [self._rng.choice(candidates)]
        for column in changed:
            row[column.name] = self._value(column)
        after = dict(row)
        if not self.spec.key:
            # REPLICA IDENTITY FULL: the whole old row, and unchanged TOAST values filled in
            return self._change("u", key, before=old, after=after, lsn=self._next_lsn())
        if toast:
            names = {c.name for c in changed}
            for column in others:
                if (
                    column.name not in names
                    and is_toastable(column)
                    and row[column.name] is not None
                ):
                    after[column.name] = UNCHANGED_TOAST
        return self._change("u", key, before=None, after=after, lsn=self._next_lsn())

    def delete(self, key: Any, same_ms: bool = False) -> TableChange:
        """A delete; the before image holds only the key (default replica identity)."""
        key = _as_key(key)
        self._tick(same_ms)
        row = self.rows.pop(key)
        before = self._key_only(key) if self.spec.key else row
        return self._change("d", key, before=before, after=None, lsn=self._next_lsn())

    def change_key(self, old: Any, toast: bool = False) -> tuple[TableChange, TableChange]:
        """``UPDATE … SET <key>``: Debezium emits delete(old) + create(new) at one LSN.

        With ``toast``, the create leaves the row's TOASTed values out (the
        placeholder), as Postgres does under its default replica identity.
        """
        if not self.spec.key:
            raise ValueError(f"{self.spec.qualified} has no primary key to change")
        old = _as_key(old)
        self._tick()
        lsn = self._next_lsn()
        row = self.rows.pop(old)
        new = self._new_key()
        while new == old:  # the freed key is not a change
            new = self._new_key()
        row = dict(row, **dict(zip(self.spec.key, new, strict=True)))
        self.rows[new] = row
        gone = self._change("d", old, before=self._key_only(old), after=None, lsn=lsn, new_key=new)
        after = dict(row)
        if toast:
            for column in self.spec.columns:
                if (
                    column.name not in self.spec.key
                    and is_toastable(column)
                    and row[column.name] is not None
                ):
                    after[column.name] = UNCHANGED_TOAST
        born = self._change("c", new, before=None, after=after, lsn=lsn, old_key=old)
        return gone, born

    def add_column(self, column: ColumnSpec) -> None:
        """``ALTER TABLE … ADD COLUMN``: later events carry it; existing rows hold NULL."""
        if not column.nullable:
            raise ValueError("a column added to a filled table without a default must be nullable")
        self.spec = dataclasses.replace(self.spec, columns=(*self.spec.columns, column))
        for row in self.rows.values():
            row[column.name] = None

    # -- workloads -------------------------------------------------------------

    def random_history(  # type: ignore[override]
        self,
        events: int,
        keys: int,
        *,
        added_columns: Sequence[ColumnSpec] = (),
        **mix: Any,
    ) -> list[TableMessage]:
        """:meth:`SimulatedTable.random_history` (``mix``: its shares and snapshot rows);
        ``added_columns`` are added one by one at evenly spaced points of the history.
        A table without a primary key changes no key."""
        self._adding = (len(added_columns), list(added_columns))
        if not self.spec.key:
            mix["pk_change_share"] = 0.0
        return super().random_history(events, keys, **mix)

    def _before_change(self, produced: int, events: int) -> None:
        total, pending = self._adding
        if pending and produced >= events * (total - len(pending) + 1) / (total + 1):
            self.add_column(pending.pop(0))

    def _key_change(self, key: Any, toast_share: float) -> tuple[TableChange, TableChange]:
        return self.change_key(key, toast=self._rng.random() < toast_share)

    # -- encoding --------------------------------------------------------------

    def to_messages(
        self, changes: Iterable[TableChange], redelivered: bool = False
    ) -> list[TableMessage]:
        out: list[TableMessage] = []
        for change in changes:
            message = self.encode(change, redelivered)
            out.append(message)
            if change.op == "d" and self.event_format == "envelope":
                # the tombstone lets log compaction drop the key; it keeps the delete's headers
                out.append(dataclasses.replace(message, value=None))
        return out

    def _image(self, spec: TableSpec, row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        return {c.name: encode_value(c, row.get(c.name)) for c in spec.columns}

    def _key_payload(self, spec: TableSpec, key: tuple[Any, ...]) -> dict[str, Any]:
        return {c.name: encode_value(c, v) for c, v in zip(spec.key_columns, key, strict=True)}

    def _key_bytes(self, spec: TableSpec, key: tuple[Any, ...] | None) -> bytes | None:
        if key is None:
            return None
        payload = self._key_payload(spec, key)
        if self.wrapper and self.event_format == "envelope":
            return _dumps({"schema": key_schema(spec, self.prefix), "payload": payload})
        return _dumps(payload)

    def _partition(self, spec: TableSpec, key: tuple[Any, ...] | None) -> int:
        if key is None:
            return 0  # a null key: one partition keeps the keyless table's changes in order
        return partition_for(_dumps(self._key_payload(spec, key)).decode(), self.partitions)

    def encode(self, change: TableChange, redelivered: bool = False) -> TableMessage:
        spec = change.spec
        headers: tuple[tuple[str, bytes], ...] = ()
        if change.new_key is not None:
            headers = ((NEWKEY_HEADER, key_header(spec, change.new_key)),)
        if change.old_key is not None:
            headers = ((OLDKEY_HEADER, key_header(spec, change.old_key)),)
        key = self._key_bytes(spec, change.key)
        partition = self._partition(spec, change.key)
        # the envelope ts_ms is the connector's processing time; a redelivery stamps a new one
        delay = self._rng.randint(5, 900) + (60_000 if redelivered else 0)
        before = self._image(spec, change.before)
        after = self._image(spec, change.after)
        if self.event_format == "flattened":
            flat = dict(after if after is not None else before or {})
            flat["__op"] = change.op
            flat["__source_ts_ms"] = change.ts_ms
            flat["__lsn"] = change.lsn
            flat["__deleted"] = "true" if change.op == "d" else "false"
            return TableMessage(key, _dumps(flat), partition, headers)
        source = {
            "version": DEBEZIUM_VERSION,
            "connector": "postgresql",
            "name": self.prefix,
            "ts_ms": change.ts_ms,
            "snapshot": change.snapshot,
            "db": self.database,
            "sequence": json.dumps([str(change.lsn - 8), str(change.lsn)]),
            "ts_us": change.ts_ms * 1000,
            "ts_ns": change.ts_ms * 1_000_000,
            "schema": spec.schema,
            "table": spec.table,
            "txId": change.tx_id,
            "lsn": change.lsn,
            "xmin": None,
        }
        payload = {
            "before": before,
            "after": after,
            "source": source,
            "transaction": None,
            "op": change.op,
            "ts_ms": change.ts_ms + delay,
            "ts_us": (change.ts_ms + delay) * 1000,
            "ts_ns": (change.ts_ms + delay) * 1_000_000,
        }
        value = {"schema": envelope_schema(spec, self.prefix), "payload": payload}
        return TableMessage(key, _dumps(value if self.wrapper else payload), partition, headers)


def _dumps(value: Any) -> bytes:
    # Jackson writes compact UTF-8 JSON
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# -- ready-made tables -------------------------------------------------------------

ORDER_LINES = TableSpec(
    "public",
    "order_lines",
    (
        ColumnSpec("order_id", "bigint", nullable=False),
        ColumnSpec("line_no", "integer", nullable=False),
        ColumnSpec("sku", "text", nullable=False),
        ColumnSpec("quantity", "integer", nullable=False),
        ColumnSpec("unit_price", "numeric(12,2)"),
        ColumnSpec("note", "text"),
    ),
    ("order_id", "line_no"),
)

TYPED_ROWS = TableSpec(
    "public",
    "typed_rows",
    (
        ColumnSpec("id", "uuid", nullable=False),
        ColumnSpec("c_smallint", "smallint"),
        ColumnSpec("c_integer", "integer"),
        ColumnSpec("c_bigint", "bigint"),
        ColumnSpec("c_boolean", "boolean"),
        ColumnSpec("c_real", "real"),
        ColumnSpec("c_double", "double precision"),
        ColumnSpec("c_numeric", "numeric(10,2)"),
        ColumnSpec("c_numeric_wide", "numeric(38,10)"),
        ColumnSpec("c_numeric_free", "numeric"),
        ColumnSpec("c_money", "money"),
        ColumnSpec("c_date", "date"),
        ColumnSpec("c_time", "time"),
        ColumnSpec("c_timetz", "timetz"),
        ColumnSpec("c_timestamp", "timestamp"),
        ColumnSpec("c_timestamptz", "timestamptz"),
        ColumnSpec("c_interval", "interval"),
        ColumnSpec("c_uuid", "uuid"),
        ColumnSpec("c_json", "json"),
        ColumnSpec("c_jsonb", "jsonb"),
        ColumnSpec("c_xml", "xml"),
        ColumnSpec("c_mood", "enum:mood"),
        ColumnSpec("c_text", "text"),
        ColumnSpec("c_varchar", "varchar(40)"),
        ColumnSpec("c_char", "char(8)"),
        ColumnSpec("c_bytea", "bytea"),
        ColumnSpec("c_inet", "inet"),
        ColumnSpec("c_cidr", "cidr"),
        ColumnSpec("c_macaddr", "macaddr"),
        ColumnSpec("c_int_array", "integer[]"),
        ColumnSpec("c_text_array", "text[]"),
        ColumnSpec("c_numeric_array", "numeric(10,2)[]"),
    ),
    ("id",),
)

TENANT_NOTES = TableSpec(
    "public",
    "tenant_notes",
    (
        ColumnSpec("tenant", "text", nullable=False),
        ColumnSpec("day", "date", nullable=False),
        ColumnSpec("body", "text"),
    ),
    ("tenant", "day"),
)


# -- Kafka -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProducedTableMessage:
    """A message and where Kafka put it."""

    message: TableMessage
    partition: int
    offset: int


def produce_table_messages(
    settings: Settings,
    topic: str,
    messages: Sequence[TableMessage],
    *,
    transactional_id: str | None = None,
    abort: bool = False,
) -> list[ProducedTableMessage]:
    """Write ``messages`` to ``topic`` in order, headers included; return partitions and offsets.

    With ``transactional_id`` they are written in one Kafka transaction, aborted when
    ``abort`` is set, as :func:`cdc_iceberg.generator.produce` does.
    """
    records = [(m.key, m.value, m.partition, m.headers) for m in messages]
    placed = send_records(settings, topic, records, transactional_id=transactional_id, abort=abort)
    return [ProducedTableMessage(m, p, o) for m, (p, o) in zip(messages, placed, strict=True)]
