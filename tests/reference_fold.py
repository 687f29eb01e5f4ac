"""The oracle: a plain-Python fold of Debezium records into the expected table.

It shares no code with the job. It reads the raw Kafka records (key and value
bytes with their partition and offset) and applies the change-application
contract as written in the product brief:

* a table is its key columns and its columns' codecs (:class:`FoldTable`,
  written by hand in each test); values of Debezium's other types are read by
  the plain-Python oracle :mod:`debezium_values`;
* records are ordered per key by ``(source.ts_ms, source.lsn, partition,
  offset)``; a change applies only if its sequence is newer than the key's
  state (the live row or the remembered delete), so duplicates are no-ops;
* deletes remove the row and are remembered with their sequence;
* a TOAST placeholder keeps the value the key held before the change;
* a record that cannot be applied is dead-lettered, Kafka tombstones are
  ignored, ``op = t`` is dead-lettered (the default truncate policy);
* a record is one strict JSON object in UTF-8 (RFC 8259: no NaN, no single
  quotes, nothing after the object, no unpaired surrogate escape); the envelope,
  payload, source block and row image have unique keys; a value must fit its
  column exactly: integers are JSON integers or strings of a sign and ASCII
  digits, timestamps are RFC 3339 with a zone and at most microseconds, in years
  1 to 9999; string columns take other JSON values as their compact JSON text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any

from debezium_values import expected_value

PLACEHOLDER = "__debezium_unavailable_value"
OLD_KEY_HEADER = "__debezium.oldkey"
KEY = "article_id"
INT_COLUMNS = {"word_count"}
TIMESTAMP_COLUMNS = {"published_at", "updated_at"}
DATA_COLUMNS = (
    "article_id",
    "title",
    "url",
    "source",
    "author",
    "body",
    "published_at",
    "updated_at",
    "word_count",
)


@dataclass(frozen=True)
class FoldTable:
    """A table as the oracle sees it: key columns in key order, and each column's
    (codec, Spark type). The codecs ``string``, ``int`` and ``zoned_timestamp``
    follow the rules above; every other codec is read by :mod:`debezium_values`."""

    key: tuple[str, ...]
    columns: tuple[tuple[str, str, str], ...]  # (name, codec, Spark type)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.columns)


ARTICLES = FoldTable(
    (KEY,),
    tuple(
        (
            c,
            "int"
            if c in INT_COLUMNS
            else "zoned_timestamp"
            if c in TIMESTAMP_COLUMNS
            else "string",
            "int" if c in INT_COLUMNS else "timestamp" if c in TIMESTAMP_COLUMNS else "string",
        )
        for c in DATA_COLUMNS
    ),
)


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Folded:
    """Rows and remembered deletes by key: the key's value for a one-column key, else
    the tuple of its parts."""

    rows: dict[Any, dict[str, Any]] = field(default_factory=dict)
    dead: dict[tuple[int, int], str] = field(default_factory=dict)
    deleted: dict[Any, tuple[int, int, int, int]] = field(default_factory=dict)
    applied: int = 0


_INTEGER = re.compile(r"[+-]?[0-9]+")
# RFC 3339 as Debezium's ZonedTimestamp writes it: seconds, at most 6 fraction digits,
# a zone (Z or an offset up to 18:00); a time without a zone is ambiguous.
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-](([01]\d):[0-5]\d))",
    re.ASCII,
)
# Limits of a JSON record: longer numbers or strings, or deeper nesting, are malformed.
MAX_NUMBER_DIGITS = 1000
MAX_STRING_CHARS = 20_000_000  # UTF-16 code units
MAX_DEPTH = 998
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Pairs(list):  # type: ignore[type-arg]
    """A JSON object as its (key, value) pairs in order, so repeated keys stay visible."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise ValueError("number too long")
    return int(text)


def _check(value: Any) -> None:
    """Reject text that is not Unicode (lone surrogates), and values beyond the limits."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise ValueError("lone surrogate")
            if (
                len(item) > MAX_STRING_CHARS // 2
                and len(item.encode("utf-16-le")) // 2 > MAX_STRING_CHARS
            ):
                raise ValueError("string too long")
        elif isinstance(item, (_Pairs, list)):
            if depth > MAX_DEPTH:
                raise ValueError("nested too deep")
            for element in item:
                if isinstance(item, _Pairs):
                    stack.append((element[0], depth))
                    stack.append((element[1], depth + 1))
                else:
                    stack.append((element, depth + 1))


def _parse(text: bytes | str) -> Any:
    """Strict JSON (RFC 8259) from UTF-8 bytes or text; ValueError when it is not."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # strict: no BOM stripping, no UTF-16/32 guessing
    try:
        value = json.loads(
            text, object_pairs_hook=_Pairs, parse_constant=_no_constant, parse_int=_bounded_int
        )
    except RecursionError as exc:
        raise ValueError("nested too deep") from exc
    _check(value)
    return value


