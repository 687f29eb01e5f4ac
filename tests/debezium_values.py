"""An oracle of what a Debezium JSON value becomes in its table column, in plain Python.

It shares no code with ``cdc_iceberg.debezium_types`` or ``jobs.debezium_decode``: the
base64, two's-complement, decimal, date and time rules are written again here from
Debezium's and Kafka Connect's definitions, with the standard library only, so a
test comparing the two catches a mistake in either.

The column sees a row image's map<string,string>, where a JSON string and a JSON
number with the same text are one and the same; the oracle therefore reads a value
through its text too (a string "12" fits an int column like the number 12, and a
string holding a JSON object fits a struct-valued codec like the object itself).
Values are returned the way pyiceberg/pyarrow read them back: ``decimal.Decimal``
with the column's scale, ``datetime.date``, naive ``datetime`` for timestamp_ntz and
aware UTC ``datetime`` for timestamp, ``bytes``, ``list``, ``str``, ``int``,
``float``, ``bool``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

MISFIT: tuple[bool, Any] = (False, None)

_EPOCH_DATE = date(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?"
    r"(Z|([+-])(\d{2}):(\d{2}))"
)
_ZONED_TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?Z")
_DECIMAL_TYPE = re.compile(r"decimal\((\d+),\s*(\d+)\)")
_RANGES = {"int": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}
_FIRST_DAY = date(1, 1, 1)
_LAST_DAY = date(9999, 12, 31)
_MICROS_PER_DAY = 24 * 3600 * 10**6
_LARGEST_SCALE = 16383


def expected_value(codec: str, spark_type: str, json_value: Any) -> tuple[bool, Any]:
    """``(fits, value)`` of ``json_value`` (as ``json.loads`` gives it) in a column.

    ``fits`` is False when the value cannot be stored without loss; a JSON null fits
    as None.
    """
    if json_value is None:
        return True, None
    if codec.startswith("array:"):
        inner = spark_type.removeprefix("array<").removesuffix(">")
        return _array(codec.removeprefix("array:"), inner, json_value)
    handler = _HANDLERS[codec]
    return handler(spark_type, json_value)


def _text(value: Any) -> str:
    """The text Spark keeps for a JSON value in a map<string,string>."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # the same as Java's Double.toString for the values tested
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _integer(value: Any, low: int, high: int) -> int | None:
    text = _text(value)
    if not _INTEGER.fullmatch(text):
        return None
    number = int(text)
    return number if low <= number <= high else None


def _strict_json(text: str) -> Any:
    """``text`` parsed as strict JSON (no NaN, no repeated key), or a ValueError."""

    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError("repeated key")
        return dict(pairs)

    def no_constants(name: str) -> Any:
        raise ValueError(name)

    return json.loads(text, object_pairs_hook=no_repeats, parse_constant=no_constants)


def _structured(value: Any) -> Any:
    """A struct or array value, also when it arrives as a JSON string holding one."""
    if isinstance(value, str):
        try:
            return _strict_json(value)
        except ValueError:
            return None
    return value


def _as_string(_spark_type: str, value: Any) -> tuple[bool, Any]:
    return True, _text(value)


def _as_uuid(_spark_type: str, value: Any) -> tuple[bool, Any]:
    text = _text(value)
    return (True, text.lower()) if _UUID.fullmatch(text) else MISFIT


def _as_integer(spark_type: str, value: Any) -> tuple[bool, Any]:
    number = _integer(value, *_RANGES[spark_type])
    return MISFIT if number is None else (True, number)


def _as_duration(_spark_type: str, value: Any) -> tuple[bool, Any]:
    return _as_integer("bigint", value)


def _as_boolean(_spark_type: str, value: Any) -> tuple[bool, Any]:
    text = _text(value).lower()
    return (True, text == "true") if text in ("true", "false") else MISFIT


def _as_floating(spark_type: str, value: Any) -> tuple[bool, Any]:
    if isinstance(value, str):
        if value in _NON_FINITE:
            return True, _NON_FINITE[value]
        if not _NUMBER.fullmatch(value):
            return MISFIT
    elif isinstance(value, bool) or not isinstance(value, int | float):
        return MISFIT
    try:
        number = float(value)
    except OverflowError:
        return MISFIT
    if number in (float("inf"), float("-inf")):
        return MISFIT
    if spark_type == "float":
        try:
            (number,) = struct.unpack("<f", struct.pack("<f", number))
        except OverflowError:
            return MISFIT
    return True, number


def _raw_bytes(value: Any) -> bytes | None:
    """Bytes of canonical base64 text: the text is exactly what encoding them gives."""
    text = _text(value)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def _as_bytes(_spark_type: str, value: Any) -> tuple[bool, Any]:
    raw = _raw_bytes(value)
    return MISFIT if raw is None else (True, raw)


def _unscaled(value: Any) -> int | None:
    """Connect's Decimal bytes: a two's-complement big-endian integer of at most 38 digits."""
    raw = _raw_bytes(value)
    if not raw:  # Connect cannot read an empty byte array as a number
        return None
    number = int.from_bytes(raw, "big", signed=True)
    return number if abs(number) < 10**38 else None


