"""Any Postgres table: key, columns and types from Debezium's schema blocks.

Tables described by :mod:`cdc_iceberg.table_generator` (composite keys, every
Postgres type) go through a real Kafka broker and the real drain into Iceberg,
with no schema declared anywhere: the table is created from the events. The
oracle is the plain-Python reference fold, told each column's codec and type by
hand below (never from the code under test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from reference_fold import fold
from support import assert_table_equals_fold, catalog, dead_letters
from tables import (
    ADDED,
    ORDER_LINES_FOLD,
    PLAIN_WORDS,
    PLAIN_WORDS_FOLD,
    TENANT_NOTES_FOLD,
    TYPED_ROWS_FOLD,
    corrupt,
    publish,
)

from cdc_iceberg.schema_discovery import SchemaUnknownError
from cdc_iceberg.settings import Settings
from cdc_iceberg.table_generator import (
    ORDER_LINES,
    TENANT_NOTES,
    TYPED_ROWS,
    UNCHANGED_TOAST,
    ColumnSpec,
    TableSource,
    TableSpec,
)
from cdc_iceberg.table_model import TableModelError
from jobs.cdc_to_iceberg import drain


@pytest.fixture
def undeclared(pipeline: Settings, work_dir: Path) -> Settings:
    """The test's pipeline with a pipelines file that declares no schema at all."""
    empty = work_dir / "pipelines" / f"{pipeline.pipeline_id}-empty.yaml"
    empty.write_text("tables: {}\n", encoding="utf-8")
    return pipeline.replace(pipelines_file=str(empty))


def identifier_fields(settings: Settings) -> list[str]:
    table = catalog(settings).load_table(settings.iceberg_table)
    schema = table.schema()
    return [schema.find_field(i).name for i in schema.identifier_field_ids]


def test_composite_key_table_is_created_from_the_events(spark: Any, undeclared: Settings) -> None:
    settings = undeclared.replace(max_offsets_per_trigger=300)
    source = TableSource(ORDER_LINES, seed=3)
    history = source.random_history(
        500, 60, snapshot_rows=25, toast_share=0.3, pk_change_share=0.06, redelivery_share=0.02
    )
    first = publish(settings, history[:260])
    drain(spark, settings)
    later = publish(settings, history[260:])
    result = drain(spark, settings)
    assert result.batches, "the second drain found the newer events"

    records = first + later
    expected = fold(records, table=ORDER_LINES_FOLD)
    assert expected.rows and expected.deleted, "the history has live and deleted keys"
    assert any(isinstance(k, tuple) for k in expected.rows)
    assert_table_equals_fold(settings, expected.rows, ORDER_LINES_FOLD)
    assert identifier_fields(settings) == ["order_id", "line_no"]
    assert not dead_letters(settings)

    spec = catalog(settings).load_table(settings.iceberg_table).spec()
    (bucket,) = spec.fields
    assert str(bucket.transform).startswith("bucket")
    # tombstones are kept per key tuple
    tombstones = catalog(settings).load_table(settings.tombstone_table).scan().to_arrow()
    columns = (tombstones["order_id"].to_pylist(), tombstones["line_no"].to_pylist())
    held = set(zip(*columns, strict=True))
    assert held == set(expected.deleted)


def test_a_key_change_whose_create_comes_in_a_later_batch_keeps_the_toasted_values(
    spark: Any, undeclared: Settings
) -> None:
    """Debezium writes a key change's delete to the old key's partition and its create to
    the new key's: the delete may be applied a batch before the create. The create's
    TOAST placeholders still take the old row's values, as they were at the change."""
    settings = undeclared
    source = TableSource(ORDER_LINES, seed=11)
    rows = source.snapshot(4)
    old = rows[0].key
    first = publish(settings, source.to_messages(rows))
    drain(spark, settings)
    # the row's newest version comes in the batch that also deletes it
    update = source.update(old)
    gone, born = source.change_key(old, toast=True)
    second = publish(settings, source.to_messages([update, gone]))
    drain(spark, settings)
    third = publish(settings, source.to_messages([born]))
    drain(spark, settings)

    expected = fold(first + second + third, table=ORDER_LINES_FOLD)
    assert born.after is not None and born.after["sku"] is UNCHANGED_TOAST
    assert old in expected.deleted
    assert expected.rows[born.key]["sku"] == source.rows[born.key]["sku"]
    assert_table_equals_fold(settings, expected.rows, ORDER_LINES_FOLD)


