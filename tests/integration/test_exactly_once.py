"""The change-application contract against real Kafka, Spark and Iceberg.

Every test writes generated Debezium records to its own topic, drains them
with the job, reads the table back with pyiceberg and compares it with the
reference fold of the same records.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from reference_fold import Record, decode, fold
from support import (
    assert_ranges_tile,
    assert_table_equals_fold,
    dead_letters,
    send,
    snapshots,
)

from cdc_iceberg import kafka_offsets
from cdc_iceberg.generator import ArticleSource, Message
from cdc_iceberg.settings import Settings
from jobs.batch_writer import BatchWriter
from jobs.cdc_to_iceberg import drain
from jobs.iceberg_tables import IcebergTables

pytestmark = pytest.mark.integration


def test_generated_history_equals_reference_fold(spark: Any, pipeline: Settings) -> None:
    source = ArticleSource(seed=11, partitions=3)
    messages = source.random_history(
        1500,
        200,
        snapshot_rows=100,
        toast_share=0.2,
        same_ms_share=0.4,
        pk_change_share=0.03,
        redelivery_share=0.05,
    )
    records = send(pipeline, messages)
    settings = pipeline.replace(max_offsets_per_trigger=400)

    result = drain(spark, settings)

    expected = fold(records)
    assert len(result.batches) >= 4, "maxOffsetsPerTrigger must split the backlog"
    assert_table_equals_fold(settings, expected.rows)
    assert dead_letters(settings) == []
    end = kafka_offsets.end_offsets(settings)
    assert_ranges_tile(settings, end)
    assert kafka_offsets.committed_offsets(settings) == end
    totals = result.totals()
    assert totals["events_in"] == len(records)
    assert totals["kafka_tombstones"] == sum(1 for r in records if r.value is None)
    for batch in result.batches:
        changes, keys = _changes_and_keys(records, batch.offsets)
        assert batch.collapsed_in_batch == changes - keys, f"batch {batch.batch_id}"
        applied = batch.inserted + batch.updated + batch.deleted + batch.stale
        assert applied == keys, f"batch {batch.batch_id}: every key applied or stale"


def _changes_and_keys(records: list[Record], offsets: dict[str, list[int]]) -> tuple[int, int]:
    """The reference's valid changes in a batch's offset ranges, and their distinct keys."""
    keys = []
    for record in records:
        start, end = offsets.get(str(record.partition), (0, 0))
        outcome, change = decode(record)
        if start <= record.offset < end and outcome == "ok":
            keys.append(change[0])
    return len(keys), len(set(keys))


def test_the_session_runs_with_the_design_documents_spark_settings(spark: Any) -> None:
    # the original design's session: adaptive execution with partition coalescing, Kryo,
    # and a checkpoint Spark never deletes when the query stops
    assert {
        key: spark.conf.get(key)
        for key in (
            "spark.sql.adaptive.enabled",
            "spark.sql.adaptive.coalescePartitions.enabled",
            "spark.sql.streaming.checkpointLocation.deleteCheckpointOnShutdown",
        )
    } == {
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        "spark.sql.streaming.checkpointLocation.deleteCheckpointOnShutdown": "false",
    }
    serializer = spark.sparkContext.getConf().get("spark.serializer")
    assert serializer == "org.apache.spark.serializer.KryoSerializer"


def test_rerun_with_nothing_new_changes_nothing(spark: Any, pipeline: Settings) -> None:
    records = send(pipeline, ArticleSource(seed=3).random_history(300, 60, snapshot_rows=20))
    drain(spark, pipeline)
    before = snapshots(pipeline)

    result = drain(spark, pipeline)

    assert snapshots(pipeline) == before
    assert sum(b.events_in for b in result.batches) == 0
    assert_table_equals_fold(pipeline, fold(records).rows)


def test_same_millisecond_updates_are_ordered_by_lsn(spark: Any, pipeline: Settings) -> None:
    """The seed's `s.ts_ms > t.ts_ms` would keep the first of these updates."""
    source = ArticleSource(seed=5, partitions=1)
    key = source.insert().key
    changes = [source.insert(key=None)]  # another key, for company
    first = source.update(key, same_ms=False)
    second = source.update(key, same_ms=True)
    third = source.update(key, same_ms=True)
    assert first.ts_ms == second.ts_ms == third.ts_ms
    # the first batch holds the create and the first update; the ties land in later batches
    records = send(pipeline, source.to_messages([*source._emitted[:1], *changes, first]), 1)
    drain(spark, pipeline)
    records += send(pipeline, source.to_messages([second]), 1)
    drain(spark, pipeline)
    records += send(pipeline, source.to_messages([third]), 1)
    drain(spark, pipeline)

    expected = fold(records)
    assert expected.rows[key]["title"] == source.rows[key]["title"]
    assert_table_equals_fold(pipeline, expected.rows)