def _object(text: Any) -> dict[str, Any] | None:
    """A JSON object with unique keys: given parsed, or as JSON text; else None."""
    if isinstance(text, dict):
        return text
    if isinstance(text, (bytes, str)):
        try:
            text = _parse(text)
        except ValueError:  # includes UnicodeDecodeError
            return None
    if not isinstance(text, _Pairs):
        return None
    value = dict(text)
    return value if len(value) == len(text) else None


def _plain(value: Any) -> Any:
    """A parsed value with its objects as dicts (the last of repeated keys wins)."""
    if isinstance(value, _Pairs):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _unwrap(obj: dict[str, Any]) -> Any:
    if "schema" in obj and "payload" in obj:
        return obj["payload"]
    return obj


def _java_double(number: float) -> str:
    """A double as Java's Double.toString writes it (Spark renders JSON numbers so)."""
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "-0.0" if math.copysign(1.0, number) < 0 else "0.0"
    sign = "-" if number < 0 else ""
    shortest = Decimal(repr(abs(number)))
    if 1e-3 <= abs(number) < 1e7:
        plain = format(shortest, "f")
        return sign + (plain if "." in plain else plain + ".0")
    digits = "".join(map(str, shortest.as_tuple().digits)).rstrip("0") or "0"
    exponent = shortest.adjusted()
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{exponent}"


def _escaped(text: str) -> str:
    quoted = json.dumps(text, ensure_ascii=False)
    return re.sub(
        r"(?<!\\)((?:\\\\)*)\\u([0-9a-f]{4})", lambda m: m[1] + "\\u" + m[2].upper(), quoted
    )


