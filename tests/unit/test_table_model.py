"""The table model: from declared schemas, from Debezium's schema blocks, and its refusals."""

from __future__ import annotations

import pytest

from cdc_iceberg import pipelines
from cdc_iceberg.table_model import (
    Column,
    TableModel,
    TableModelError,
    default_codec,
    from_debezium,
    source_table,
)


def _field(field: str, kind: str, optional: bool = True, **extra: object) -> dict[str, object]:
    return {"type": kind, "optional": optional, "field": field, **extra}


def _envelope(row_fields: list[dict[str, object]]) -> dict[str, object]:
    row = {"type": "struct", "fields": row_fields, "optional": True, "name": "x.Value"}
    return {
        "type": "struct",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {"type": "struct", "fields": [], "optional": False, "field": "source"},
            _field("op", "string", optional=False),
        ],
        "optional": False,
        "name": "x.Envelope",
    }


def test_a_composite_key_comes_from_the_key_schema_in_key_order() -> None:
    key = {
        "type": "struct",
        "fields": [_field("line_no", "int32", False), _field("order_id", "int64", False)],
    }
    value = _envelope(
        [
            _field("order_id", "int64", False),
            _field("line_no", "int32", False),
            _field(
                "price",
                "bytes",
                name="org.apache.kafka.connect.data.Decimal",
                parameters={"scale": "2", "connect.decimal.precision": "10"},
            ),
            _field("shipped", "int32", name="io.debezium.time.Date"),
        ]
    )
    model = from_debezium(key, value, "public.order_lines")
    assert model.key == ("line_no", "order_id")
    assert model.column_types == [
        ("order_id", "bigint"),
        ("line_no", "int"),
        ("price", "decimal(10,2)"),
        ("shipped", "date"),
    ]
    assert model.bucket_column == "line_no"
    assert [c.optional for c in model.columns] == [False, False, True, True]
    # the codecs a table records: only those its Spark types do not imply
    assert model.codecs() == {}
    assert [c.codec for c in model.columns] == ["bigint", "int", "decimal", "date"]


def test_the_flattened_form_is_its_own_row_schema_without_the_added_fields() -> None:
    value = {
        "type": "struct",
        "fields": [_field("id", "string", False), _field("__op", "string"), _field("v", "int64")],
    }
    key = {"type": "struct", "fields": [_field("id", "string", False)]}
    assert from_debezium(key, value).column_types == [("id", "string"), ("v", "bigint")]


def test_a_table_without_a_primary_key_is_refused_naming_the_way_out() -> None:
    value = _envelope([_field("note", "string")])
    with pytest.raises(TableModelError, match=r"REPLICA IDENTITY FULL.*message\.key\.columns"):
        from_debezium(None, value, "public.notes")


def test_a_type_that_cannot_be_held_is_refused_naming_the_column() -> None:
    value = _envelope(
        [
            _field("id", "int32", False),
            _field("shape", "struct", name="io.debezium.data.geometry.Point"),
        ]
    )
    key = {"type": "struct", "fields": [_field("id", "int32", False)]}
    with pytest.raises(TableModelError, match="shape"):
        from_debezium(key, value, "public.places")


@pytest.mark.parametrize("name", ["ts_ms", "cdc_op", "kafka_offset", "ingested_at", "_n", "_row"])
def test_a_column_named_like_the_pipelines_own_is_refused(name: str) -> None:
    with pytest.raises(TableModelError, match=f"column {name}"):
        TableModel(("id",), (Column("id", "string"), Column(name, "string")))


@pytest.mark.parametrize("name", ["key", "value", "offset", "timestamp", "op", "row", "problem"])
def test_a_column_may_take_the_name_of_a_kafka_field_or_a_word_of_the_job(name: str) -> None:
    model = TableModel((name,), (Column(name, "string"), Column("id", "string")))
    assert model.key == (name,) and model.names == [name, "id"]


@pytest.mark.parametrize("name", ["deleted_at", "image"])
def test_a_key_column_named_like_a_tombstone_column_is_refused(name: str) -> None:
    with pytest.raises(TableModelError, match=f"key column.*'{name}'.*tombstone table"):
        TableModel((name,), (Column(name, "string"), Column("id", "string")))
    # any other column may: the tombstone table holds only the key's
    model = TableModel(("id",), (Column("id", "string"), Column(name, "string")))
    assert model.names == ["id", name]


def test_key_columns_must_be_columns() -> None:
    with pytest.raises(TableModelError, match="not columns"):
        TableModel(("id", "nope"), (Column("id", "string"),))


def test_default_codecs_follow_debezium_default_encodings() -> None:
    assert default_codec("decimal(12,2)") == "decimal"
    assert default_codec("array<decimal(10,2)>") == "array:decimal"
    assert default_codec("timestamp") == "zoned_timestamp"
    assert default_codec("timestamp_ntz") == "micro_timestamp"
    assert default_codec("binary") == "bytes"


def test_a_model_keeps_codecs_across_evolution_only_while_the_type_stays() -> None:
    model = TableModel(
        ("id",), (Column("id", "bigint"), Column("t", "bigint", "micro_time")), "public.x"
    )
    evolved = model.with_columns([("id", "bigint"), ("t", "bigint"), ("n", "string")])
    assert [c.codec for c in evolved.columns] == ["bigint", "micro_time", "string"]
    assert evolved.codecs() == {"t": "micro_time"}