def test_a_column_first_left_unavailable_in_a_later_batch(spark: Any, pipeline: Settings) -> None:
    """A drain aggregates only the columns it has seen TOASTed; a new one is grouped again.

    The first batch has no TOAST placeholder. In the second, keys are updated,
    some changing their body, and then updated again with the body unavailable:
    the table must hold the body of the batch's earlier update, not the stored one.
    """
    source = ArticleSource(seed=23, partitions=1)
    created = [source.insert() for _ in range(12)]
    first = [*created, *[source.update(c.key) for c in created[:6]]]
    bodies = {c.key: source.rows[c.key]["body"] for c in created}
    second = []
    for change in created:
        second += [source.update(change.key) for _ in range(3)]
        second.append(source.update(change.key, toast=True))
    changed = [c.key for c in created if source.rows[c.key]["body"] != bodies[c.key]]
    assert changed, "the scenario needs a body changed before the TOASTed update"
    records = send(pipeline, source.to_messages(first), 1)
    settings = pipeline.replace(max_offsets_per_trigger=len(first))
    records += send(pipeline, source.to_messages(second), 1)

    result = drain(spark, settings)

    assert len([b for b in result.batches if b.events_in]) >= 2
    expected = fold(records)
    for key in changed:
        assert expected.rows[key]["body"] == source.rows[key]["body"] != bodies[key]
    assert_table_equals_fold(settings, expected.rows)
    # what the run learned is committed with the table: the next run starts with it
    assert snapshots(settings)[-1]["cdc.unavailable-columns"] == '["body"]'
    tables = IcebergTables.declared(spark, settings)
    assert BatchWriter(spark, settings, tables, None).toasted == {"body"}


def test_late_update_never_resurrects_a_deleted_row(spark: Any, pipeline: Settings) -> None:
    source = ArticleSource(seed=8, partitions=1)
    key = source.insert().key
    update = source.update(key)
    delete = source.delete(key)
    records = send(pipeline, source.to_messages([source._emitted[0], update, delete]), 1)
    drain(spark, pipeline)
    # the update is delivered again after the delete, as after a connector restart
    records += send(pipeline, source.to_messages([update], redelivered=True), 1)
    drain(spark, pipeline)

    assert key not in fold(records).rows
    assert_table_equals_fold(pipeline, fold(records).rows)


def test_backfill_from_earliest_into_live_table_is_harmless(spark: Any, pipeline: Settings) -> None:
    records = send(pipeline, ArticleSource(seed=21).random_history(600, 80, snapshot_rows=30))
    drain(spark, pipeline)
    # a second pipeline id re-reads the whole topic into the same table
    backfill = pipeline.replace(
        pipeline_id="backfill",
        checkpoint_location=pipeline.checkpoint_location + "_bf",
        kafka_consumer_group=pipeline.kafka_consumer_group + "_bf",
    )
    result = drain(spark, backfill, starting_offsets="earliest")

    assert sum(b.inserted + b.updated + b.deleted for b in result.batches) == 0
    assert_table_equals_fold(pipeline, fold(records).rows)


def test_toast_placeholder_keeps_the_stored_body(spark: Any, pipeline: Settings) -> None:
    source = ArticleSource(seed=4, partitions=1)
    key = source.insert().key
    body = source.rows[key]["body"]
    records = send(pipeline, source.to_messages(source._emitted), 1)
    drain(spark, pipeline)
    records += send(pipeline, source.to_messages([source.update(key, toast=True)]), 1)
    drain(spark, pipeline)

    from support import live_rows

    row = live_rows(pipeline)[key]
    assert row["body"] == body
    assert row["title"] == source.rows[key]["title"]
    assert_table_equals_fold(pipeline, fold(records).rows)


def _bad_messages() -> list[tuple[Message, str]]:
    good = ArticleSource(seed=99, partitions=1, wrapper=False)
    change = good.insert()
    payload = json.loads(good.encode(change).value or b"{}")

    def variant(**changes: Any) -> bytes:
        data = json.loads(json.dumps(payload))
        for path, value in changes.items():
            target = data
            *parents, leaf = path.split("__")
            for part in parents:
                target = target[part]
            if value is _DELETE:
                target.pop(leaf, None)
            else:
                target[leaf] = value
        return json.dumps(data).encode()

    key = json.dumps({"article_id": "bad"}).encode()
    return [
        (Message(key, b"{not json", 0), "JSON"),
        (Message(key, b"[1, 2, 3]", 0), "JSON"),
        (Message(key, b"\xff\xfe\x00garbage", 0), "UTF-8"),
        (Message(key, variant(op="x"), 0), "unknown op"),
        (Message(key, variant(source__ts_ms=None), 0), "ts_ms is null"),
        (Message(key, variant(source__ts_ms="yesterday"), 0), "ts_ms is not a number"),
        (Message(key, variant(source__lsn=_DELETE), 0), "lsn is null"),
        (Message(None, variant(after__article_id=None), 0), "no article_id"),
        (Message(key, variant(after__word_count="many"), 0), "does not fit type int"),
        (Message(key, variant(after__word_count=2**40), 0), "does not fit type int"),
        (Message(key, variant(after__published_at="not a date"), 0), "does not fit type timestamp"),
        (Message(key, variant(after=None), 0), "no row image"),
    ]


