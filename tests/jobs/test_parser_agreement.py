"""The job's parser and the reference fold agree on every record, one by one.

The job's transforms (``parse_events`` then ``type_columns``) run on a local
SparkSession over the fuzzed messages of the 10,000-message fault test, and over a
table of hand-written records, one per parsing rule. For each record both sides
must take the same decision (applied, or dead-lettered) and, when applied, produce
the same op, sequence and typed values. No broker: the Kafka coordinates are
assigned here as Kafka would (offsets count up per partition).
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from articles import ARTICLE_COLUMNS, ARTICLE_KEY, KEY
from reference_fold import PLACEHOLDER, Record, decode

from cdc_iceberg.settings import PROJECT_ROOT

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIMESTAMPS = {name for name, kind in ARTICLE_COLUMNS if kind == "timestamp"}


def _fuzz_module() -> Any:
    path = PROJECT_ROOT / "tests" / "integration" / "test_fuzz_parser.py"
    spec = importlib.util.spec_from_file_location("_fuzz_messages", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records(values: list[tuple[bytes | None, bytes | None, int]]) -> list[Record]:
    offsets: Counter[int] = Counter()
    out = []
    for key, value, partition in values:
        out.append(Record(partition, offsets[partition], key, value))
        offsets[partition] += 1
    return out


def _job(spark: Any, records: list[Record]) -> dict[tuple[int, int], dict[str, Any]]:
    """Each record through the job's transforms, keyed by (partition, offset)."""
    from pyspark.sql import functions as F

    from jobs.transforms import parse_events, type_columns

    rows = [
        (r.key, r.value, "topic", r.partition, r.offset, datetime(2026, 1, 1, tzinfo=UTC), 0)
        for r in records
    ]
    raw = spark.createDataFrame(
        rows,
        "key binary, value binary, topic string, partition int, offset bigint, "
        "timestamp timestamp, timestampType int",
    )
    typed = type_columns(parse_events(raw, "envelope", KEY), ARTICLE_COLUMNS, KEY)
    # timestamps as microseconds: exact, and any year survives the trip to Python
    out = typed.select(
        "kafka_partition",
        "kafka_offset",
        "cdc_op",
        "ts_ms",
        "lsn",
        F.col("_problem").alias("problem"),
        F.col("_unavailable").alias("unavailable"),
        *[F.unix_micros(n).alias(n) if n in TIMESTAMPS else F.col(n) for n, _ in ARTICLE_COLUMNS],
    ).collect()
    return {(r["kafka_partition"], r["kafka_offset"]): r.asDict() for r in out}


def _expected_value(column: str, value: Any) -> Any:
    if value is None or column not in TIMESTAMPS:
        return value
    return (value - EPOCH) // timedelta(microseconds=1)


def _disagreements(spark: Any, records: list[Record]) -> list[str]:
    job = _job(spark, records)
    problems = []
    for record in records:
        kind, detail = decode(record)
        got = job[(record.partition, record.offset)]
        where = (
            f"({record.partition}, {record.offset}) {record.value[:160]!r}" if record.value else ""
        )
        if kind == "skip":
            if got["problem"] is not None:
                problems.append(f"{where}: tombstone dead-lettered by the job")
            continue
        if kind == "dead":
            if got["problem"] is None:
                problems.append(f"{where}: oracle dead-letters ({detail}), the job applies it")
            continue
        if got["problem"] is not None:
            problems.append(f"{where}: job dead-letters ({got['problem']}), the oracle applies it")
            continue
        key, op, seq, row = detail
        if (got[ARTICLE_KEY], got["cdc_op"], got["ts_ms"], got["lsn"]) != (key, op, *seq[:2]):
            problems.append(f"{where}: key/op/sequence {got} != {(key, op, seq)}")
            continue
        for column, _ in ARTICLE_COLUMNS:
            want = row[column]
            if want == PLACEHOLDER and column != ARTICLE_KEY:
                if got[column] is not None or column not in got["unavailable"]:
                    problems.append(f"{where}: {column} should be unavailable (TOAST)")
                continue
            if got[column] != _expected_value(column, want):
                problems.append(f"{where}: {column} job {got[column]!r} oracle {want!r}")
    return problems


@pytest.mark.parametrize("seed", [0, 7])
def test_fuzzed_messages_agree(spark: Any, seed: int) -> None:
    messages = _fuzz_module().fuzz_messages(seed)
    records = _records([(m.key, m.value, m.partition) for m in messages])
    problems = _disagreements(spark, records)
    assert not problems, f"{len(problems)} disagreements:\n" + "\n".join(problems[:40])


def _envelope(after: str = '{"article_id":"a"}', source: str = '{"ts_ms":1,"lsn":2}') -> bytes:
    return f'{{"op":"c","source":{source},"after":{after}}}'.encode()


def _row(**fields: str) -> bytes:
    """An envelope whose row holds the given fields as raw JSON text."""
    return _envelope(
        "{" + ",".join([f'"{ARTICLE_KEY}":"a"'] + [f'"{k}":{v}' for k, v in fields.items()]) + "}"
    )