def _exact(number: int, scale: int) -> Decimal:
    """``number * 10^-scale``, built from its text: arithmetic would round to 28 digits."""
    return Decimal(f"{number}E-{scale}")


def _as_decimal(spark_type: str, value: Any) -> tuple[bool, Any]:
    match = _DECIMAL_TYPE.fullmatch(spark_type)
    if match is None:
        raise ValueError(f"not a decimal type: {spark_type}")
    precision, scale = int(match.group(1)), int(match.group(2))
    number = _unscaled(value)
    if number is None or abs(number) >= 10**precision:
        return MISFIT
    return True, _exact(number, scale)


def _as_variable_decimal(_spark_type: str, value: Any) -> tuple[bool, Any]:
    struct_value = _structured(value)
    if not isinstance(struct_value, dict) or set(struct_value) != {"scale", "value"}:
        return MISFIT
    scale = _integer(struct_value["scale"], 0, _LARGEST_SCALE)
    number = None if struct_value["value"] is None else _unscaled(struct_value["value"])
    if scale is None or number is None:
        return MISFIT
    return True, format(_exact(number, scale), "f")


def _as_date(_spark_type: str, value: Any) -> tuple[bool, Any]:
    days = _integer(value, -(2**31), 2**31 - 1)
    if days is None:
        return MISFIT
    try:
        day = _EPOCH_DATE + timedelta(days=days)
    except OverflowError:
        return MISFIT
    return (True, day) if _FIRST_DAY <= day <= _LAST_DAY else MISFIT


def _local_timestamp(micros: int | None) -> tuple[bool, Any]:
    if micros is None:
        return MISFIT
    try:
        return True, _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        return MISFIT


def _as_micro_timestamp(_spark_type: str, value: Any) -> tuple[bool, Any]:
    return _local_timestamp(_integer(value, -(2**63), 2**63 - 1))


def _as_milli_timestamp(_spark_type: str, value: Any) -> tuple[bool, Any]:
    millis = _integer(value, -(2**63), 2**63 - 1)
    return _local_timestamp(None if millis is None else millis * 1000)


def _as_zoned_timestamp(_spark_type: str, value: Any) -> tuple[bool, Any]:
    match = _RFC3339.fullmatch(_text(value))
    if match is None:
        return MISFIT
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    micros = int((match.group(7) or "").ljust(6, "0"))
    offset = timedelta(0)
    if match.group(8) != "Z":
        hours, minutes = int(match.group(10)), int(match.group(11))
        if minutes > 59 or hours * 60 + minutes > 18 * 60:
            return MISFIT
        offset = timedelta(hours=hours, minutes=minutes)
        if match.group(9) == "-":
            offset = -offset
    try:
        local = datetime(year, month, day, hour, minute, second, micros)
        return True, (local - offset).replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return MISFIT


def _as_micro_time(_spark_type: str, value: Any) -> tuple[bool, Any]:
    micros = _integer(value, 0, _MICROS_PER_DAY)
    return MISFIT if micros is None else (True, micros)


def _as_milli_time(_spark_type: str, value: Any) -> tuple[bool, Any]:
    millis = _integer(value, 0, _MICROS_PER_DAY // 1000)
    return MISFIT if millis is None else (True, millis * 1000)


def _as_zoned_time(_spark_type: str, value: Any) -> tuple[bool, Any]:
    match = _ZONED_TIME.fullmatch(_text(value))
    if match is None:
        return MISFIT
    hour, minute, second = (int(match.group(i)) for i in (1, 2, 3))
    fraction = int((match.group(4) or "").ljust(6, "0"))
    micros = ((hour * 60 + minute) * 60 + second) * 10**6 + fraction
    if hour == 24:  # Postgres' end of day, and nothing past it
        return (True, micros) if micros == _MICROS_PER_DAY else MISFIT
    return (True, micros) if hour < 24 and minute < 60 and second < 60 else MISFIT


def _array(element_codec: str, element_type: str, value: Any) -> tuple[bool, Any]:
    items = _structured(value)
    if not isinstance(items, list):
        return MISFIT
    decoded = []
    for item in items:
        fits, element = expected_value(element_codec, element_type, item)
        if not fits:
            return MISFIT
        decoded.append(element)
    return True, decoded


_HANDLERS = {
    "string": _as_string,
    "json": _as_string,
    "uuid": _as_uuid,
    "int": _as_integer,
    "bigint": _as_integer,
    "micro_duration": _as_duration,
    "boolean": _as_boolean,
    "float": _as_floating,
    "double": _as_floating,
    "bytes": _as_bytes,
    "decimal": _as_decimal,
    "variable_decimal": _as_variable_decimal,
    "date": _as_date,
    "micro_timestamp": _as_micro_timestamp,
    "milli_timestamp": _as_milli_timestamp,
    "zoned_timestamp": _as_zoned_timestamp,
    "micro_time": _as_micro_time,
    "milli_time": _as_milli_time,
    "zoned_time": _as_zoned_time,
}
