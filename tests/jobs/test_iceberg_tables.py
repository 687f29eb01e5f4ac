"""Statement builders and the schema-evolution plan (pure functions)."""

from __future__ import annotations

import json

from articles import ARTICLES, KEY

from cdc_iceberg.generator import envelope_schema
from jobs.iceberg_tables import (
    create_live_sql,
    merge_live_sql,
    plan_evolution,
    row_fields_from_schema,
    seq_newer,
)

TABLE = {"article_id": "string", "title": "string", "word_count": "int", "score": "float"}


def test_new_columns_take_declared_type_or_string() -> None:
    add, widen, bad = plan_evolution(TABLE, ["article_id", "category", "rank"], {"rank": "bigint"})
    assert add == [("category", "string"), ("rank", "bigint")]
    assert widen == [] and bad == {}


def test_safe_widening_and_incompatible_changes() -> None:
    add, widen, bad = plan_evolution(
        TABLE, [], {"word_count": "bigint", "score": "double", "title": "int"}
    )
    assert widen == [("score", "double"), ("word_count", "bigint")]
    assert bad == {
        "title": "incompatible schema change: column title is string in the table, "
        "the event declares int"
    }
    assert add == []


def test_narrower_declared_type_fits_and_metadata_is_ignored() -> None:
    assert plan_evolution({"n": "bigint"}, ["ts_ms", "__op"], {"n": "int"}) == ([], [], {})


def test_unsafe_column_names_are_refused() -> None:
    _, _, bad = plan_evolution(TABLE, ["x`; DROP TABLE t; --"], {})
    assert "not a plain identifier" in next(iter(bad.values()))


def test_schema_block_parsing_is_robust() -> None:
    fields = row_fields_from_schema(json.dumps(envelope_schema()))
    assert fields["word_count"] == "int" and fields["published_at"] == "timestamp"
    for junk in ("", "null", "[]", '{"fields": "wrong"}', '{"fields": [1, {"field": 2}]}'):
        assert row_fields_from_schema(junk) == {}


def test_merge_guards_every_action_with_the_whole_sequence() -> None:
    sql = merge_live_sql("c.n.t", "src", ["article_id", "title", "body"], key=KEY)
    newer = seq_newer("s", "t")
    assert newer == (
        "struct(s.ts_ms, s.lsn, s.kafka_partition, s.kafka_offset) > "
        "struct(t.ts_ms, t.lsn, t.kafka_partition, t.kafka_offset)"
    )
    assert sql.count(newer) == 2
    assert "WHEN MATCHED AND s.cdc_op = 'd' AND" in sql
    assert "CASE WHEN array_contains(s._unavailable, 'body') THEN t.`body` ELSE s.`body` END" in sql
    assert "WHEN NOT MATCHED AND s.cdc_op <> 'd' THEN INSERT" in sql


def test_live_table_is_bucketed_in_the_write_mode() -> None:
    sql = create_live_sql("c.n.t", ARTICLES, 16)
    assert "PARTITIONED BY (bucket(16, `article_id`))" in sql
    for kind in ("merge", "update", "delete"):
        assert f"'write.{kind}.mode'='copy-on-write'" in sql
    assert "'write.merge.mode'='merge-on-read'" in create_live_sql(
        "c.n.t", ARTICLES, 16, "merge-on-read"
    )


def test_the_partitioning_follows_the_configured_buckets_and_column() -> None:
    from cdc_iceberg.table_model import Column, TableModel
    from jobs.iceberg_tables import create_history_sql, create_tombstones_sql, partition_fields

    model = TableModel(
        ("flag", "order_id", "line_no"),
        (Column("flag", "boolean"), Column("order_id", "bigint"), Column("line_no", "int")),
    )
    # the first key column Iceberg can bucket, unless the entry names one
    assert "PARTITIONED BY (bucket(16, `order_id`))" in create_live_sql("c.n.t", model, 16)
    named = create_tombstones_sql("c.n.x", model, 4, bucket_column="line_no")
    assert "PARTITIONED BY (bucket(4, `line_no`))" in named
    assert "PARTITIONED BY (bucket(4, `line_no`))" in create_history_sql(
        "c.n.h", model, 4, "line_no"
    )
    unpartitioned = create_live_sql("c.n.t", model, 0)
    assert "PARTITIONED BY" not in unpartitioned
    assert "USING iceberg TBLPROPERTIES (" in unpartitioned
    assert partition_fields(model, 4, "line_no") == ["bucket[4](line_no)"]
    assert partition_fields(model, 0) == []


def test_schema_blocks_of_one_batch_combine_to_the_widest_type() -> None:
    from jobs.iceberg_tables import merge_declared

    combined = merge_declared({"word_count": "int", "score": "double"}, {"word_count": "bigint"})
    assert combined == {"word_count": "bigint", "score": "double"}
    assert merge_declared({"word_count": "bigint"}, {"word_count": "int"}) == {
        "word_count": "bigint"
    }
    assert merge_declared({"n": "int"}, {"n": "boolean"}) == {"n": "boolean"}


def test_a_composite_key_is_matched_as_a_whole_tuple() -> None:
    from cdc_iceberg.table_model import Column, TableModel
    from jobs.iceberg_tables import (
        append_tombstones_sql,
        create_tombstones_sql,
        live_source_sql,
    )

    model = TableModel(
        ("order_id", "line_no"),
        (Column("order_id", "bigint"), Column("line_no", "int"), Column("sku", "string")),
    )
    key = model.key
    both = "t.`order_id` = s.`order_id` AND t.`line_no` = s.`line_no`"
    assert f"ON {both} WHEN" in merge_live_sql(
        "c.n.t", "src", ["order_id", "line_no", "sku"], key=key
    )
    live = create_live_sql("c.n.t", model, 8)
    assert "`order_id` bigint NOT NULL, `line_no` int NOT NULL, `sku` string," in live
    assert "PARTITIONED BY (bucket(8, `order_id`))" in live
    tombstones = create_tombstones_sql("c.n.x", model, 8)
    assert "(`order_id` bigint, `line_no` int, `ts_ms` bigint" in tombstones
    assert "s.`order_id` = x.`order_id` AND s.`line_no` = x.`line_no`" in live_source_sql(
        "src", "c.n.x", key=key
    )
    append = append_tombstones_sql("c.n.x", "src", key=key)
    assert "INSERT INTO c.n.x (`order_id`, `line_no`, ts_ms" in append
    assert "x.`order_id` = s.`order_id` AND x.`line_no` = s.`line_no`" in append
