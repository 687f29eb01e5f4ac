from __future__ import annotations

from cdc_iceberg.checks import TableStats, evaluate_lag, validate
from cdc_iceberg.kafka_offsets import covers, from_spark_json, lag, to_spark_json


def _stats(**changes: object) -> TableStats:
    values: dict[str, object] = dict(
        rows=10,
        duplicate_keys={},
        null_keys=0,
        newest_ts_ms=1_000_000,
        dead_letters=3,
        new_dead_letters=0,
    )
    values.update(changes)
    return TableStats(**values)  # type: ignore[arg-type]


def test_clean_table_passes_with_facts() -> None:
    report = validate(
        _stats(),
        now_ms=1_060_000,
        max_staleness_s=120,
        max_new_dead_letters=0,
        batches=[{"events_in": 5, "inserted": 2}, {"events_in": 1, "deleted": 1}],
    )
    assert report.ok
    assert report.facts["staleness_s"] == 60
    assert report.facts["last_commit_age_s"] is None  # no batch committed yet
    committed = validate(
        _stats(last_commit_ms=1_055_000),
        now_ms=1_060_000,
        max_staleness_s=None,
        max_new_dead_letters=0,
    )
    assert committed.facts["last_commit_age_s"] == 5
    assert report.facts["events_in"] == 6
    assert report.facts["deleted"] == 1


def test_each_problem_is_named() -> None:
    report = validate(
        _stats(duplicate_keys={"a": 2}, null_keys=1, new_dead_letters=4, new_incompatible_schema=2),
        now_ms=10_000_000,
        max_staleness_s=60,
        max_new_dead_letters=0,
    )
    assert not report.ok
    text = report.message()
    assert "occur more than once (a x2)" in text
    assert "null article_id" in text
    assert "4 records were dead-lettered" in text
    assert "incompatible schema change" in text
    assert "old (limit 60s) while records wait in Kafka (unknown)" in text


def test_an_old_table_is_stale_only_while_records_wait() -> None:
    old = dict(now_ms=10_000_000, max_staleness_s=60, max_new_dead_letters=0)
    quiet = validate(_stats(), **old, waiting=0)  # type: ignore[arg-type]
    assert quiet.ok and quiet.facts["staleness_s"] == 9000
    behind = validate(_stats(), **old, waiting=12)  # type: ignore[arg-type]
    assert not behind.ok
    assert behind.problems == [
        "newest change in the table is 9000s old (limit 60s) while records wait in Kafka (12)"
    ]
    fresh = validate(_stats(), **{**old, "now_ms": 1_030_000}, waiting=12)  # type: ignore[arg-type]
    assert fresh.ok and fresh.facts["waiting"] == 12


def test_lag_against_threshold() -> None:
    report = evaluate_lag({0: 100, 1: 50, 2: 7}, {0: 100, 1: 10}, max_lag_per_partition=20)
    assert report.per_partition == {0: 0, 1: 40, 2: 7}
    assert not report.ok
    assert "partition 1: 40" in report.message
    assert evaluate_lag({0: 5}, {0: 5}, 0).ok


def test_offset_helpers() -> None:
    assert lag({0: 10, 1: 4}, {0: 3}) == {0: 7, 1: 4}
    text = to_spark_json("t", {1: 5, 0: -2})
    assert text == '{"t": {"0": -2, "1": 5}}'
    assert from_spark_json(text, "t") == {0: -2, 1: 5}
    assert covers({0: 10, 1: 5}, {0: 10, 1: 5})
    assert not covers({0: 10}, {0: 10, 1: 1})