def test_the_source_table_of_a_debezium_topic() -> None:
    assert source_table("neuronews.public.order_lines") == "public.order_lines"


# -- pipelines.yaml ----------------------------------------------------------------


def test_the_projects_pipelines_file_declares_articles() -> None:
    from cdc_iceberg.settings import PROJECT_ROOT

    config = pipelines.load(PROJECT_ROOT / "pipelines.yaml")
    entry = config.for_topic("neuronews.public.articles")
    assert entry is not None and entry.iceberg_table == "neuronews.articles"
    assert entry.declared is not None and entry.declared.key == ("article_id",)
    assert ("word_count", "int") in entry.declared.column_types


def test_entries_take_default_topic_and_table_names() -> None:
    config = pipelines.parse({"tables": {"public.order_lines": None}}, "p.yaml")
    (entry,) = config.tables
    assert (entry.topic, entry.iceberg_table, entry.declared) == (
        "neuronews.public.order_lines",
        "neuronews.order_lines",
        None,
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"table": {}}, "keys 'topics' and 'tables'"),
        ({"tables": ["public.a"]}, "must map source tables"),
        ({"tables": {"a": {}}}, "table a: expected the source table as schema.table"),
        ({"tables": {"public.a": {"topics": "x"}}}, "unknown setting"),
        ({"tables": {"public.a": {"iceberg_table": "a; DROP"}}}, "must be namespace.table"),
        ({"tables": {"public.a": {"schema": {"key": "id", "columns": {"id": "int"}}}}}, "key"),
        ({"tables": {"public.a": {"schema": {"key": ["id"], "columns": {"x": "int"}}}}}, "id"),
        (
            {"tables": {"public.a": {"topic": "t"}, "public.b": {"topic": "t"}}},
            "share topic 't'",
        ),
    ],
)
def test_a_wrong_pipelines_file_is_refused_naming_the_entry(document: object, message: str) -> None:
    with pytest.raises(pipelines.PipelinesError, match=message):
        pipelines.parse(document, "p.yaml")


def test_unreadable_yaml_is_a_clear_error(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "pipelines.yaml"
    path.write_text("tables: {public.a: [\n")
    with pytest.raises(pipelines.PipelinesError, match="cannot be read as YAML"):
        pipelines.load(path)
    assert pipelines.load(Path(str(tmp_path)) / "missing.yaml").tables == ()


def test_a_bad_record_with_an_empty_schema_block_is_no_schema_to_learn_from() -> None:
    """Schema discovery passes over it (the drain dead-letters it) instead of failing."""
    from cdc_iceberg.schema_discovery import schema_blocks

    assert schema_blocks(None, b'{"payload": 42, "schema": {}}') is None
    assert schema_blocks(None, b'{"payload": {}, "schema": {"type": "struct"}}') is None
    row = {"field": "after", "type": "struct", "fields": [{"field": "id", "type": "int32"}]}
    value = {"schema": {"type": "struct", "fields": [row, {"field": "op"}]}, "payload": {}}
    import json

    assert schema_blocks(b"{}", json.dumps(value).encode()) == (None, value["schema"])


def test_tables_are_bucketed_on_the_first_key_column_iceberg_can_bucket() -> None:
    from cdc_iceberg.table_model import Column, TableModel, TableModelError, bucketable

    model = TableModel(
        ("active", "score", "day", "id"),
        (
            Column("active", "boolean"),
            Column("score", "double"),
            Column("day", "date"),
            Column("id", "decimal(10,2)"),
            Column("note", "string"),
        ),
        "public.t",
    )
    assert model.bucket_column == "day"
    assert model.partition_column(8) == "day"
    assert model.partition_column(8, "id") == "id"
    assert model.partition_column(0, "id") == ""  # 0 buckets: not partitioned
    with pytest.raises(TableModelError, match=r"'note' of public\.t is not a key column"):
        model.partition_column(8, "note")
    with pytest.raises(TableModelError, match="type double, which Iceberg cannot bucket"):
        model.partition_column(8, "score")
    with pytest.raises(TableModelError, match="must be 0 or more"):
        model.partition_column(-1)
    # a key of nothing Iceberg can bucket leaves the tables unpartitioned
    flags = TableModel(("a", "b"), (Column("a", "boolean"), Column("b", "float")))
    assert flags.bucket_column == "" and flags.partition_column(16) == ""
    assert [bucketable(t) for t in ("bigint", "timestamp_ntz", "binary", "array<int>")] == [
        True,
        True,
        True,
        False,
    ]


def test_a_floating_point_or_nested_key_column_is_no_identifier_field() -> None:
    from cdc_iceberg.table_model import identifiable, parse_key

    assert [identifiable(t) for t in ("bigint", "decimal(10,2)", "date", "string")] == [True] * 4
    assert [identifiable(t) for t in ("float", "double", "array<int>", "map<string,int>")] == [
        False
    ] * 4
    assert parse_key('["day", "amount"]') == ["day", "amount"]
    assert parse_key(None) == [] and parse_key("{") == [] and parse_key('{"a": 1}') == []