def test_a_key_change_whose_create_is_read_before_the_old_rows_last_update_keeps_its_value(
    spark: Any, undeclared: Settings
) -> None:
    """The other order: the old key's partition lags, so a bounded batch reads the create
    of the new key before the update of the old row that came just before the key change.
    The create's TOAST placeholders take the value of that update, not the older one the
    table holds."""
    settings = undeclared.replace(max_offsets_per_trigger=8)
    source = TableSource(ORDER_LINES, seed=11)
    rows = source.snapshot(12)
    first = publish(settings, source.to_messages(rows))
    drain(spark, settings)
    partition_of = {r.key: p.partition for r, p in zip(rows, first, strict=True)}
    old = rows[0].key
    # the old key's partition gets a backlog of other rows' updates ...
    mates = [k for k, p in partition_of.items() if p == partition_of[old] and k != old]
    assert mates, "another row shares the old key's partition"
    backlog = [source.update(mates[i % len(mates)]) for i in range(16)]
    # ... then the old row's TOASTable value changes, and then its key
    stored_sku = source.rows[old]["sku"]
    updates = [source.update(old)]
    while source.rows[old]["sku"] == stored_sku:
        updates.append(source.update(old))
    gone, born = source.change_key(old, toast=True)
    second = publish(settings, source.to_messages([*backlog, *updates, gone, born]))
    create = next(r for r in second if r.headers and "__debezium.oldkey" in dict(r.headers))
    delete = next(r for r in second if r.headers and "__debezium.newkey" in dict(r.headers))
    assert create.partition != delete.partition, "the new key is in another partition"
    result = drain(spark, settings)

    # the create was applied in a batch that had not yet read the old row's update
    first_batch = result.batches[0].offsets
    assert first_batch[str(create.partition)][1] > create.offset
    assert first_batch[str(delete.partition)][1] <= delete.offset
    expected = fold(first + second, table=ORDER_LINES_FOLD)
    assert born.after is not None and born.after["sku"] is UNCHANGED_TOAST
    assert expected.rows[born.key]["sku"] == source.rows[born.key]["sku"] != stored_sku
    assert_table_equals_fold(settings, expected.rows, ORDER_LINES_FOLD)


def test_an_entry_partitions_its_tables_and_a_new_partitioning_applies_to_later_files(
    spark: Any, pipeline: Settings, work_dir: Path
) -> None:
    """``buckets`` and ``bucket_column`` of an entry partition the live, tombstone and
    history tables; changed, they become the tables' partition spec for the next files,
    and the table stays equal to the fold across the change."""
    path = work_dir / "pipelines" / f"{pipeline.pipeline_id}-buckets.yaml"

    def configure(layout: str) -> None:
        path.write_text(
            "tables:\n  public.order_lines:\n"
            f"    topic: {pipeline.kafka_topic}\n    iceberg_table: {pipeline.iceberg_table}\n"
            f"    history: true\n{layout}",
            encoding="utf-8",
        )

    def partitioning(table: str) -> list[tuple[str, str]]:
        loaded = catalog(settings).load_table(table)
        return [
            (str(f.transform), loaded.schema().find_column_name(f.source_id))
            for f in loaded.spec().fields
            if str(f.transform) != "void"
        ]

    settings = pipeline.replace(pipelines_file=str(path), max_offsets_per_trigger=250)
    tables = (settings.iceberg_table, settings.tombstone_table, settings.history_table)
    configure("    buckets: 4\n    bucket_column: line_no\n")
    source = TableSource(ORDER_LINES, seed=11)
    history = source.random_history(400, 50, snapshot_rows=20, pk_change_share=0.05)
    first = publish(settings, history[:220])
    drain(spark, settings)
    assert [partitioning(t) for t in tables] == [[("bucket[4]", "line_no")]] * 3
    # a table partitioned as configured keeps its one spec
    assert [len(catalog(settings).load_table(t).specs()) for t in tables] == [1, 1, 1]

    configure("    buckets: 0\n")  # unpartitioned from now on
    later = publish(settings, history[220:])
    assert drain(spark, settings).batches
    assert [partitioning(t) for t in tables] == [[]] * 3
    expected = fold(first + later, table=ORDER_LINES_FOLD)
    assert expected.rows and expected.deleted
    assert_table_equals_fold(settings, expected.rows, ORDER_LINES_FOLD)
    assert not dead_letters(settings)


