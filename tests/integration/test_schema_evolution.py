"""Schema evolution: new columns are added, safe widening applies, the rest dead-letters."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support import catalog, dead_letters, live_rows, send

from cdc_iceberg.checks import validate
from cdc_iceberg.generator import ArticleSource, Message, envelope_schema
from cdc_iceberg.settings import Settings
from cdc_iceberg.table_state import table_stats
from jobs.cdc_to_iceberg import drain

pytestmark = pytest.mark.integration


def _with_schema_change(message: Message, column: str, kind: str, value: Any) -> Message:
    data = json.loads(message.value or b"{}")
    schema = envelope_schema()
    for part in schema["fields"]:
        if part.get("field") in ("before", "after"):
            fields = [f for f in part["fields"] if f["field"] != column]
            part["fields"] = [*fields, {"type": kind, "optional": True, "field": column}]
    data["schema"] = schema
    data["payload"]["after"][column] = value
    return Message(message.key, json.dumps(data).encode(), message.partition)


def test_new_column_and_widening_are_applied(spark: Any, pipeline: Settings) -> None:
    source = ArticleSource(seed=71, partitions=1)
    first = source.insert()
    send(pipeline, source.to_messages([first]), 1)
    drain(spark, pipeline)

    later = source.update(first.key)
    changed = _with_schema_change(source.encode(later), "category", "string", "science")
    widened = _with_schema_change(
        source.encode(source.update(first.key)), "word_count", "int64", 3_000_000_000
    )
    widened_data = json.loads(widened.value or b"{}")
    widened_data["payload"]["after"]["category"] = "science"
    for part in widened_data["schema"]["fields"]:
        if part.get("field") in ("before", "after"):
            part["fields"].append({"type": "string", "optional": True, "field": "category"})
    widened = Message(widened.key, json.dumps(widened_data).encode(), 0)
    send(pipeline, [changed, widened], 1)
    result = drain(spark, pipeline)

    schema = {
        f.name: str(f.field_type)
        for f in catalog(pipeline).load_table(pipeline.iceberg_table).schema().fields
    }
    assert schema["category"] == "string"
    assert schema["word_count"] == "long"
    row = live_rows(pipeline)[first.key]
    assert row["category"] == "science"
    assert row["word_count"] == 3_000_000_000
    changes = [c for b in result.batches for c in b.schema_changes]
    assert "add category string" in changes and "widen word_count to bigint" in changes
    assert dead_letters(pipeline) == []


def test_incompatible_change_is_dead_lettered_and_fails_validation(
    spark: Any, pipeline: Settings
) -> None:
    source = ArticleSource(seed=72, partitions=1)
    first = source.insert()
    send(pipeline, source.to_messages([first]), 1)
    drain(spark, pipeline)
    import time

    since = int(time.time() * 1000)
    bad = _with_schema_change(
        source.encode(source.update(first.key)), "word_count", "boolean", True
    )
    send(pipeline, [bad], 1)
    drain(spark, pipeline)

    letters = dead_letters(pipeline)
    assert len(letters) == 1
    assert letters[0]["reason"].startswith("incompatible schema change: column word_count is int")
    report = validate(
        table_stats(pipeline, since),
        now_ms=int(time.time() * 1000),
        max_staleness_s=None,
        max_new_dead_letters=10,
    )
    assert not report.ok
    assert "incompatible schema change" in report.message()
