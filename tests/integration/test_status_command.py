"""``python -m cdc_iceberg status`` against real Kafka, Spark and Iceberg.

Two tables found by a topic pattern are drained by one run; the status
command, run as a user runs it, must report what the reference fold of each
topic says: live rows, tombstones, dead letters, the newest applied change,
no lag. Then it must see new records as lag of one table only, a lost
checkpoint, and a checkpoint left ahead of a table rolled back by an operator.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from reference_fold import Record, fold
from support import catalog
from tables import ORDER_LINES_FOLD, TENANT_NOTES_FOLD, corrupt, publish

from cdc_iceberg import pipelines
from cdc_iceberg.settings import PROJECT_ROOT, Settings
from cdc_iceberg.table_generator import ORDER_LINES, TENANT_NOTES, TableSource
from jobs.drain_tables import configured_tables, drain_tables


@pytest.fixture
def schema() -> str:
    return "st" + uuid.uuid4().hex[:8]


@pytest.fixture
def base(base_settings: Settings, work_dir: Path, schema: str) -> Settings:
    path = work_dir / "pipelines" / f"{schema}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"topics: neuronews.{schema}.*\n", encoding="utf-8")
    return base_settings.replace(
        kafka_consumer_group=f"group_{schema}",
        checkpoint_location=str(work_dir / "checkpoints" / schema),
        pipelines_file=str(path),
        max_offsets_per_trigger=250,
    )


def status(settings: Settings, *args: str) -> tuple[int, str]:
    """Run the status command in a process of its own, configured by the environment."""
    env = {**os.environ, **settings.to_env()}
    env.pop("ICEBERG_DLQ_TABLE", None)
    done = subprocess.run(
        [sys.executable, "-m", "cdc_iceberg", "status", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


def by_table(settings: Settings) -> dict[str, dict[str, Any]]:
    code, out = status(settings, "--json")
    tables = {t["table"]: t for t in json.loads(out)["tables"]}
    tables["_exit"] = {"code": code}
    return tables


def newest_applied_ms(records: list[Record], dead: dict[tuple[int, int], str]) -> int:
    """The source commit time of the newest change that is not a dead letter."""
    return max(
        json.loads(r.value)["payload"]["source"]["ts_ms"]
        for r in records
        if r.value is not None and (r.partition, r.offset) not in dead
    )


def test_status_reports_each_table_as_the_fold_says(
    spark: Any, base: Settings, schema: str
) -> None:
    lines = TableSource(dataclasses.replace(ORDER_LINES, schema=schema), seed=31)
    lines_topic = base.replace(kafka_topic=lines.topic)
    line_records = publish(lines_topic, lines.random_history(600, 70, pk_change_share=0.04))
    notes = TableSource(dataclasses.replace(TENANT_NOTES, schema=schema), seed=32)
    notes_topic = base.replace(kafka_topic=notes.topic)
    history = corrupt(notes.random_history(150, 30), "day", "the 3rd")
    note_records = publish(notes_topic, history)

    config = pipelines.load(base.pipelines_file)
    tables = configured_tables(base, config)
    outcomes = drain_tables(spark, base, tables)
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    settings = {t.source.split(".")[1]: t.settings(base) for t in tables}

    found = by_table(base)
    assert found.pop("_exit") == {"code": 0}
    assert set(found) == {s.iceberg_table for s in settings.values()}
    for name, records, shape in (
        ("order_lines", line_records, ORDER_LINES_FOLD),
        ("tenant_notes", note_records, TENANT_NOTES_FOLD),
    ):
        expected = fold(records, table=shape)
        got = found[settings[name].iceberg_table]
        assert got["exists"] and got["topic"] == settings[name].kafka_topic
        assert got["rows"] == len(expected.rows), name
        assert got["tombstones"] == len(expected.deleted), name
        assert got["dead_letters"] == len(expected.dead), name
        assert got["lag_total"] == 0 and got["problems"] == [], name
        assert got["newest_change_ms"] == newest_applied_ms(records, expected.dead), name
        assert got["checkpoint"]["state"] == "agrees", got["checkpoint"]
        ends: dict[int, int] = {}
        for r in records:
            ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
        assert got["table_offsets"] == {str(p): o for p, o in sorted(ends.items())}
        table = catalog(settings[name]).load_table(settings[name].iceberg_table)
        assert got["last_batch"]["snapshot_id"] == table.current_snapshot().snapshot_id
        assert got["snapshots"] == len(table.snapshots())
    (reason,) = found[settings["tenant_notes"].iceberg_table]["dead_letter_reasons"]
    assert reason.startswith("column day: value '…' does not fit type")

    # new changes of one table are lag of that table only
    more = publish(notes_topic, notes.random_history(40, 10)[:40])
    found = by_table(base)
    assert found[settings["tenant_notes"].iceberg_table]["lag_total"] == len(more) == 40
    assert found[settings["order_lines"].iceberg_table]["lag_total"] == 0

    # a lost checkpoint: the next drain starts from the table's offsets
    shutil.rmtree(settings["tenant_notes"].checkpoint_location)
    code, text = status(base, "--table", f"{schema}.tenant_notes")
    assert code == 0
    assert settings["order_lines"].iceberg_table not in text
    assert "checkpoint   none: no checkpoint: the next drain starts from the table's" in text
    assert "lag          40 records" in text

    # a table rolled back by an operator leaves its checkpoint ahead of it: a problem
    table = catalog(settings["order_lines"]).load_table(settings["order_lines"].iceberg_table)
    parent = table.current_snapshot().parent_snapshot_id
    table.manage_snapshots().rollback_to_snapshot(parent).commit()
    found = by_table(base)
    assert found.pop("_exit") == {"code": 1}
    lines_status = found[settings["order_lines"].iceberg_table]
    assert lines_status["checkpoint"]["state"] == "ahead"
    assert lines_status["lag_total"] > 0
    assert lines_status["problems"] and "checkpoint ahead" in lines_status["problems"][0]
    assert found[settings["tenant_notes"].iceberg_table]["problems"] == []
