"""pipelines.yaml: read and checked at load, with errors naming the entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc_iceberg import pipelines
from cdc_iceberg.pipelines import PipelinesError, iceberg_name, parse
from cdc_iceberg.settings import PROJECT_ROOT, Settings


def test_the_projects_file_declares_articles() -> None:
    config = pipelines.load(PROJECT_ROOT / "pipelines.yaml")
    (articles,) = [t for t in config.tables if t.source == "public.articles"]
    assert articles.topic == "neuronews.public.articles"
    assert articles.iceberg_table == "neuronews.articles"
    assert articles.declared is not None and articles.declared.key == ("article_id",)


def test_defaults_follow_the_naming_rule() -> None:
    config = parse({"tables": {"public.orders": None, "sales.orders": {}}}, "f.yaml")
    by_source = {t.source: t for t in config.tables}
    assert by_source["public.orders"].topic == "neuronews.public.orders"
    assert by_source["public.orders"].iceberg_table == "neuronews.orders"
    assert by_source["sales.orders"].iceberg_table == "neuronews.sales_orders"
    assert by_source["sales.orders"].declared is None


def test_a_missing_file_is_no_tables(tmp_path: Path) -> None:
    assert pipelines.load(tmp_path / "absent.yaml").tables == ()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"tables": {"articles": {}}}, "table articles: expected the source table as schema.table"),
        ({"tables": {"public.a": {"topc": "x"}}}, "table public.a: unknown setting(s) topc"),
        (
            {"tables": {"public.a": {"iceberg_table": "no-dots"}}},
            "table public.a: iceberg_table 'no-dots' must be namespace.table",
        ),
        (
            {"tables": {"public.a": {"schema": {"key": ["id"], "columns": {}}}}},
            "table public.a: declared schema of public.a: columns must map names to types",
        ),
        (
            {"tables": {"public.a": {"schema": {"key": [], "columns": {"id": "int"}}}}},
            "REPLICA IDENTITY FULL",
        ),
        (
            {"tables": {"public.a": {}, "public.b": {"iceberg_table": "neuronews.a"}}},
            "tables public.a and public.b share iceberg_table 'neuronews.a'",
        ),
        ({"tables": {}, "topics": ["a", "b"]}, "'topics' must be one glob"),
        ({"tables": {"public.a": {"buckets": -1}}}, "table public.a: buckets must be a whole"),
        ({"tables": {"public.a": {"buckets": "8"}}}, "table public.a: buckets must be a whole"),
        ({"tables": {"public.a": {"bucket_column": 3}}}, "bucket_column must name one of"),
        (
            {
                "tables": {
                    "public.a": {
                        "bucket_column": "note",
                        "schema": {"key": ["id"], "columns": {"id": "int", "note": "string"}},
                    }
                }
            },
            "table public.a: bucket_column 'note' of public.a is not a key column (key: id)",
        ),
        (
            {
                "tables": {
                    "public.a": {
                        "bucket_column": "ok",
                        "schema": {"key": ["id", "ok"], "columns": {"id": "int", "ok": "boolean"}},
                    }
                }
            },
            "bucket_column 'ok' of public.a is of type boolean, which Iceberg cannot bucket",
        ),
        ({"table": {}}, "expected a mapping with keys 'topics' and 'tables'"),
    ],
)
def test_mistakes_are_named(document: object, message: str) -> None:
    with pytest.raises(PipelinesError, match=None) as error:
        parse(document, "f.yaml")
    assert message in str(error.value)
    assert str(error.value).startswith("f.yaml")


def test_unreadable_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("tables: [unclosed\n", encoding="utf-8")
    with pytest.raises(PipelinesError, match="cannot be read as YAML"):
        pipelines.load(path)


def test_a_topic_pattern_adds_the_topics_no_entry_names() -> None:
    config = parse(
        {
            "topics": "neuronews.public.*",
            "tables": {"public.articles": {"iceberg_table": "neuronews.news"}},
        },
        "f.yaml",
    )
    topics = {
        "neuronews.public.articles",
        "neuronews.public.order_lines",
        "neuronews.public.typed_rows",
        "neuronews.sales.orders",  # another schema: not matched
        "neuronews",  # Debezium's schema-change topic
        "other.public.x",
    }
    resolved = config.resolve(topics)
    assert [(t.source, t.iceberg_table) for t in resolved] == [
        ("public.articles", "neuronews.news"),
        ("public.order_lines", "neuronews.order_lines"),
        ("public.typed_rows", "neuronews.typed_rows"),
    ]
    assert config.find("public.typed_rows", topics).topic == "neuronews.public.typed_rows"
    with pytest.raises(PipelinesError, match=r"no table 'public\.nope' is configured"):
        config.find("public.nope", topics)


def test_two_topics_for_one_iceberg_table_are_refused() -> None:
    config = parse(
        {"topics": "neuronews.*", "tables": {"public.x": {"iceberg_table": "neuronews.y"}}},
        "f.yaml",
    )
    with pytest.raises(PipelinesError, match=r"would both go to neuronews\.y"):
        config.resolve({"neuronews.public.y"})


def test_each_table_has_settings_of_its_own() -> None:
    config = parse({"tables": {"public.a": {}, "sales.b": {}}}, "f.yaml")
    base = Settings(checkpoint_location="/data/checkpoints/")
    a, b = (t.settings(base) for t in config.tables)
    assert (a.kafka_topic, a.iceberg_table, a.iceberg_dlq_table) == (
        "neuronews.public.a",
        "neuronews.a",
        "neuronews.a_dlq",
    )
    assert a.checkpoint_location == "/data/checkpoints/neuronews.a"
    assert b.checkpoint_location == "/data/checkpoints/neuronews.sales_b"
    assert a.tombstone_table != b.tombstone_table


def test_iceberg_names_are_identifiers() -> None:
    assert iceberg_name("public.Order Lines", "ns") == "ns.Order_Lines"


def test_table_settings_by_either_name_and_for_the_environments_topic() -> None:
    config = parse({"tables": {"public.a": {}}}, "f.yaml")
    base = Settings(checkpoint_location="/c", kafka_topic="neuronews.public.a")
    by_source = config.table_settings(base, "public.a")
    assert by_source == config.table_settings(base, "neuronews.a") == config.table_settings(base)
    assert by_source.checkpoint_location == "/c/neuronews.a"
    other = base.replace(kafka_topic="neuronews.public.z")
    assert config.table_settings(other) == other  # not configured: the environment's table
    with pytest.raises(PipelinesError, match=r"configured: neuronews\.a"):
        config.table_settings(base, "neuronews.b")


def test_a_name_that_is_no_table_is_refused_before_asking_the_broker() -> None:
    config = parse({"topics": "neuronews.public.*", "tables": {"public.a": {}}}, "f.yaml")
    base = Settings()

    def no_broker() -> list[str]:
        raise AssertionError("the broker was asked")

    with pytest.raises(PipelinesError, match="is not a table name"):
        config.settings_for(base, "neuronews.a; DROP TABLE x", no_broker)
    assert config.settings_for(base, "neuronews.a", no_broker).kafka_topic == "neuronews.public.a"
    assert config.settings_for(base, "public.b", lambda: ["neuronews.public.b"]).iceberg_table == (
        "neuronews.b"
    )


def test_history_is_a_yes_or_no_per_table() -> None:
    config = parse({"tables": {"public.orders": {"history": True}, "public.notes": {}}}, "f.yaml")
    orders, notes = (
        config.for_topic("neuronews.public.orders"),
        config.for_topic("neuronews.public.notes"),
    )
    assert orders is not None and orders.history
    assert notes is not None and not notes.history
    assert config.for_topic("neuronews.public.unknown") is None
    with pytest.raises(
        PipelinesError, match=r"table public\.orders: history must be true or false"
    ):
        parse({"tables": {"public.orders": {"history": "yes"}}}, "f.yaml")


def test_an_entry_sets_the_partitioning_of_its_tables() -> None:
    config = parse(
        {
            "tables": {
                "public.lines": {"buckets": 4, "bucket_column": "line_no"},
                "public.tiny": {"buckets": 0},
                "public.plain": {},
            }
        },
        "f.yaml",
    )
    by_source = {t.source: t for t in config.tables}
    assert (by_source["public.lines"].buckets, by_source["public.lines"].bucket_column) == (
        4,
        "line_no",
    )
    assert by_source["public.tiny"].buckets == 0
    # unset: ICEBERG_BUCKETS on the first bucketable key column
    assert (by_source["public.plain"].buckets, by_source["public.plain"].bucket_column) == (
        None,
        "",
    )