def test_every_postgres_type_round_trips_and_a_column_is_added(
    spark: Any, undeclared: Settings
) -> None:
    settings = undeclared.replace(max_offsets_per_trigger=120)
    source = TableSource(TYPED_ROWS, seed=11, null_share=0.2)
    history = source.random_history(
        360,
        50,
        snapshot_rows=20,
        toast_share=0.35,
        pk_change_share=0.05,
        added_columns=[ADDED],
    )
    records = publish(settings, history)
    drain(spark, settings)

    expected = fold(records, table=TYPED_ROWS_FOLD)
    assert_table_equals_fold(settings, expected.rows, TYPED_ROWS_FOLD)
    assert not expected.dead and not dead_letters(settings)
    table = catalog(settings).load_table(settings.iceberg_table)
    assert table.schema().find_field("c_added").field_type.precision == 8
    # a value known to need every digit survives: the fold and the table agree on all rows,
    # and some rows hold values in every column
    for column in ("c_numeric_wide", "c_timestamp", "c_bytea", "c_numeric_array", "c_jsonb"):
        assert any(row[column] is not None for row in expected.rows.values()), column


def test_columns_may_take_the_names_of_kafka_fields_and_the_jobs_words(
    spark: Any, undeclared: Settings
) -> None:
    """``key``, ``value``, ``offset``, ``timestamp``, ``op``, ``problem``... are columns too."""
    settings = undeclared.replace(max_offsets_per_trigger=150)
    source = TableSource(PLAIN_WORDS, seed=21, null_share=0.15)
    added = ColumnSpec("schema_json", "text")
    history = source.random_history(
        400,
        60,
        snapshot_rows=20,
        toast_share=0.3,
        pk_change_share=0.06,
        redelivery_share=0.03,
        added_columns=[added],
    )
    history = corrupt(history, "row", "not a number")
    records = publish(settings, history)
    drain(spark, settings)

    expected = fold(records, table=PLAIN_WORDS_FOLD)
    assert expected.rows and expected.deleted
    assert_table_equals_fold(settings, expected.rows, PLAIN_WORDS_FOLD)
    assert identifier_fields(settings) == ["key", "partition"]
    (letter,) = dead_letters(settings)
    assert (letter["kafka_partition"], letter["kafka_offset"]) in expected.dead
    assert "column row" in letter["reason"]
    tombstones = catalog(settings).load_table(settings.tombstone_table).scan().to_arrow()
    held = set(zip(tombstones["key"].to_pylist(), tombstones["partition"].to_pylist(), strict=True))
    assert held == set(expected.deleted)


def test_a_value_that_does_not_fit_its_column_is_dead_lettered_by_name(
    spark: Any, undeclared: Settings
) -> None:
    source = TableSource(TENANT_NOTES, seed=5)
    history = source.random_history(80, 20, pk_change_share=0.0)
    history = corrupt(history, "day", "not a day")
    records = publish(undeclared, history)
    drain(spark, undeclared)

    expected = fold(records, table=TENANT_NOTES_FOLD)
    assert len(expected.dead) == 1
    assert_table_equals_fold(undeclared, expected.rows, TENANT_NOTES_FOLD)
    (letter,) = dead_letters(undeclared)
    assert (letter["kafka_partition"], letter["kafka_offset"]) in expected.dead
    assert "day" in letter["reason"]


def test_a_table_without_a_primary_key_is_refused(spark: Any, undeclared: Settings) -> None:
    keyless = TableSpec("public", "events_log", (ColumnSpec("body", "text"),), ())
    history = TableSource(keyless, seed=1).random_history(10, 5)
    # the tombstone of a keyless delete has neither key nor value: kafka-python sends none
    publish(undeclared, [m for m in history if m.key is not None or m.value is not None])
    with pytest.raises(TableModelError, match=r"REPLICA IDENTITY FULL.*message\.key\.columns"):
        drain(spark, undeclared)


def test_events_without_schema_blocks_need_a_declared_schema(
    spark: Any, undeclared: Settings
) -> None:
    plain = TableSource(ORDER_LINES, seed=2, wrapper=False)
    publish(undeclared, plain.random_history(10, 5))
    with pytest.raises(SchemaUnknownError, match="declares no schema"):
        drain(spark, undeclared)
