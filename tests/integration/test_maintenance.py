"""Maintenance on a drained table: tombstone pruning keeps exactly the deletes still in force."""

from __future__ import annotations

from typing import Any

import pytest
from articles import ARTICLE_KEY, KEY
from reference_fold import fold
from support import assert_table_equals_fold, catalog, read_rows, send

from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.schema import IMAGE, SEQUENCE
from cdc_iceberg.settings import Settings
from jobs.cdc_to_iceberg import drain
from jobs.iceberg_maintenance import prune_tombstones
from jobs.iceberg_tables import IcebergTables

pytestmark = pytest.mark.integration


def _tombstone_rows(settings: Settings) -> list[tuple[str, tuple[int, ...]]]:
    rows = read_rows(settings, settings.tombstone_table)
    return [(r[ARTICLE_KEY], tuple(r[c] for c in SEQUENCE)) for r in rows]  # type: ignore[misc]


def _tombstone_files(settings: Settings) -> set[str]:
    loaded = catalog(settings).load_table(settings.tombstone_table)
    return {task.file.file_path for task in loaded.scan().plan_files()}


def _tombstones(settings: Settings) -> dict[str, tuple[int, ...]]:
    """The delete in force per key: the newest of its tombstones."""
    newest: dict[str, tuple[int, ...]] = {}
    for key, seq in _tombstone_rows(settings):
        newest[key] = max(seq, newest.get(key, seq))
    return newest


def _remember(
    spark: Any,
    tables: IcebergTables,
    key: str,
    seq: tuple[int, ...],
    image: dict[str, Any] | None = None,
) -> None:
    """Add a tombstone of ``key`` at ``seq``; with ``image``, that of a key change."""
    from datetime import UTC, datetime

    schema = spark.table(tables.tombstones).schema
    row = {ARTICLE_KEY: key, **dict(zip(SEQUENCE, seq, strict=True))}
    row["deleted_at"] = datetime.now(UTC)
    if image is not None:
        fields = schema[IMAGE].dataType.fieldNames()
        row[IMAGE] = {f: image.get(f) for f in fields} | dict(zip(SEQUENCE, seq, strict=True))
    values = [row.get(f) for f in schema.fieldNames()]
    spark.createDataFrame([values], schema).writeTo(tables.tombstones).append()


@pytest.mark.parametrize("mode", ["copy-on-write", "merge-on-read"])
def test_prune_drops_superseded_and_expired_tombstones(
    spark: Any, pipeline: Settings, mode: str
) -> None:
    settings = pipeline.replace(max_offsets_per_trigger=150, iceberg_write_mode=mode)
    source = ArticleSource(seed=47, partitions=2)
    records = send(settings, source.random_history(600, 30, delete_share=0.3), 2)
    drain(spark, settings)
    expected = fold(records)
    before = _tombstones(settings)
    assert before == expected.deleted
    # a tombstone its key's live row outdates: the job's own tombstone MERGE forgets
    # those, so one is written here directly; the prune must drop it and nothing else
    tables = IcebergTables.declared(spark, settings)
    live_key, live = sorted(expected.rows.items())[0]
    ts_ms, lsn, partition, offset = live["_seq"]
    _remember(spark, tables, live_key, (ts_ms - 1, lsn, partition, offset))
    assert live_key in _tombstones(settings)
    # and an older tombstone of a key whose newer delete is in force
    dead_key, (ts_ms, lsn, partition, offset) = sorted(expected.deleted.items())[0]
    _remember(spark, tables, dead_key, (ts_ms, lsn - 1, partition, offset))
    # the tombstone of a key change keeps the row it removed for the new key's create,
    # which may come later than a newer version of the old key: kept until retention
    other_key, other = sorted(expected.rows.items())[1]
    image = (other["_seq"][0] - 5, *other["_seq"][1:])
    _remember(spark, tables, other_key, image, {"title": "the row before its key changed"})

    # and the image of a deleted key's earlier key change, older than its delete in force
    gone_key, (ts_ms, lsn, partition, offset) = sorted(expected.deleted.items())[1]
    old_image = (ts_ms - 5, lsn, partition, offset)
    _remember(spark, tables, gone_key, old_image, {"title": "before the key change"})

    prune_tombstones(spark, tables, retention_hours=24)

    images = [(other_key, image), (gone_key, old_image)]
    assert {k: s for k, s in _tombstone_rows(settings) if (k, s) not in images} == {
        k: before[k] for k in expected.deleted
    }
    assert all(i in _tombstone_rows(settings) for i in images)
    assert len(_tombstone_rows(settings)) == len(expected.deleted) + 2, "one per key, and images"
    assert_table_equals_fold(settings, expected.rows)
    # with nothing left to forget but the images, a prune rewrites no file
    files = _tombstone_files(settings)
    prune_tombstones(spark, tables, retention_hours=24)
    assert _tombstone_files(settings) == files

    prune_tombstones(spark, tables, retention_hours=0)  # every delete is past retention now
    assert _tombstones(settings) == {}
    assert_table_equals_fold(settings, expected.rows)


