"""Many tables in one Spark application: each with its own progress, tombstones,
dead letters and checkpoint, found by a topic pattern, failing alone.

Real Kafka, Spark and Iceberg; the oracle is the reference fold of each topic.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import pytest
from articles import ARTICLES, write_pipelines
from reference_fold import fold
from support import assert_table_equals_fold, dead_letters, send, snapshots
from tables import ORDER_LINES_FOLD, TENANT_NOTES_FOLD, corrupt, publish

from cdc_iceberg import pipelines, reset
from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.settings import Settings
from cdc_iceberg.table_generator import (
    ORDER_LINES,
    TENANT_NOTES,
    ColumnSpec,
    TableSource,
    TableSpec,
)
from jobs.drain_tables import configured_tables, drain_tables


@pytest.fixture
def schema() -> str:
    """A Postgres schema of the test's own, so its topic pattern matches only its topics."""
    return "s" + uuid.uuid4().hex[:8]


@pytest.fixture
def base(base_settings: Settings, work_dir: Path, schema: str) -> Settings:
    """Settings of a run over the schema's tables: a pipelines file with a topic pattern
    and one declared table (articles, whose events are also sent without schema blocks)."""
    path = write_pipelines(
        work_dir / "pipelines" / f"{schema}.yaml",
        {
            f"{schema}.articles": {
                "iceberg_table": f"neuronews.{schema}_news",
                "schema": ARTICLES.to_declared(),
            }
        },
    )
    text = Path(path).read_text(encoding="utf-8")
    Path(path).write_text(f"topics: neuronews.{schema}.*\n{text}", encoding="utf-8")
    return base_settings.replace(
        kafka_consumer_group=f"group_{schema}",
        checkpoint_location=str(work_dir / "checkpoints" / schema),
        pipelines_file=path,
        max_offsets_per_trigger=200,
        parallel_tables=3,
    )


def test_one_run_drains_every_table_and_a_reset_touches_one(
    spark: Any, base: Settings, schema: str
) -> None:
    config = pipelines.load(base.pipelines_file)
    articles = config.tables[0].settings(base)
    article_records = send(
        articles, ArticleSource(seed=7).random_history(300, 50, snapshot_rows=10, toast_share=0.2)
    )
    lines = TableSource(dataclasses.replace(ORDER_LINES, schema=schema), seed=8)
    lines_settings = base.replace(kafka_topic=lines.topic)
    line_records = publish(lines_settings, lines.random_history(700, 80, pk_change_share=0.04))
    notes = TableSource(dataclasses.replace(TENANT_NOTES, schema=schema), seed=9)
    notes_settings = base.replace(kafka_topic=notes.topic)
    history = notes.random_history(120, 30)
    history = corrupt(history, "day", "the 3rd")
    note_records = publish(notes_settings, history)
    # a table without a primary key: refused, and only it
    keyless = TableSource(TableSpec(schema, "audit", (ColumnSpec("body", "text"),), ()), seed=1)
    publish(
        base.replace(kafka_topic=keyless.topic),
        [m for m in keyless.random_history(10, 5) if m.value is not None],
    )

    tables = configured_tables(base, config)
    assert [t.source for t in tables] == [
        f"{schema}.articles",
        f"{schema}.audit",
        f"{schema}.order_lines",
        f"{schema}.tenant_notes",
    ]
    outcomes = {o.table.source: o for o in drain_tables(spark, base, tables)}

    assert "REPLICA IDENTITY FULL" in str(outcomes[f"{schema}.audit"].error)
    done = {s: o for s, o in outcomes.items() if s != f"{schema}.audit"}
    assert all(o.error is None for o in done.values()), {s: o.error for s, o in done.items()}
    by_source = {t.source: t.settings(base) for t in tables}
    lines_table = by_source[f"{schema}.order_lines"]
    notes_table = by_source[f"{schema}.tenant_notes"]
    assert articles.iceberg_table == f"neuronews.{schema}_news"
    assert_table_equals_fold(by_source[f"{schema}.articles"], fold(article_records).rows)
    assert_table_equals_fold(
        lines_table, fold(line_records, table=ORDER_LINES_FOLD).rows, ORDER_LINES_FOLD
    )
    expected_notes = fold(note_records, table=TENANT_NOTES_FOLD)
    assert_table_equals_fold(notes_table, expected_notes.rows, TENANT_NOTES_FOLD)
    # the bad record is a dead letter of its own table only
    letters = {(d["kafka_partition"], d["kafka_offset"]) for d in dead_letters(notes_table)}
    assert letters == set(expected_notes.dead) and len(letters) == 1
    assert not dead_letters(lines_table)
    # the big table ran in several bounded batches; each table has its own checkpoint
    assert len(outcomes[f"{schema}.order_lines"].result.batches) >= 3
    checkpoints = {Path(s.checkpoint_location) for s in by_source.values()}
    assert len(checkpoints) == 4 and all(
        p.parent == Path(base.checkpoint_location) for p in checkpoints
    )

    # reset one table from the start: the others are untouched by it and by the next run
    before = {s: snapshots(t) for s, t in by_source.items() if s != f"{schema}.audit"}
    plan = reset.plan_reset(lines_table, "full-rebuild", lines_table.iceberg_table)
    reset.apply_reset(lines_table, plan)
    again = {o.table.source: o for o in drain_tables(spark, base, configured_tables(base, config))}
    assert again[f"{schema}.order_lines"].result.batches
    for source in (f"{schema}.articles", f"{schema}.tenant_notes"):
        assert not again[source].result.batches
        assert snapshots(by_source[source]) == before[source]
    assert_table_equals_fold(
        lines_table, fold(line_records, table=ORDER_LINES_FOLD).rows, ORDER_LINES_FOLD
    )


def test_a_table_created_later_is_picked_up_by_the_next_run(
    spark: Any, base: Settings, schema: str
) -> None:
    config = pipelines.load(base.pipelines_file)
    first = configured_tables(base, config)
    assert [t.source for t in first] == [f"{schema}.articles"]  # declared, no topic yet
    (outcome,) = drain_tables(spark, base, first)
    assert outcome.error is None and not outcome.result.batches

    notes = TableSource(dataclasses.replace(TENANT_NOTES, schema=schema), seed=4)
    records = publish(base.replace(kafka_topic=notes.topic), notes.random_history(60, 15))
    later = configured_tables(base, config)
    assert [t.source for t in later] == [f"{schema}.articles", f"{schema}.tenant_notes"]
    outcomes = drain_tables(spark, base, later)
    assert all(o.error is None for o in outcomes)
    assert_table_equals_fold(
        later[1].settings(base), fold(records, table=TENANT_NOTES_FOLD).rows, TENANT_NOTES_FOLD
    )
