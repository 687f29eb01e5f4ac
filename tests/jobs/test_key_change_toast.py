"""A primary-key change whose create carries TOAST placeholders takes the old key's values."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from articles import ARTICLE_COLUMNS, ARTICLE_KEY, KEY

from cdc_iceberg.generator import TOAST_PLACEHOLDER

pytestmark = pytest.mark.integration  # needs the Spark jars on a real local session

SEQ = "ts_ms bigint, lsn bigint, kafka_partition int, kafka_offset bigint"
_IMAGE_SEQ = "ts_ms: bigint, lsn: bigint, kafka_partition: int, kafka_offset: bigint"
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
        [("s", 900, 5, 0, 0, "S", "stored body of s")],
        f"article_id string, {SEQ}, title string, body string",
    )
    names = [n for n, _ in ARTICLE_COLUMNS if n in ("article_id", "title", "body")]

    out = fill_from_old_key(
        typed, old_keys(raw, [(ARTICLE_KEY, "string")]), [stored], names, key=KEY
    )

    rows = {(r.article_id, r.kafka_offset): r for r in out.collect()}
    assert len(rows) == typed.count(), "every event passes, once"
    assert rows[("a2", 2)].body == "body of a" and rows[("a2", 2)]._unavailable == []
    assert rows[("s2", 4)].body == "stored body of s" and rows[("s2", 4)]._unavailable == []
    assert rows[("x2", 5)].body is None and rows[("x2", 5)]._unavailable == ["body"]
    assert rows[("k", 6)]._unavailable == ["body"]
    assert rows[("a", 7)].body == "a newer body"


def test_a_key_change_applied_before_its_create_leaves_the_old_row_for_it(spark: Any) -> None:
    """The delete of a key change keeps the row it removes (its image); a create in a
    later batch takes its TOASTed values from it, and never from a newer version."""
    from jobs.transforms import (
        fill_from_old_key,
        key_change_images,
        old_keys,
        parse_events,
        stored_versions,
        type_columns,
    )

    moved = [("__debezium.newkey", b'{"article_id": "a2"}')]
    first = _raw(
        spark,
        [
            (_event("u", "a", 10, title="A", body="newest body of a"), []),
            (_event("d", "a", 20), moved),
            (_event("d", "p", 30), []),  # an ordinary delete keeps no image
            (_event("d", "n", 40), [("__debezium.newkey", b'{"article_id": "n2"}')]),
        ],
    )
    names = ["article_id", "title", "body"]
    typed = type_columns(parse_events(first, "envelope", KEY), ARTICLE_COLUMNS, KEY)
    typed = typed.localCheckpoint().where("_problem IS NULL")
    assert [r._kafka_moved for r in typed.orderBy("kafka_offset").collect()] == [
        False,
        True,
        False,
        True,
    ]
    live = spark.createDataFrame(
        [
            ("a", 5, 1, 0, 9, "old title", "stored body of a"),
            ("p", 5, 1, 0, 8, "P", "body of p"),
        ],
        f"article_id string, {SEQ}, title string, body string",
    )
    no_images = spark.createDataFrame(
        [], f"article_id string, {SEQ}, image struct<title: string, body: string, {_IMAGE_SEQ}>"
    )
    images = key_change_images(
        typed, stored_versions(live, no_images, names, key=KEY), names, key=KEY
    ).collect()
    # "n" has no version anywhere: no image; "p" is no key change
    assert [(r.article_id, r.kafka_offset) for r in images] == [("a", 1)]
    image = images[0].image
    assert (image.title, image.body) == ("A", "newest body of a")
    assert (image.ts_ms, image.lsn, image.kafka_offset) == (1000, 10, 0), "the version's own"

    # later: the old key is live again (a newer version), then the create arrives
    tombstones = spark.createDataFrame(
        [("a", 1000, 20, 0, 1, images[0].image.asDict())],
        f"article_id string, {SEQ}, image struct<title: string, body: string, {_IMAGE_SEQ}>",
    )
    again = spark.createDataFrame(
        [("a", 5000, 90, 0, 7, "A again", "a newer body")],
        f"article_id string, {SEQ}, title string, body string",
    )
    second = _raw(
        spark, [(_event("c", "a2", 20, title="A", body=TOAST_PLACEHOLDER), _old_key_header("a"))]
    )
    created = type_columns(parse_events(second, "envelope", KEY), ARTICLE_COLUMNS, KEY)
    created = created.localCheckpoint()
    out = fill_from_old_key(
        created,
        old_keys(second, [(ARTICLE_KEY, "string")]),
        stored_versions(again, tombstones, names, key=KEY),
        names,
        key=KEY,
    ).collect()
    assert [(r.article_id, r.body, r._unavailable) for r in out] == [("a2", "newest body of a", [])]


def test_a_create_read_before_its_delete_takes_the_old_rows_updates_read_ahead(
    spark: Any,
) -> None:
    """The old key's partition lags: the batch holds the create of a key change but not
    its delete, nor the update just before it. Such a create is found, and the changes
    read ahead of the batch give it the update's value."""
    from jobs.transforms import (
        creates_before_their_delete,
        fill_from_old_key,
        old_keys,
        parse_events,
        type_columns,
    )

    def typed(raw: Any) -> Any:
        parsed = type_columns(parse_events(raw, "envelope", KEY), ARTICLE_COLUMNS, KEY)
        return parsed.localCheckpoint().where("_problem IS NULL")

    placeholder = {"title": "T", "body": TOAST_PLACEHOLDER}
    batch = _raw(
        spark,
        [
            # "b" -> "b2": the delete of "b" and its update before it are not read yet
            (_event("c", "b2", 20, **placeholder), _old_key_header("b")),
            # "c" -> "c2": both halves in the batch
            (_event("d", "c", 30), [("__debezium.newkey", b'{"article_id": "c2"}')]),
            (_event("c", "c2", 30, **placeholder), _old_key_header("c")),
            # "e" -> "e2": the delete was applied by an earlier batch, with its image
            (_event("c", "e2", 40, **placeholder), _old_key_header("e")),
        ],
    )
    events = typed(batch)
    old = old_keys(batch, [(ARTICLE_KEY, "string")])
    tombstones = spark.createDataFrame(
        [("e", 1000, 40, 1, 3, ("T", "body of e", 1000, 39, 1, 2))],
        f"article_id string, {SEQ}, image struct<title: string, body: string, {_IMAGE_SEQ}>",
    )

    pending = creates_before_their_delete(events, old, tombstones, key=KEY).collect()
    assert len(pending) == 1 and pending[0]._log_append_time is False

    stored = spark.createDataFrame(
        [("b", 900, 5, 0, 0, "T", "stored body of b")],
        f"article_id string, {SEQ}, title string, body string",
    )
    ahead = typed(
        _raw(
            spark,
            [
                (_event("u", "b", 15, title="T", body="updated body of b"), []),
                (_event("d", "b", 20), [("__debezium.newkey", b'{"article_id": "b2"}')]),
                (_event("c", "b", 25, title="T", body="a later row of key b"), []),
            ],
        )
    )
    names = ["article_id", "title", "body"]

    def body_of_b2(**ahead_or_not: Any) -> str:
        filled = fill_from_old_key(events, old, [stored], names, key=KEY, **ahead_or_not)
        return str(filled.where("article_id = 'b2'").first().body)

    assert body_of_b2(ahead=ahead) == "updated body of b"
    assert body_of_b2() == "stored body of b"  # what the table held: stale
