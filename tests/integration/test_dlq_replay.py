"""Dead-letter replay against real Kafka, Spark and Iceberg, crash included.

Changes of a composite-key table carry quantities too big for its ``int``
column: they are dead-lettered. The column is widened to ``bigint`` and the
dead letters are replayed. The oracle is the reference fold of every record
with the column typed as ``bigint`` (never the code under test): dead letters
that were the newest change of their key now show, older ones change nothing,
and a record that still does not fit stays a dead letter, marked. A replay
killed between the table's commit and the marking is run again: exact.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from reference_fold import FoldTable, fold
from support import assert_table_equals_fold, dead_letters, snapshots
from tables import ORDER_LINES_FOLD, publish

from cdc_iceberg import table_state
from cdc_iceberg.settings import PROJECT_ROOT, Settings
from cdc_iceberg.spark_conf import spark_env
from cdc_iceberg.status import table_status
from cdc_iceberg.table_generator import ORDER_LINES, TableMessage, TableSource
from jobs.cdc_to_iceberg import drain
from jobs.dlq_replay import Selection, replay

pytestmark = pytest.mark.integration

WIDE = FoldTable(
    ORDER_LINES_FOLD.key,
    tuple(
        ("quantity", "bigint", "bigint") if name == "quantity" else (name, codec, kind)
        for name, codec, kind in ORDER_LINES_FOLD.columns
    ),
)
TOO_BIG = 5_000_000_000  # over int's range, within bigint's
# generated changes are dated 2026-01-01 on: keep their deletes' tombstones in reach
RETENTION_HOURS = 24 * 365 * 3


@pytest.fixture
def settings(pipeline: Settings, work_dir: Path) -> Settings:
    empty = work_dir / "pipelines" / f"{pipeline.pipeline_id}-replay.yaml"
    empty.write_text("tables: {}\n", encoding="utf-8")
    return pipeline.replace(pipelines_file=str(empty), max_offsets_per_trigger=200)


def _change(message: TableMessage) -> tuple[str, Any]:
    """(op, key) of a change: the key of its after image, or of its before image."""
    payload = json.loads(message.value or b"{}")["payload"]
    image = payload["after"] or payload["before"]
    return payload["op"], (image["order_id"], image["line_no"])


def _set_quantity(message: TableMessage, value: Any) -> TableMessage:
    event = json.loads(message.value or b"")
    event["payload"]["after"]["quantity"] = value
    return dataclasses.replace(message, value=json.dumps(event).encode())


def broken_history(source: TableSource) -> list[TableMessage]:
    """A history with quantities over int's range in the newest change of two keys and in
    two older changes of others, and one quantity that is no number at all."""
    history = source.random_history(400, 50, toast_share=0.2, pk_change_share=0.0)
    changes = {i: _change(m) for i, m in enumerate(history) if m.value is not None}
    last = {key: i for i, (_, key) in changes.items()}
    upserts = [i for i, (op, _) in changes.items() if op != "d"]
    newest = [i for i in upserts if last[changes[i][1]] == i][:2]
    older = [i for i in upserts if last[changes[i][1]] != i][:3]
    out = list(history)
    for i in (*newest, *older[:2]):
        out[i] = _set_quantity(out[i], TOO_BIG)
    out[older[2]] = _set_quantity(out[older[2]], "lots")
    return out


def run_replay(settings: Settings, *args: str, failpoint: str = "") -> subprocess.CompletedProcess:
    """The replay as `make dlq-replay` runs it, in a process of its own."""
    env = spark_env()
    env.update(settings.replace(failpoint=failpoint).to_env())
    return subprocess.run(
        [sys.executable, "-m", "cdc_iceberg.submit", "--job", "dlq_replay", "--", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _result(done: subprocess.CompletedProcess) -> dict[str, Any]:
    lines = [line for line in done.stdout.splitlines() if '"cdc_dlq_replay"' in line]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(lines[-1])


def test_replay_after_a_widened_column_is_exact_across_a_crash(
    spark: Any, settings: Settings
) -> None:
    records = publish(settings, broken_history(TableSource(ORDER_LINES, seed=41)))
    drain(spark, settings)
    narrow, wide = fold(records, table=ORDER_LINES_FOLD), fold(records, table=WIDE)
    assert len(narrow.dead) == 5 and len(wide.dead) == 1
    assert wide.rows != narrow.rows, "a newest change was dead-lettered"
    assert_table_equals_fold(settings, narrow.rows, ORDER_LINES_FOLD)
    offsets = table_state.committed_offsets(settings)

    # the cause is fixed: the column holds bigint now
    spark.sql(
        f"ALTER TABLE {settings.qualified(settings.iceberg_table)} "
        "ALTER COLUMN quantity TYPE bigint"
    )
    # a dry run reports and writes nothing; without the retention check off, these
    # changes from months ago fail: a delete since then may have been forgotten
    before = snapshots(settings)
    dry = replay(spark, settings, Selection(), dry_run=True)
    assert (dry.selected, dry.applied, dry.failed) == (5, 0, 5)
    retention = [n for r, n in dry.failed_reasons.items() if "tombstone retention" in r]
    assert retention == [4], dry.failed_reasons
    kept = settings.replace(tombstone_retention_hours=RETENTION_HOURS)
    dry = replay(spark, kept, Selection(reason="does not fit"), dry_run=True)
    assert (dry.selected, dry.applied, dry.failed) == (5, 4, 1)
    assert snapshots(settings) == before
    assert all(letter["replay_outcome"] is None for letter in dead_letters(settings))

    # killed after the table's commit, before the dead letters are marked
    crashed = run_replay(kept, "--apply", failpoint="before_dlq_mark")
    assert crashed.returncode != 0, crashed.stdout[-2000:]
    assert_table_equals_fold(settings, wide.rows, WIDE)
    assert all(letter["replay_outcome"] is None for letter in dead_letters(settings))

    # run again: nothing changes twice, every dead letter is marked, none is added
    result = _result(run_replay(kept, "--apply", "--replay-id", "fix-quantity"))
    assert (result["selected"], result["applied"], result["failed"]) == (5, 4, 1)
    assert result["inserted"] + result["updated"] + result["deleted"] == 0
    assert_table_equals_fold(settings, wide.rows, WIDE)
    letters = dead_letters(settings)
    assert {(d["kafka_partition"], d["kafka_offset"]) for d in letters} == set(narrow.dead)
    outcomes = {(d["kafka_partition"], d["kafka_offset"]): d["replay_outcome"] for d in letters}
    (unfixable,) = wide.dead
    assert outcomes.pop(unfixable).startswith("failed: column quantity: value 'lots'")
    assert set(outcomes.values()) == {"applied"}
    assert {d["replay_id"] for d in letters} == {"fix-quantity"}
    assert all(d["replayed_at"] is not None for d in letters)

    # the status counts the applied ones apart
    status = table_status(settings)
    assert (status.dead_letters, status.dead_letters_replayed) == (1, 4)
    (reason,) = status.dead_letter_reasons
    assert reason.startswith("column quantity: value '…' does not fit type")

    # what was applied is not taken again; what failed is, and fails again
    again = replay(spark, kept, Selection(), dry_run=False)
    assert (again.selected, again.applied, again.failed) == (1, 0, 1)
    assert_table_equals_fold(settings, wide.rows, WIDE)
    # the pipeline's position is untouched, and the next drain goes on from it
    assert table_state.committed_offsets(settings) == offsets
    later = publish(settings, TableSource(ORDER_LINES, seed=42).random_history(60, 50)[:60])
    drain(spark, settings)
    assert_table_equals_fold(settings, fold(records + later, table=WIDE).rows, WIDE)
