"""History tables (SCD type 2) against real Kafka, Spark and Iceberg.

A composite-key table with ``history: true`` gets changes with TOASTed
columns, key changes, deletes, redeliveries, and changes that arrive after
newer ones of their key (late). The oracle is the plain-Python history of
the reference fold: every version in sequence order, valid until the next,
deletes as versions of their own, TOASTed columns carrying the version
before. The whole topic delivered again adds nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from articles import write_pipelines
from reference_fold import PLACEHOLDER, Version, decode, fold, history
from support import assert_table_equals_fold, read_rows, run_job
from tables import ORDER_LINES_FOLD, publish

from cdc_iceberg.settings import Settings
from cdc_iceberg.table_generator import ORDER_LINES, TableSource
from jobs.cdc_to_iceberg import drain

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(pipeline: Settings, work_dir: Path) -> Settings:
    path = write_pipelines(
        work_dir / "pipelines" / f"{pipeline.pipeline_id}-history.yaml",
        {
            "public.order_lines": {
                "topic": pipeline.kafka_topic,
                "iceberg_table": pipeline.iceberg_table,
                "history": True,
            }
        },
    )
    return pipeline.replace(pipelines_file=path, max_offsets_per_trigger=250)


def stored_history(settings: Settings) -> dict[Any, list[Version]]:
    """The history table by key, versions in sequence order."""
    out: dict[Any, list[Version]] = {}
    for row in read_rows(settings, settings.history_table):
        key = tuple(row[k] for k in ORDER_LINES_FOLD.key)
        values = {c: row[c] for c in ORDER_LINES_FOLD.names}
        seq = (row["ts_ms"], row["lsn"], row["kafka_partition"], row["kafka_offset"])
        ends = row["valid_to"]
        out.setdefault(key, []).append(
            Version(
                row["cdc_op"],
                seq,
                round(row["valid_from"].timestamp() * 1000),
                None if ends is None else round(ends.timestamp() * 1000),
                values,
            )
        )
    for versions in out.values():
        versions.sort(key=lambda v: v.seq)
    return out


def late(messages: list[Any], count: int) -> list[Any]:
    """``messages`` with ``count`` updates from the first half moved to the end."""
    picked = [
        i
        for i, m in enumerate(messages[: len(messages) // 2])
        if m.value is not None and json.loads(m.value)["payload"]["op"] == "u"
    ][:count]
    return [m for i, m in enumerate(messages) if i not in picked] + [messages[i] for i in picked]


def test_history_holds_every_version_in_its_place(spark: Any, settings: Settings) -> None:
    source = TableSource(ORDER_LINES, seed=51)
    messages = late(
        source.random_history(
            500, 40, toast_share=0.35, pk_change_share=0.05, redelivery_share=0.05
        ),
        4,
    )
    first = publish(settings, messages[:300])
    drain(spark, settings)
    later = publish(settings, messages[300:])
    drain(spark, settings)
    records = first + later

    assert_table_equals_fold(settings, fold(records, table=ORDER_LINES_FOLD).rows, ORDER_LINES_FOLD)
    # the history has what it is about: TOASTed changes and changes older than one before
    changes = [
        d for kind, d in (decode(r, table=ORDER_LINES_FOLD) for r in records) if kind == "ok"
    ]
    assert any(PLACEHOLDER in row.values() for _, op, _, row in changes if op == "u")
    newest: dict[Any, tuple[int, int, int, int]] = {}
    arrived_late = 0
    for key, _, seq, _ in changes:
        arrived_late += seq < newest.get(key, seq)
        newest[key] = max(seq, newest.get(key, seq))
    assert arrived_late >= 4
    expected = history(records, table=ORDER_LINES_FOLD)
    assert any(v.op == "d" for vs in expected.values() for v in vs), "deletes are versions"
    assert sum(len(vs) for vs in expected.values()) > len(expected), "keys change"
    got = stored_history(settings)
    assert set(got) == set(expected)
    for key, versions in expected.items():
        assert [(v.seq[:2], v.op) for v in got[key]] == [(v.seq[:2], v.op) for v in versions], key
        for have, want in zip(got[key], versions, strict=True):
            assert (have.valid_from_ms, have.valid_to_ms) == (want.valid_from_ms, want.valid_to_ms)
            assert have.row == want.row, (key, want.seq)
    # exactly one open version per key that still exists
    for key, versions in got.items():
        assert [v.valid_to_ms for v in versions].count(None) == 1, key

    # the whole topic delivered again (a connector restarted from an old offset): every
    # change is a version the history holds already
    before = len(read_rows(settings, settings.history_table))
    again = publish(settings, messages)
    drain(spark, settings)
    assert len(read_rows(settings, settings.history_table)) == before
    assert stored_history(settings) == history(records + again, table=ORDER_LINES_FOLD)


@pytest.mark.faults  # two spark-submits around a kill -9: the long suite
def test_a_drain_killed_after_the_history_commit_is_exact_when_run_again(
    settings: Settings,
) -> None:
    """kill -9 of the driver between the history's commit and the live table's: the rerun
    applies the batch again, and the history holds each version once."""
    source = TableSource(ORDER_LINES, seed=52)
    records = publish(settings, late(source.random_history(300, 30, toast_share=0.3), 3))
    crashed = run_job(settings, failpoint="after_history@1")
    assert crashed.returncode != 0, crashed.stdout[-2000:]
    done = run_job(settings)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_table_equals_fold(settings, fold(records, table=ORDER_LINES_FOLD).rows, ORDER_LINES_FOLD)
    assert stored_history(settings) == history(records, table=ORDER_LINES_FOLD)
