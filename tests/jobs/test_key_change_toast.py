"""A primary-key change whose create carries TOAST placeholders takes the old key's values."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from articles import ARTICLE_COLUMNS, ARTICLE_KEY, KEY

from cdc_iceberg.generator import TOAST_PLACEHOLDER

pytestmark = pytest.mark.integration  # needs the Spark jars on a real local session

RAW_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset bigint, "
    "timestamp timestamp, timestampType int, headers array<struct<key:string,value:binary>>"
)


def _event(op: str, key: str, lsn: int, **row: Any) -> bytes:
    image = {"article_id": key, **row}
    return json.dumps(
        {
            "op": op,
            "before": image if op == "d" else None,
            "after": None if op == "d" else image,
            "source": {"ts_ms": 1000, "lsn": lsn},
        }
    ).encode()


def _old_key_header(key: str) -> list[tuple[str, bytes]]:
    wrapped = {"schema": {"type": "struct"}, "payload": {"article_id": key}}
    return [("__debezium.oldkey", json.dumps(wrapped).encode())]


def _raw(spark: Any, records: list[tuple[bytes, list[tuple[str, bytes]]]]) -> Any:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        (None, value, "t", 0, offset, moment, 0, headers)
        for offset, (value, headers) in enumerate(records)
    ]
    return spark.createDataFrame(rows, RAW_SCHEMA)


def test_create_of_a_key_change_takes_toasted_values_from_the_old_key(spark: Any) -> None:
    from jobs.transforms import fill_from_old_key, old_keys, parse_events, type_columns

    raw = _raw(
        spark,
        [
            # in this batch: a row is born, then its key changes
            (_event("c", "a", 10, title="A", body="body of a"), []),
            (_event("d", "a", 20), []),
            (_event("c", "a2", 20, title="A", body=TOAST_PLACEHOLDER), _old_key_header("a")),
            # the old key only in the table
            (_event("d", "s", 30), []),
            (_event("c", "s2", 30, title="S", body=TOAST_PLACEHOLDER), _old_key_header("s")),
            # the old key nowhere: the placeholder stays unavailable
            (_event("c", "x2", 40, title="X", body=TOAST_PLACEHOLDER), _old_key_header("x")),
            # an ordinary update with a placeholder is left to the MERGE
            (_event("u", "k", 50, title="K", body=TOAST_PLACEHOLDER), []),
            # the old key re-used after the change: its newer body must not be taken
            (_event("c", "a", 60, title="A again", body="a newer body"), []),
        ],
    )
    # materialized, as the job's typed batch is (persisted)
    typed = type_columns(parse_events(raw, "envelope", KEY), ARTICLE_COLUMNS, KEY).localCheckpoint()
    typed = typed.where("_problem IS NULL")
    stored = spark.createDataFrame(
        [("s", "S", "stored body of s")], "article_id string, title string, body string"
    )
    names = [n for n, _ in ARTICLE_COLUMNS if n in ("article_id", "title", "body")]

    out = fill_from_old_key(typed, old_keys(raw, [(ARTICLE_KEY, "string")]), stored, names, key=KEY)

    rows = {(r.article_id, r.kafka_offset): r for r in out.collect()}
    assert len(rows) == typed.count(), "every event passes, once"
    assert rows[("a2", 2)].body == "body of a" and rows[("a2", 2)]._unavailable == []
    assert rows[("s2", 4)].body == "stored body of s" and rows[("s2", 4)]._unavailable == []
    assert rows[("x2", 5)].body is None and rows[("x2", 5)]._unavailable == ["body"]
    assert rows[("k", 6)]._unavailable == ["body"]
    assert rows[("a", 7)].body == "a newer body"