_DELETE = object()


def test_bad_records_are_dead_lettered_exactly_once(spark: Any, pipeline: Settings) -> None:
    source = ArticleSource(seed=12, partitions=1)
    good = source.random_history(120, 30)
    bad = _bad_messages()
    mixed = good[:60] + [m for m, _ in bad] + good[60:]
    records = send(pipeline, mixed, 1)

    drain(spark, pipeline)
    # replay everything through a fresh checkpoint and pipeline: no duplicate dead letters
    drain(
        spark,
        pipeline.replace(
            pipeline_id="replay", checkpoint_location=pipeline.checkpoint_location + "_r"
        ),
        starting_offsets="earliest",
    )

    expected = fold(records)
    letters = dead_letters(pipeline)
    assert sorted((d["kafka_partition"], d["kafka_offset"]) for d in letters) == sorted(
        expected.dead
    )
    by_offset = {d["kafka_offset"]: d for d in letters}
    for record, (message, reason) in zip(records[60 : 60 + len(bad)], bad, strict=True):
        letter = by_offset[record.offset]
        assert reason in letter["reason"], (reason, letter["reason"])
        assert letter["raw_value"] == message.value
        assert letter["raw_key"] == message.key
        assert letter["topic"] == pipeline.kafka_topic
    assert_table_equals_fold(pipeline, expected.rows)


def test_primary_key_change_applies_delete_and_create(spark: Any, pipeline: Settings) -> None:
    source = ArticleSource(seed=31, partitions=3)
    old = source.insert().key
    gone, born = source.change_key(old)
    assert gone.lsn == born.lsn
    records = send(pipeline, source.to_messages(source._emitted))
    drain(spark, pipeline)

    expected = fold(records)
    assert old not in expected.rows and born.key in expected.rows
    assert_table_equals_fold(pipeline, expected.rows)


def test_flattened_extract_new_record_state_format(spark: Any, pipeline: Settings) -> None:
    settings = pipeline.replace(event_format="flattened")
    source = ArticleSource(seed=41, event_format="flattened")
    records = send(settings, source.random_history(400, 60, snapshot_rows=20, toast_share=0.2))
    drain(spark, settings)
    assert_table_equals_fold(settings, fold(records, "flattened").rows)


def test_aborted_kafka_transactions_never_land(spark: Any, pipeline: Settings) -> None:
    source = ArticleSource(seed=51, partitions=1)
    committed = send(pipeline, source.random_history(100, 20), 1, transactional_id="tx-ok")
    # an aborted transaction writes records (and a marker) that read_committed skips
    doomed = ArticleSource(seed=52, partitions=1).random_history(50, 10)
    send(pipeline, doomed, 1, transactional_id="tx-doomed", abort=True)
    later = send(pipeline, source.random_history(40, 20), 1, transactional_id="tx-ok")

    drain(spark, pipeline)

    expected = fold(committed + later)
    assert_table_equals_fold(pipeline, expected.rows)
    assert_ranges_tile(pipeline, kafka_offsets.end_offsets(pipeline))


def test_lsn_order_lets_a_change_beat_a_late_stamped_snapshot_read(
    spark: Any, pipeline: Settings
) -> None:
    """CDC_SEQUENCE=lsn: Debezium stamps snapshot reads with the time it read them.

    A change committed while the snapshot ran has an earlier ts_ms than the
    snapshot's image of the row. The first such change carries the very LSN
    the snapshot reads are stamped with (the slot's consistent point); later
    ones a higher LSN. Ordered by LSN, with a snapshot read placed just before
    its LSN, the change wins (and a delete stays deleted); ordered by ts_ms
    first it would lose.
    """
    from jobs.iceberg_tables import SequenceOrderMismatch

    source = ArticleSource(seed=21, partitions=1)
    snapshot = source.snapshot(3)
    updated, deleted, untouched = (c.key for c in snapshot)
    changes = [source.update(updated), source.delete(deleted)]
    read_late = max(c.ts_ms for c in changes) + 500
    for change in snapshot:
        change.ts_ms = read_late  # the snapshot read the rows after the changes committed
    changes[0].lsn = snapshot[0].lsn  # the first change after the slot: the slot's LSN
    records = send(pipeline, source.to_messages(snapshot + changes), 1)
    settings = pipeline.replace(sequence_order="lsn")

    drain(spark, settings)

    by_lsn, by_time = fold(records, order="lsn"), fold(records, order="ts_ms")
    assert by_lsn.rows != by_time.rows, "the two orders must disagree on this history"
    assert deleted not in by_lsn.rows and {updated, untouched} <= set(by_lsn.rows)
    assert_table_equals_fold(settings, by_lsn.rows)

    with pytest.raises(SequenceOrderMismatch, match="CDC_SEQUENCE"):
        drain(spark, pipeline)  # the same table under the default order is refused
