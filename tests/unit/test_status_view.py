"""The status command's pure parts: checkpoint against table, reasons, the text view."""

from __future__ import annotations

from pathlib import Path

from cdc_iceberg.checkpoint_log import CommittedBatch, committed_batch
from cdc_iceberg.status import TableStatus, checkpoint_state, reason_kind, render

TOPIC = "neuronews.public.articles"


def _entry(path: Path, offsets: dict[int, int]) -> None:
    pairs = ", ".join(f'"{p}": {o}' for p, o in offsets.items())
    path.write_text(f'v1\n{{"batchWatermarkMs":0}}\n{{"{TOPIC}": {{{pairs}}}}}\n')


def test_the_newest_committed_batch_is_read_and_later_plans_are_named(tmp_path: Path) -> None:
    (tmp_path / "offsets").mkdir()
    (tmp_path / "commits").mkdir()
    for batch, offsets in enumerate(({0: 5, 1: 2}, {0: 9, 1: 4}, {0: 12, 1: 4})):
        _entry(tmp_path / "offsets" / str(batch), offsets)
    for batch in (0, 1):
        (tmp_path / "commits" / str(batch)).write_text('v1\n{"nextBatchWatermarkMs":0}\n')
    assert committed_batch(str(tmp_path), TOPIC) == CommittedBatch(1, {0: 9, 1: 4}, (2,))
    assert committed_batch(str(tmp_path / "missing"), TOPIC) is None


def test_a_checkpoint_that_matches_the_table_agrees() -> None:
    state = checkpoint_state("/c", {0: 9, 1: 4}, CommittedBatch(3, {0: 9, 1: 4}), exists=True)
    assert (state.state, state.ok, state.batch_id) == ("agrees", True, 3)


def test_a_checkpoint_behind_the_table_is_fine_and_says_why() -> None:
    state = checkpoint_state("/c", {0: 12, 1: 4}, CommittedBatch(3, {0: 9, 1: 4}), exists=True)
    assert (state.state, state.ok) == ("behind", True)
    assert "partition 0" in state.detail and "skips what the table holds" in state.detail


def test_a_checkpoint_ahead_of_the_table_is_a_problem_naming_partition_and_fix() -> None:
    batch = CommittedBatch(7, {0: 9, 1: 8}, planned=(8,))
    state = checkpoint_state("/c", {0: 9, 1: 4}, batch, exists=True)
    assert (state.state, state.ok) == ("ahead", False)
    assert "partition 1: 8 > 4" in state.detail
    assert "reset the checkpoint" in state.detail
    assert "batch 8 planned, never committed" in state.detail
    # a partition the table never committed counts from 0
    assert not checkpoint_state("/c", {}, CommittedBatch(0, {0: 1}), exists=True).ok


def test_missing_unusable_empty_and_remote_checkpoints() -> None:
    none = checkpoint_state("/c", {0: 3}, None, exists=False)
    assert (none.state, none.ok) == ("none", True) and "table's offsets" in none.detail
    assert "STARTING_OFFSETS" in checkpoint_state("/c", {}, None, exists=False).detail
    bad = checkpoint_state("/c", {0: 3}, None, exists=True, problem="offsets/4 is truncated")
    assert (bad.state, bad.ok) == ("unusable", True) and "offsets/4 is truncated" in bad.detail
    assert checkpoint_state("/c", {}, None, exists=True).state == "empty"
    remote = checkpoint_state("s3a://bucket/ckpt", {0: 3}, None, exists=True)
    assert (remote.state, remote.ok) == ("remote", True)


def test_reasons_group_without_the_records_values() -> None:
    first = reason_kind("column price: value '12.3.4' does not fit type decimal(10,2)")
    second = reason_kind("column price: value 'abc' does not fit type decimal(10,2)")
    assert first == second == "column price: value '…' does not fit type decimal(10,2)"
    assert reason_kind("unknown op 'x'") == "unknown op '…'"
    assert reason_kind(None) == "no reason recorded"


def test_the_text_view_shows_every_fact_of_every_table() -> None:
    now = 1_800_000_000_000
    live = TableStatus(
        "neuronews.order_lines",
        "neuronews.public.order_lines",
        exists=True,
        lag={0: 5, 1: 0},
        lag_total=5,
        newest_change_ms=now - 90_000,
        last_batch={
            "batch_id": 4,
            "committed_at_ms": now - 60_000,
            "events_in": 100,
            "inserted": 60,
            "updated": 30,
            "deleted": 9,
            "stale": 0,
            "dead_lettered": 1,
            "duration_s": 2.5,
        },
        rows=1234,
        tombstones=9,
        snapshots=12,
        dead_letters=3,
        dead_letters_replayed=4,
        dead_letter_reasons={"no op field": 1, "column x: value '…' does not fit type int": 2},
        checkpoint=checkpoint_state("/c", {0: 5}, CommittedBatch(4, {0: 5}), exists=True),
    )
    new = TableStatus(
        "neuronews.tenant_notes",
        "neuronews.public.tenant_notes",
        lag={0: 7},
        lag_total=7,
        problems=["Kafka cannot be read: timeout"],
    )
    text = render([live, new], now)
    assert "neuronews.order_lines  (topic neuronews.public.order_lines)" in text
    assert "lag          5 records (p0: 5, p1: 0)" in text
    assert "(90 s ago)" in text
    assert "last batch   4 at " in text and "60 inserted, 30 updated, 9 deleted" in text
    assert "1,234 live, 9 tombstones, 12 snapshots" in text
    assert "dead letters 3 (4 more applied by a replay)" in text
    assert text.index("2  column x") < text.index("1  no op field")  # most frequent first
    assert "checkpoint   agrees: batch 4 agrees with the table" in text
    assert "not created yet" in text
    assert "PROBLEM      Kafka cannot be read: timeout" in text


def test_the_airflow_page_shows_each_table_and_escapes_what_comes_from_the_data() -> None:
    from cdc_airflow.status_page import status_page

    now = 1_800_000_000_000
    table = TableStatus(
        "neuronews.order_lines",
        "neuronews.public.order_lines",
        exists=True,
        lag={0: 0},
        lag_total=0,
        rows=1234,
        tombstones=5,
        snapshots=7,
        dead_letters=1,
        dead_letter_reasons={"column note: value '…' does not fit <script>": 1},
        checkpoint=checkpoint_state("/c", {0: 5}, CommittedBatch(4, {0: 9}), exists=True),
        problems=["checkpoint ahead: /c"],
    )
    page = status_page([table], now)
    assert "<b>neuronews.order_lines</b>" in page
    assert "1,234 / 5 / 7" in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "checkpoint ahead: /c" in page and "ahead:" in page
