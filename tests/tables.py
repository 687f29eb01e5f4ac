"""Tables other than articles, as the reference fold sees them, and how to publish them.

Each :class:`FoldTable` gives its columns' codecs and Spark types by hand, from
the type table of the README, never from the code under test.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from reference_fold import FoldTable, Record

from cdc_iceberg.kafka_offsets import ensure_topic
from cdc_iceberg.settings import Settings
from cdc_iceberg.table_generator import (
    ColumnSpec,
    TableMessage,
    TableSpec,
    produce_table_messages,
)

ORDER_LINES_FOLD = FoldTable(
    ("order_id", "line_no"),
    (
        ("order_id", "bigint", "bigint"),
        ("line_no", "int", "int"),
        ("sku", "string", "string"),
        ("quantity", "int", "int"),
        ("unit_price", "decimal", "decimal(12,2)"),
        ("note", "string", "string"),
    ),
)

TENANT_NOTES_FOLD = FoldTable(
    ("tenant", "day"),
    (("tenant", "string", "string"), ("day", "date", "date"), ("body", "string", "string")),
)

ADDED = ColumnSpec("c_added", "numeric(8,3)")

# A table whose columns are named like Kafka's record fields and the words a CDC job
# uses for its own bookkeeping: a source table may name its columns anything.
PLAIN_WORDS = TableSpec(
    "public",
    "plain_words",
    (
        ColumnSpec("key", "text", nullable=False),
        ColumnSpec("partition", "integer", nullable=False),
        ColumnSpec("value", "text"),
        ColumnSpec("topic", "text"),
        ColumnSpec("offset", "bigint"),
        ColumnSpec("timestamp", "timestamptz"),
        ColumnSpec("headers", "jsonb"),
        ColumnSpec("op", "text"),
        ColumnSpec("row", "integer"),
        ColumnSpec("problem", "text"),
        ColumnSpec("unavailable", "text"),
        ColumnSpec("fresh", "boolean"),
        ColumnSpec("old_key", "text"),
        ColumnSpec("reason", "text"),
        ColumnSpec("n", "integer"),
        ColumnSpec("seq", "bigint"),
        ColumnSpec("id", "bigint"),
    ),
    ("key", "partition"),
)

PLAIN_WORDS_FOLD = FoldTable(
    ("key", "partition"),
    (
        ("key", "string", "string"),
        ("partition", "int", "int"),
        ("value", "string", "string"),
        ("topic", "string", "string"),
        ("offset", "bigint", "bigint"),
        ("timestamp", "zoned_timestamp", "timestamp"),
        ("headers", "json", "string"),
        ("op", "string", "string"),
        ("row", "int", "int"),
        ("problem", "string", "string"),
        ("unavailable", "string", "string"),
        ("fresh", "boolean", "boolean"),
        ("old_key", "string", "string"),
        ("reason", "string", "string"),
        ("n", "int", "int"),
        ("seq", "bigint", "bigint"),
        ("id", "bigint", "bigint"),
        ("schema_json", "string", "string"),  # added mid-stream
    ),
)

TYPED_ROWS_FOLD = FoldTable(
    ("id",),
    (
        ("id", "uuid", "string"),
        ("c_smallint", "int", "int"),
        ("c_integer", "int", "int"),
        ("c_bigint", "bigint", "bigint"),
        ("c_boolean", "boolean", "boolean"),
        ("c_real", "float", "float"),
        ("c_double", "double", "double"),
        ("c_numeric", "decimal", "decimal(10,2)"),
        ("c_numeric_wide", "decimal", "decimal(38,10)"),
        ("c_numeric_free", "variable_decimal", "string"),
        ("c_money", "decimal", "decimal(38,2)"),
        ("c_date", "date", "date"),
        ("c_time", "micro_time", "bigint"),
        ("c_timetz", "zoned_time", "bigint"),
        ("c_timestamp", "micro_timestamp", "timestamp_ntz"),
        ("c_timestamptz", "zoned_timestamp", "timestamp"),
        ("c_interval", "micro_duration", "bigint"),
        ("c_uuid", "uuid", "string"),
        ("c_json", "json", "string"),
        ("c_jsonb", "json", "string"),
        ("c_xml", "string", "string"),
        ("c_mood", "string", "string"),
        ("c_text", "string", "string"),
        ("c_varchar", "string", "string"),
        ("c_char", "string", "string"),
        ("c_bytea", "bytes", "binary"),
        ("c_inet", "string", "string"),
        ("c_cidr", "string", "string"),
        ("c_macaddr", "string", "string"),
        ("c_int_array", "array:int", "array<int>"),
        ("c_text_array", "array:string", "array<string>"),
        ("c_numeric_array", "array:decimal", "array<decimal(10,2)>"),
        ("c_added", "decimal", "decimal(8,3)"),
    ),
)


def publish(settings: Settings, messages: list[TableMessage], partitions: int = 3) -> list[Record]:
    ensure_topic(settings, partitions=partitions)
    produced = produce_table_messages(settings, settings.kafka_topic, messages)
    return [
        Record(p.partition, p.offset, p.message.key, p.message.value, p.message.headers)
        for p in produced
    ]


def corrupt(messages: list[TableMessage], column: str, value: Any) -> list[TableMessage]:
    """``messages`` with ``column`` of the first change with an after image set to ``value``."""
    index = next(
        i for i, m in enumerate(messages) if m.value and json.loads(m.value)["payload"]["after"]
    )
    broken = json.loads(messages[index].value or b"")
    broken["payload"]["after"][column] = value
    out = list(messages)
    out[index] = dataclasses.replace(messages[index], value=json.dumps(broken).encode())
    return out