# (record value, applied?): one line per rule of the parser
RULES: list[tuple[bytes, bool]] = [
    # integers: a JSON integer, or a string of exactly a sign and ASCII digits
    (_row(word_count="7"), True),
    (_row(word_count='"+7"'), True),
    (_row(word_count="-0"), True),
    (_row(word_count='" 7 "'), False),
    (_row(word_count='"\\u0663"'), False),
    (_row(word_count="1e3"), False),
    (_row(word_count="1.0"), False),
    (_row(word_count="2147483648"), False),
    (_row(word_count="true"), False),
    (_envelope(source='{"ts_ms":1e3,"lsn":2}'), False),
    (_envelope(source='{"ts_ms":"1","lsn":" 2"}'), False),
    (_envelope(source='{"ts_ms":9223372036854775807,"lsn":-9223372036854775808}'), True),
    (_envelope(source='{"ts_ms":9223372036854775808,"lsn":2}'), False),
    # string columns: other JSON values as their compact JSON text
    (_row(title="1e3"), True),
    (_row(title="-0.0"), True),
    (_row(title="1E16"), True),
    (_row(title="1e400"), True),
    (_row(title="true"), True),
    (_row(title="123456789012345678901234567890"), True),
    (_row(title='{"x": [1, 2.50, "\\u00e9", "\\u001f"]}'), True),
    (_row(title="NaN"), False),
    (_row(title="-Infinity"), False),
    (_row(title="1" + "0" * 1000), False),
    # timestamps: RFC 3339 with a zone, at most microseconds, years 1 to 9999
    (_row(published_at='"2026-02-03T04:05:06Z"'), True),
    (_row(published_at='"2026-02-03 04:05:06.5+02:00"'), True),
    (_row(published_at='"2026-02-03T04:05:06-18:00"'), True),
    (_row(published_at='"9999-12-31T23:59:59.999999Z"'), True),
    (_row(published_at='"0001-01-01T00:00:00Z"'), True),
    (_row(published_at='"2026-02-03T04:05:06"'), False),
    (_row(published_at='"2026-02-03"'), False),
    (_row(published_at='"2026-02-03T04:05:06.1234567Z"'), False),
    (_row(published_at='"2026-02-03T04:05:06+18:30"'), False),
    (_row(published_at='" 2026-02-03T04:05:06Z"'), False),
    (_row(published_at='"2026-2-3T04:05:06Z"'), False),
    (_row(published_at='"20260203T040506Z"'), False),
    (_row(published_at='"2026-02-03T04:05:06 UTC"'), False),
    (_row(published_at='"0000-01-01T00:00:00Z"'), False),
    (_row(published_at='"0001-01-01T00:30:00+01:00"'), False),
    (_row(published_at='"9999-12-31T23:59:59.999999-01:00"'), False),
    (_row(published_at='"10000-01-01T00:00:00Z"'), False),
    (_row(published_at='"2026-02-29T00:00:00Z"'), False),
    (_row(published_at="1700000000000"), False),
    # one strict JSON object, UTF-8, unique keys
    (b"\xef\xbb\xbf" + _envelope(), False),
    (b" \n" + _envelope() + b"\n ", True),
    (_envelope() + b" x", False),
    (_envelope() + b"{}", False),
    (_envelope() + b"\x00", False),
    (_envelope().replace(b'"op"', b"'op'"), False),
    (_row(title='"X"').replace(b"X", b"\xff"), False),
    (_row(title='"\\ud800"'), False),
    (_row(title='"\\udc00"'), False),
    (_row(title='"\\ud83d\\ude00"'), True),
    (_row(title='"\\\\ud800"'), True),
    (b'{"op":"c","op":"d","source":{"ts_ms":1,"lsn":2},"after":{"article_id":"a"}}', False),
    (_envelope(source='{"ts_ms":1,"lsn":2,"ts_ms":3}'), False),
    (_row(title='"x","title":"y"'), False),
    (_envelope().replace(b'"op"', b'"x":{"a":1,"a":2},"op"'), True),
    # blocks given as a JSON string holding a JSON object are read as that object
    (_envelope(after=json.dumps('{"article_id":"a"}')), True),
    (_envelope(source=json.dumps('{"ts_ms":1,"lsn":2}')), True),
    (_envelope(after=json.dumps('{"article_id":"a"} x')), False),
    # keys: any JSON value, as text
    (_envelope(after='{"article_id":5.0}'), True),
    (_envelope(after='{"article_id":true}'), True),
    (_envelope(after='{"article_id":{"a":1}}'), True),
    (_envelope(after='{"article_id":""}'), True),
]


def test_each_parsing_rule(spark: Any) -> None:
    records = _records([(None, value, 0) for value, _ in RULES])
    problems = _disagreements(spark, records)
    assert not problems, "\n".join(problems)
    wrong = [
        v for r, (v, want) in zip(records, RULES, strict=True) if (decode(r)[0] == "ok") != want
    ]
    assert not wrong, f"records decided against the rule: {wrong}"
