"""The oracle: a plain-Python fold of Debezium records into the expected table.

It shares no code with the job. It reads the raw Kafka records (key and value
bytes with their partition and offset) and applies the change-application
contract as written in the product brief:

* records are ordered per key by ``(source.ts_ms, source.lsn, partition,
  offset)``; a change applies only if its sequence is newer than the key's
  state (the live row or the remembered delete), so duplicates are no-ops;
* deletes remove the row and are remembered with their sequence;
* a TOAST placeholder keeps the value the key held before the change;
* a record that cannot be applied is dead-lettered, Kafka tombstones are
  ignored, ``op = t`` is dead-lettered (the default truncate policy).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PLACEHOLDER = "__debezium_unavailable_value"
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
_INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Folded:
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead: dict[tuple[int, int], str] = field(default_factory=dict)
    deleted: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    applied: int = 0


def _object(text: Any) -> dict[str, Any] | None:
    if isinstance(text, dict):
        return text
    if isinstance(text, (bytes, str)):
        try:
            value = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            return None
        return value if isinstance(value, dict) else None
    return None


def _unwrap(obj: dict[str, Any]) -> Any:
    if "schema" in obj and "payload" in obj:
        return obj["payload"]
    return obj


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(value)
    return None


def _typed(column: str, value: Any) -> tuple[bool, Any]:
    """(fits, typed value) for one column of the table."""
    if value is None or value == PLACEHOLDER:
        return True, value
    if column in INT_COLUMNS:
        number = _as_int(value)
        return (number is not None and -(2**31) <= number < 2**31), number
    if column in TIMESTAMP_COLUMNS:
        if not isinstance(value, str):
            return False, None
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return False, None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return True, moment.astimezone(UTC)
    if isinstance(value, (dict, list)):
        return True, json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return True, "true" if value else "false"
    return True, str(value) if not isinstance(value, str) else value


def decode(record: Record, event_format: str = "envelope") -> tuple[str, Any]:
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
        op = "d" if str(body.get("__deleted", "false")).lower() == "true" else body.get("__op")
        ts, lsn = body.get("__source_ts_ms"), body.get("__lsn")
        row = {k: v for k, v in body.items() if not k.startswith("__")}
    else:
        op = body.get("op")
        source = body.get("source")
        if op in ("c", "u", "r", "d") and not isinstance(source, dict):
            return "dead", "no source"
        source = source if isinstance(source, dict) else {}
        ts, lsn = source.get("ts_ms"), source.get("lsn")
        row = body.get("before") if op == "d" else body.get("after")
    if op not in ("c", "u", "r", "d"):
        return "dead", f"op {op!r}"
    ts_i, lsn_i = _as_int(ts), _as_int(lsn)
    if ts_i is None or lsn_i is None or not all(-(2**63) <= v < 2**63 for v in (ts_i, lsn_i)):
        return "dead", "ordering field"
    if op != "d" and not isinstance(row, dict):
        return "dead", "no row"
    row = row if isinstance(row, dict) else {}
    key = row.get(KEY)
    if key is None and record.key is not None:
        key_obj = _object(record.key)
        inner = _object(_unwrap(key_obj)) if key_obj is not None else None
        key = inner.get(KEY) if inner else None
    if key is None:
        return "dead", "no key"
    typed: dict[str, Any] = {}
    for column in DATA_COLUMNS:
        fits, value = _typed(column, row.get(column))
        if not fits:
            return "dead", f"{column} does not fit"
        typed[column] = value
    typed[KEY] = str(key) if not isinstance(key, str) else key
    seq = (ts_i, lsn_i, record.partition, record.offset)
    return "ok", (typed[KEY], op, seq, typed)


def _rank(seq: tuple[int, int, int, int], order: str) -> tuple[int, int, int, int]:
    """The sequence as compared: commit time first, or (order "lsn") WAL position first."""
    ts, lsn, partition, offset = seq
    return (lsn, ts, partition, offset) if order == "lsn" else seq


def fold(records: Iterable[Record], event_format: str = "envelope", order: str = "ts_ms") -> Folded:
    """The table the records must produce (rows keyed by article_id)."""
    result = Folded()
    changes = []
    for record in records:
        kind, detail = decode(record, event_format)
        if kind == "dead":
            result.dead[(record.partition, record.offset)] = detail
        elif kind == "ok":
            changes.append(detail)
    state: dict[str, tuple[tuple[int, int, int, int], dict[str, Any] | None]] = {}
    for key, op, seq, row in sorted(changes, key=lambda c: _rank(c[2], order)):
        previous = state.get(key)
        if previous is not None and _rank(seq, order) <= _rank(previous[0], order):
            continue
        result.applied += 1
        if op == "d":
            state[key] = (seq, None)
            continue
        old = previous[1] if previous is not None else None
        merged = {c: ((old or {}).get(c) if v == PLACEHOLDER else v) for c, v in row.items()}
        state[key] = (seq, merged)
    for key, (seq, row) in state.items():
        if row is None:
            result.deleted[key] = seq
        else:
            result.rows[key] = {**row, "_seq": seq}
    return result
