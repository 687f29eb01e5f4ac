"""The pure transforms on a local SparkSession with hand-made Kafka rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from articles import ARTICLE_COLUMNS, ARTICLE_KEY, KEY

from cdc_iceberg.generator import TOAST_PLACEHOLDER

pytestmark = pytest.mark.integration  # needs the Spark jars on a real local session


def _value(op: str, key: str, ts: Any, lsn: Any, wrapped: bool = True, **row: Any) -> bytes:
    image = {"article_id": key, **row}
    body = {
        "op": op,
        "before": image if op == "d" else None,
        "after": None if op == "d" else image,
        "source": {"ts_ms": ts, "lsn": lsn, "connector": "postgresql"},
        "ts_ms": 1,
    }
    return json.dumps({"schema": {"type": "struct"}, "payload": body} if wrapped else body).encode()


def _raw(spark: Any, values: list[tuple[bytes | None, bytes | None]]) -> Any:
    rows = [
        (key, value, "topic", 0, offset, datetime(2026, 1, 1, tzinfo=UTC), 0)
        for offset, (key, value) in enumerate(values)
    ]
    schema = (
        "key binary, value binary, topic string, partition int, offset bigint, "
        "timestamp timestamp, timestampType int"
    )
    return spark.createDataFrame(rows, schema)


def test_parse_with_and_without_wrapper(spark: Any) -> None:
    from jobs.transforms import parse_events

    raw = _raw(
        spark,
        [
            (None, _value("c", "a", 10, 100, title="x")),
            (None, _value("u", "a", 11, 101, wrapped=False, title="y")),
            (b'{"article_id": "a"}', None),
        ],
    )
    rows = parse_events(raw, "envelope", KEY).orderBy("_kafka_offset").collect()
    assert [(r._op, r.ts_ms, r.lsn, r.article_id, r._problem) for r in rows[:2]] == [
        ("c", 10, 100, "a", None),
        ("u", 11, 101, "a", None),
    ]
    assert rows[0]._schema_json is not None and rows[1]._schema_json is None
    assert rows[2]._tombstone and rows[2]._problem is None


def test_delete_takes_key_from_before_image(spark: Any) -> None:
    from jobs.transforms import parse_events

    rows = parse_events(
        _raw(spark, [(None, _value("d", "gone", 5, 50))]), "envelope", KEY
    ).collect()
    assert (rows[0]._op, rows[0].article_id, rows[0]._problem) == ("d", "gone", None)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"{oops", "value is not a JSON object (one strict JSON object, unique keys)"),
        (_value("x", "a", 1, 1), "unknown op 'x'"),
        (_value("t", "a", 1, 1), "truncate event (op=t)"),
        (_value("t", "a", None, 1), "ordering field source.ts_ms is null"),
        (_value("t", "a", 1, "x"), "ordering field source.lsn is not a number (a 64-bit integer)"),
        (_value("c", "a", None, 1), "ordering field source.ts_ms is null"),
        (
            _value("c", "a", "soon", 1),
            "ordering field source.ts_ms is not a number (a 64-bit integer)",
        ),
        (
            _value("c", "a", 1, "0/16B3748"),
            "ordering field source.lsn is not a number (a 64-bit integer)",
        ),
        (b"\xff{}", "value is not valid UTF-8"),
        (
            _value("c", "a", 1, 1, title="\ud800"),
            "value holds an unpaired surrogate escape (\\uD800-\\uDFFF): not Unicode text",
        ),
    ],
)
def test_problems_are_named(spark: Any, value: bytes, problem: str) -> None:
    from jobs.transforms import parse_events

    assert (
        parse_events(_raw(spark, [(None, value)]), "envelope", KEY).collect()[0]._problem == problem
    )


def test_typing_flags_misfits_and_toast(spark: Any) -> None:
    from jobs.transforms import parse_events, type_columns

    raw = _raw(
        spark,
        [
            (None, _value("c", "a", 1, 1, word_count=12, published_at="2026-01-02T03:04:05.5Z")),
            (None, _value("u", "a", 2, 2, word_count="a dozen")),
            (None, _value("u", "a", 3, 3, body=TOAST_PLACEHOLDER, word_count=13)),
        ],
    )
    rows = (
        type_columns(parse_events(raw, "envelope", KEY), ARTICLE_COLUMNS, KEY)
        .orderBy("_kafka_offset")
        .collect()
    )
    assert rows[0].word_count == 12 and rows[0]._problem is None
    assert rows[0].published_at == datetime(2026, 1, 2, 3, 4, 5, 500000)
    assert "column word_count: value 'a dozen' does not fit type int" in rows[1]._problem
    assert rows[2]._unavailable == ["body"] and rows[2].body is None and rows[2]._problem is None


def test_collapse_keeps_newest_by_whole_tuple_and_fills_toast(spark: Any) -> None:
    from jobs.transforms import collapse_newest, parse_events, type_columns

    raw = _raw(
        spark,
        [
            (None, _value("c", "a", 100, 10, title="first", body="text")),
            (None, _value("u", "a", 100, 30, title="third", body=TOAST_PLACEHOLDER)),
            (None, _value("u", "a", 100, 20, title="second", body="newer text")),
            (None, _value("u", "b", 7, 7, title="only", body=TOAST_PLACEHOLDER)),
        ],
    )
    typed = type_columns(parse_events(raw, "envelope", KEY), ARTICLE_COLUMNS, KEY)
    names = [n for n, _ in ARTICLE_COLUMNS]
    rows = {r.article_id: r for r in collapse_newest(typed, names, key=KEY).collect()}
    assert rows["a"].title == "third" and rows["a"].lsn == 30
    assert rows["a"].body == "newer text" and rows["a"]._unavailable == []
    assert rows["a"]._events == 3
    assert rows["b"]._unavailable == ["body"]


def _changes_for_parts() -> list[tuple[str, str, int, str | None]]:
    """(op, key, sequence, body) of a batch whose keys mix updates, deletes and re-creates."""
    return [
        ("c", "a", 1, "a1"),
        ("u", "a", 2, TOAST_PLACEHOLDER),
        ("u", "a", 3, "a3"),
        ("u", "a", 4, TOAST_PLACEHOLDER),
        ("c", "b", 1, "b1"),
        ("d", "b", 2, None),
        ("c", "b", 3, TOAST_PLACEHOLDER),
        ("u", "c", 5, "c5"),
        ("d", "c", 6, None),
        ("u", "e", 1, TOAST_PLACEHOLDER),
    ]


def _collapsed_both_ways(spark: Any, changes: list[Any], toasted: set[str] | None) -> Any:
    from pyspark.sql import functions as F

    from jobs.transforms import (
        collapse_newest,
        combine_newest,
        newest_aggregates,
        parse_events,
        type_columns,
    )

    values = []
    for op, key, seq, body in changes:
        row = {} if op == "d" else {"title": f"{key}{seq}", "body": body}
        values.append((None, _value(op, key, 1000 + seq, seq, **row)))
    typed = type_columns(
        parse_events(_raw(spark, values), "envelope", KEY), ARTICLE_COLUMNS, KEY
    ).cache()
    names = [n for n, _ in ARTICLE_COLUMNS]
    # each key's changes split over two parts, as over Kafka partitions in the job
    parts = typed.groupBy((F.col("_kafka_offset") % 2).alias("part"), ARTICLE_KEY).agg(
        *newest_aggregates(names, toasted=toasted, key=KEY)
    )
    combined = {
        r.article_id: r.asDict()
        for r in combine_newest(parts, names, toasted=toasted, key=KEY).collect()
    }
    reference = {r.article_id: r.asDict() for r in collapse_newest(typed, names, key=KEY).collect()}
    return combined, reference


@pytest.mark.parametrize("toasted", [None, {"body"}, {"body", "title"}])
def test_combined_parts_equal_the_collapse_when_toasted_columns_are_known(
    spark: Any, toasted: set[str] | None
) -> None:
    combined, reference = _collapsed_both_ways(spark, _changes_for_parts(), toasted)
    assert combined.keys() == reference.keys() == {"a", "b", "c", "e"}
    for key, row in reference.items():
        if row["cdc_op"] == "d":  # a delete's values are never written
            fields = ("ts_ms", "lsn", "cdc_op", "_unavailable", "_events")
            assert {f: combined[key][f] for f in fields} == {f: row[f] for f in fields}
        else:
            assert combined[key] == row
    assert reference["a"]["body"] == "a3" and reference["a"]["_unavailable"] == []
    assert reference["e"]["_unavailable"] == ["body"]


def test_whole_rows_equal_the_collapse_in_a_batch_without_toast(spark: Any) -> None:
    changes = [(op, key, seq, body) for op, key, seq, body in _changes_for_parts()]
    changes = [(o, k, s, None if b == TOAST_PLACEHOLDER else b) for o, k, s, b in changes]
    combined, reference = _collapsed_both_ways(spark, changes, set())
    for key, row in reference.items():
        if row["cdc_op"] != "d":
            assert combined[key] == row
    assert reference["a"]["body"] is None and reference["a"]["_unavailable"] == []


def test_a_drivers_expressions_are_built_once_and_serve_every_batch(spark: Any) -> None:
    from jobs.transforms import _parse_projections, parse_events, reused

    envelope = reused(_parse_projections, "envelope", KEY, False)
    assert reused(_parse_projections, "envelope", KEY, False) is envelope
    assert reused(_parse_projections, "flattened", KEY, False) is not envelope
    assert reused(_parse_projections, "envelope", KEY, True) is not envelope
    # the same expressions parse two batches, each its own records
    first = parse_events(
        _raw(spark, [(None, _value("c", "a", 10, 100, title="x"))]), "envelope", KEY
    )
    second = parse_events(
        _raw(spark, [(None, _value("u", "b", 11, 101, title="y"))]), "envelope", KEY
    )
    assert [(r._op, r.article_id) for r in first.collect()] == [("c", "a")]
    assert [(r._op, r.article_id) for r in second.collect()] == [("u", "b")]