def _compact(value: Any) -> str:
    """Compact JSON text of a nested value, as Spark's JSON writer renders it."""
    if isinstance(value, str):
        return _escaped(value)
    if isinstance(value, _Pairs):
        return "{" + ",".join(f"{_escaped(k)}:{_compact(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    if isinstance(value, float) and math.isinf(value):
        return _escaped(_java_double(value))  # written as a string: JSON has no infinity
    return _text(value) or "null"


def _text(value: Any) -> str | None:
    """A JSON value as text: strings as they are, other values as compact JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _java_double(value)
    return _compact(value)


def _as_int(value: Any, bits: int = 64) -> int | None:
    """A JSON integer, or a string of exactly a sign and ASCII digits, within range."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and _INTEGER.fullmatch(value) and len(value) <= 25:
        value = int(value)
    if isinstance(value, int) and -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        return value
    return None


# Debezium's placeholder for the bytes of an unchanged TOASTed bytea, and for arrays
_PLACEHOLDER_B64 = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="
_PLACEHOLDER_ARRAYS = {
    "string": [PLACEHOLDER],
    "json": [PLACEHOLDER],
    "bytes": [_PLACEHOLDER_B64],
    "int": list(PLACEHOLDER.encode()),
    "bigint": list(PLACEHOLDER.encode()),
    "date": list(PLACEHOLDER.encode()),
    "uuid": ["b68a35a7-17ad-35b3-af2a-ae46edb4545a"],
}


# the plain JSON types: their columns take the placeholder's text as it is
_PLAIN = ("", "string", "int", "bigint", "float", "double", "boolean", "zoned_timestamp")


def is_placeholder(codec: str, value: Any) -> bool:
    """``value`` is how Debezium writes an unchanged TOASTed value of a ``codec`` column."""
    if codec in _PLAIN or codec in ("json", "uuid"):
        return value == PLACEHOLDER
    if codec == "bytes":
        return value == _PLACEHOLDER_B64
    if codec.startswith("array:"):
        wanted = _PLACEHOLDER_ARRAYS.get(codec.removeprefix("array:"))
        if wanted is None:
            return False
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return False
        return value == wanted
    return False


def _typed(column: str, value: Any, codec: str = "", spark_type: str = "") -> tuple[bool, Any]:
    """(fits, typed value) for one column of the table."""
    codec = codec or (
        "int" if column in INT_COLUMNS else "zoned_timestamp" if column in TIMESTAMP_COLUMNS else ""
    )
    if value is None:
        return True, None
    if codec in ("", "string") and value == PLACEHOLDER:
        return True, value
    if codec not in ("", "string", "int", "zoned_timestamp"):
        return expected_value(codec, spark_type, _plain(value))
    if codec == "int":
        number = _as_int(value, 32)
        return number is not None, number
    if codec == "zoned_timestamp":
        if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
            return False, None
        offset = value[-6:]
        if offset[0] in "+-" and offset[1:] > "18:00":
            return False, None
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        except (ValueError, OverflowError):  # no such date, or outside years 1-9999
            return False, None
        return True, moment
    return True, _text(value)


def decode(
    record: Record, event_format: str = "envelope", table: FoldTable = ARTICLES
) -> tuple[str, Any]:
    """('skip', None) | ('dead', reason) | ('ok', (key, op, seq, row))."""
    if record.value is None:
        return "skip", None
    root = _object(record.value)
    if root is None:
        return "dead", "not a JSON object"
    body = _object(_unwrap(root))
    if body is None:
        return "dead", "payload not an object"
    if event_format == "flattened":
        deleted = (_text(body.get("__deleted")) or "false").lower() == "true"
        op = "d" if deleted else body.get("__op")
        ts, lsn = body.get("__source_ts_ms"), body.get("__lsn")
        snapshot_flag = body.get("__source_snapshot")
        row: Any = {k: v for k, v in body.items() if not k.startswith("__")}
    else:
        op = body.get("op")
        source = _object(body.get("source"))
        if op in ("c", "u", "r", "d") and source is None:
            return "dead", "no source"
        source = source or {}
        ts, lsn = source.get("ts_ms"), source.get("lsn")
        snapshot_flag = source.get("snapshot")
        row = _object(body.get("before") if op == "d" else body.get("after"))
    if op not in ("c", "u", "r", "d"):
        return "dead", f"op {op!r}"
    ts_i, lsn_i = _as_int(ts), _as_int(lsn)
    if ts_i is None or lsn_i is None:
        return "dead", "ordering field"
    if op == "r" and snapshot_flag != "incremental" and lsn_i > 0:
        # a blocking snapshot shows rows as they were before the LSN it carries
        lsn_i -= 1
    if op != "d" and row is None:
        return "dead", "no row"
    row = row or {}
    kafka_key: dict[str, Any] | None = None
    if record.key is not None:
        key_obj = _object(record.key)
        kafka_key = _object(_unwrap(key_obj)) if key_obj is not None else None
    columns = {name: (codec, kind) for name, codec, kind in table.columns}
    parts = []
    for name in table.key:
        raw = row.get(name)
        if raw is None and kafka_key:
            raw = kafka_key.get(name)
        if raw is None:
            return "dead", "no key"
        fits, value = _typed(name, raw, *columns[name])
        if not fits or (columns[name][0] == "string" and not isinstance(value, str)):
            return "dead", f"{name} does not fit"
        parts.append(value)
    typed: dict[str, Any] = {}
    for column, (codec, kind) in columns.items():
        if column in table.key:
            continue
        value = row.get(column)
        if is_placeholder(codec, value):
            typed[column] = PLACEHOLDER
            continue
        fits, typed_value = _typed(column, value, codec, kind)
        if not fits:
            return "dead", f"{column} does not fit"
        typed[column] = typed_value
    typed.update(zip(table.key, parts, strict=True))
    key = parts[0] if len(parts) == 1 else tuple(parts)
    seq = (ts_i, lsn_i, record.partition, record.offset)
    return "ok", (key, op, seq, typed)


def old_key_of(record: Record, table: FoldTable = ARTICLES) -> Any:
    """The old key a key change's create names in its ``__debezium.oldkey`` header."""
    text = next((v for k, v in record.headers if k == OLD_KEY_HEADER), None)
    obj = _object(text) if text is not None else None
    if obj is None:
        return None
    body = _object(_unwrap(obj)) or {}
    columns = {name: (codec, kind) for name, codec, kind in table.columns}
    parts = []
    for name in table.key:
        fits, value = _typed(name, body.get(name), *columns[name])
        if not fits or value is None:
            return None
        parts.append(value)
    return parts[0] if len(parts) == 1 else tuple(parts)


def _rank(seq: tuple[int, int, int, int], order: str) -> tuple[int, int, int, int]:
    """The sequence as compared: commit time first, or (order "lsn") WAL position first."""
    ts, lsn, partition, offset = seq
    return (lsn, ts, partition, offset) if order == "lsn" else seq


def fold(
    records: Iterable[Record],
    event_format: str = "envelope",
    order: str = "ts_ms",
    table: FoldTable = ARTICLES,
) -> Folded:
    """The table the records must produce (rows by key; see :class:`Folded`)."""
    result = Folded()
    changes = []
    for record in records:
        kind, detail = decode(record, event_format, table)
        if kind == "dead":
            result.dead[(record.partition, record.offset)] = detail
        elif kind == "ok":
            changes.append((*detail, old_key_of(record, table)))
    state: dict[Any, tuple[tuple[int, int, int, int], dict[str, Any] | None]] = {}
    # every row version of a key, for the create of a key change (TOAST from the old key)
    versions: dict[Any, list[tuple[tuple[int, int, int, int], dict[str, Any]]]] = {}
    for key, op, seq, row, old_key in sorted(changes, key=lambda c: _rank(c[2], order)):
        previous = state.get(key)
        if previous is not None and _rank(seq, order) <= _rank(previous[0], order):
            continue
        result.applied += 1
        if op == "d":
            state[key] = (seq, None)
            continue
        old = previous[1] if previous is not None else None
        if op == "c" and old_key is not None and PLACEHOLDER in row.values():
            earlier = versions.get(old_key, [])
            donors = [v for s, v in earlier if _rank(s, order) < _rank(seq, order)]
            old = donors[-1] if donors else None
        merged = {c: ((old or {}).get(c) if v == PLACEHOLDER else v) for c, v in row.items()}
        state[key] = (seq, merged)
        versions.setdefault(key, []).append((seq, merged))
    for key, (seq, row) in state.items():
        if row is None:
            result.deleted[key] = seq
        else:
            result.rows[key] = {**row, "_seq": seq}
    return result


@dataclass
class Version:
    """One version of a row in a history table (SCD type 2)."""

    op: str
    seq: tuple[int, int, int, int]
    valid_from_ms: int
    valid_to_ms: int | None
    row: dict[str, Any]


def history(
    records: Iterable[Record],
    event_format: str = "envelope",
    order: str = "ts_ms",
    table: FoldTable = ARTICLES,
) -> dict[Any, list[Version]]:
    """Every version of every key, oldest first, as a history table must hold them.

    A version is one change (a redelivery, same commit time and LSN, is the
    same version; its first delivery counts), in sequence order whatever order
    it arrived in. It is valid from its commit time until the next version's.
    A delete is a version holding only the key. A column the change left
    unavailable (TOAST) holds the value of the version before (none after a
    delete, or for the first version).
    """
    first: dict[tuple[Any, int, int], tuple[tuple[int, int, int, int], str, dict[str, Any]]] = {}
    for record in records:
        kind, detail = decode(record, event_format, table)
        if kind != "ok":
            continue
        key, op, seq, row = detail
        identity = (key, seq[0], seq[1])
        if identity not in first or _rank(seq, order) < _rank(first[identity][0], order):
            first[identity] = (seq, op, row)
    by_key: dict[Any, list[tuple[tuple[int, int, int, int], str, dict[str, Any]]]] = {}
    for (key, _, _), change in first.items():
        by_key.setdefault(key, []).append(change)
    out: dict[Any, list[Version]] = {}
    for key, changes in by_key.items():
        changes.sort(key=lambda c: _rank(c[0], order))
        carried: dict[str, Any] = {}
        versions: list[Version] = []
        for seq, op, row in changes:
            values = {k: v for k, v in row.items() if k in table.key}
            for column in table.names:
                if column in table.key:
                    continue
                if op == "d":
                    values[column] = None
                elif row.get(column) == PLACEHOLDER:
                    values[column] = carried.get(column)
                else:
                    values[column] = row.get(column)
                carried[column] = values[column]
            versions.append(Version(op, seq, seq[0], None, values))
        for before, after in pairwise(versions):
            before.valid_to_ms = after.valid_from_ms
        out[key] = versions
    return out