def test_tombstone_append_adds_only_deletes_not_yet_remembered(
    spark: Any, pipeline: Settings
) -> None:
    """A replayed batch appends nothing; a newer delete of a remembered key is added."""
    from jobs.iceberg_tables import append_tombstones_sql

    settings = pipeline.replace(max_offsets_per_trigger=200)
    source = ArticleSource(seed=49, partitions=1)
    records = send(settings, source.random_history(400, 40, delete_share=0.3), 1)
    drain(spark, settings)
    deleted = fold(records).deleted
    assert deleted and _tombstones(settings) == deleted
    rows = _tombstone_rows(settings)
    tables = IcebergTables.declared(spark, settings)
    columns = ", ".join(SEQUENCE)

    # the same deletes again, as a batch replayed after a crash would bring them
    spark.sql(
        f"SELECT {ARTICLE_KEY}, {columns}, 'd' AS cdc_op FROM {tables.tombstones}"
    ).createOrReplaceTempView("replayed")
    spark.sql(append_tombstones_sql(tables.tombstones, "replayed", key=KEY))
    assert sorted(_tombstone_rows(settings)) == sorted(rows)

    # one key deleted again later, one older delete, one change that is no delete
    (newer_key, seq), (older_key, old_seq) = sorted(deleted.items())[:2]
    later = (seq[0] + 1, *seq[1:])
    earlier = (old_seq[0] - 1, *old_seq[1:])
    named = ", ".join(f"{v} AS {c}" for v, c in zip(later, SEQUENCE, strict=True))
    spark.sql(
        f"SELECT '{newer_key}' AS {ARTICLE_KEY}, {named}, 'd' AS cdc_op "
        f"UNION ALL SELECT '{older_key}', {', '.join(map(str, earlier))}, 'd' "
        f"UNION ALL SELECT 'art-new', 1, 1, 0, 0, 'c'"
    ).createOrReplaceTempView("more")
    spark.sql(append_tombstones_sql(tables.tombstones, "more", key=KEY))
    assert sorted(_tombstone_rows(settings)) == sorted([*rows, (newer_key, later)])
    assert _tombstones(settings) == {**deleted, newer_key: later}


def test_progress_is_carried_only_onto_the_snapshot_it_was_read_from(
    spark: Any, pipeline: Settings
) -> None:
    """The restamp before expiry can never move the table's position back."""
    from jobs.iceberg_maintenance import restamp_progress

    settings = pipeline.replace(max_offsets_per_trigger=100)
    records = send(settings, ArticleSource(seed=48, partitions=1).random_history(300, 40), 1)
    drain(spark, settings)
    tables = IcebergTables.declared(spark, settings)
    progress = tables.latest_pipeline_summary()
    assert progress is not None
    read_at = tables.current_snapshot_id()
    assert read_at is not None

    # another writer commits after the progress was read: the copy must not land
    tables.empty_commit({"writer": "someone else"})
    moved = tables.current_snapshot_id()
    assert not tables.commit_progress_after(read_at, {"cdc.offsets": '{"0": 1}'})
    assert tables.current_snapshot_id() == moved
    assert tables.committed_offsets() == {0: len(records)}
    refs = spark.sql(f"SELECT name FROM {tables.live}.refs").collect()
    assert [r[0] for r in refs] == ["main"], "the private branch is removed"

    # the current snapshot (the other writer's) lacks progress: the restamp adds it on top
    assert restamp_progress(tables)
    current = tables.java_table().currentSnapshot()
    assert int(current.parentId()) == moved
    assert (
        tables.snapshot_summary(int(current.snapshotId()))["cdc.offsets"]
        == (progress["cdc.offsets"])
    )
    assert not restamp_progress(tables), "nothing to do when the current snapshot has progress"
    assert_table_equals_fold(settings, fold(records).rows)


def test_a_long_drain_compacts_the_tombstone_table_and_forgets_no_delete(
    spark: Any, pipeline: Settings
) -> None:
    """Each batch with deletes appends a file per bucket; past the limit the drain compacts."""
    settings = pipeline.replace(
        max_offsets_per_trigger=60, iceberg_buckets=2, tombstone_compact_files=6
    )
    source = ArticleSource(seed=53, partitions=3)
    records = send(settings, source.random_history(500, 80, delete_share=0.3))

    result = drain(spark, settings)

    expected = fold(records)
    assert len(result.batches) >= 8, "small batches: many tombstone appends"
    loaded = catalog(settings).load_table(settings.tombstone_table)
    operations = [s.summary.operation.value for s in loaded.snapshots() if s.summary]
    compactions = [
        s for s in loaded.snapshots() if s.summary and s.summary.operation.value == "replace"
    ]
    assert len(compactions) >= 2, f"compacted more than once: {operations}"
    files = _tombstone_files(settings)
    assert len(files) <= 6 + 2, f"at most the limit plus one batch's append: {len(files)}"
    assert expected.deleted and _tombstones(settings) == expected.deleted
    assert_table_equals_fold(settings, expected.rows)
    # a compaction runs after the batch's commit, without the batch's snapshot properties
    assert all("cdc.pipeline-id" not in s.summary.additional_properties for s in compactions)
