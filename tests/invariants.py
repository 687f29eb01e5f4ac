"""The invariants every fault scenario ends with, checked against the reference fold.

A scenario injects a fault (a killed driver, a corrupt checkpoint, a timeout,
lost offsets...), lets the pipeline recover, then calls::

    counts = check_invariants(settings, records)
    assert_rerun_changes_nothing(settings, lambda: run_job(settings))

``records`` are the raw Kafka records the scenario sent (as ``support.send``
returns them). The expected table comes from ``tests/reference_fold.py``, a
plain-Python fold that shares no code with the job; the table is read back
with pyiceberg, the consumer group with kafka-python.

* I1: the live table equals the fold of every record below the end offsets the
  table records;
* I2: no key appears twice in the live table, at any of its snapshots;
* I3: the offset ranges recorded in the snapshot summaries tile each partition
  from its first offset to the table's end, with no gap and no overlap (a
  recorded reset moves the position on purpose); when
  ``complete`` (the default), that end is the topic's end and the consumer
  group agrees;
* I4: no key's sequence ``(ts_ms, lsn, kafka_partition, kafka_offset)`` ever
  decreases from one snapshot of the live table to the next, and the snapshots
  that existed before the fault are still the start of the table's history;
* I5: events in = valid changes + dead-lettered + Kafka tombstones, over the
  committed batches; every record the fold rejects is in the dead-letter table
  exactly once, and nothing else is;
* I6 (:func:`assert_rerun_changes_nothing`): a rerun with no new data commits
  nothing to any table and moves no offset.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from reference_fold import Record, decode, fold
from support import assert_table_equals_fold, catalog

from cdc_iceberg import kafka_offsets
from cdc_iceberg.settings import Settings

SEQUENCE = ("ts_ms", "lsn", "kafka_partition", "kafka_offset")
INVARIANTS = {
    "I1": "table = reference fold of the committed records",
    "I2": "no duplicate key in the live table (any snapshot)",
    "I3": "committed offset ranges tile the topic, group agrees",
    "I4": "no key's sequence decreases across snapshots; history only appended",
    "I5": "events in = applied + dead-lettered, each dead letter once",
    "I6": "a rerun with no new data changes nothing",
}


# -- reading the tables back (pyiceberg, never the job's code) -------------------


def _ancestry(table: Any) -> list[Any]:
    """Snapshots of the table's current branch, oldest first."""
    by_id = {s.snapshot_id: s for s in table.snapshots()}
    chain = []
    current = table.current_snapshot()
    while current is not None:
        chain.append(current)
        parent = current.parent_snapshot_id
        current = by_id.get(parent) if parent is not None else None
    return list(reversed(chain))


def _load(settings: Settings, name: str) -> Any | None:
    cat = catalog(settings)
    return cat.load_table(name) if cat.table_exists(name) else None


def snapshot_ids(settings: Settings, table: str | None = None) -> list[int]:
    """Snapshot ids of a table's current branch, oldest first ([] if it does not exist)."""
    loaded = _load(settings, table or settings.iceberg_table)
    return [int(s.snapshot_id) for s in _ancestry(loaded)] if loaded is not None else []


def _pipeline_summaries(settings: Settings) -> list[dict[str, str]]:
    loaded = _load(settings, settings.iceberg_table)
    if loaded is None:
        return []
    out = []
    for snapshot in _ancestry(loaded):
        summary = dict(snapshot.summary.additional_properties) if snapshot.summary else {}
        if summary.get("cdc.pipeline-id") == settings.pipeline_id:
            out.append(summary)
    return out


def table_end_offsets(settings: Settings) -> dict[int, int]:
    """End offsets the newest commit of this pipeline records ({} before any commit)."""
    for summary in reversed(_pipeline_summaries(settings)):
        if "cdc.offsets" in summary:
            return {int(p): int(o) for p, o in json.loads(summary["cdc.offsets"]).items()}
    return {}


def pipeline_state(settings: Settings) -> dict[str, Any]:
    """What a rerun must leave alone: current snapshots of the three tables, group offsets."""
    state: dict[str, Any] = {}
    for name in (settings.iceberg_table, settings.iceberg_dlq_table, settings.tombstone_table):
        loaded = _load(settings, name)
        current = loaded.current_snapshot() if loaded is not None else None
        state[name] = int(current.snapshot_id) if current is not None else None
    state["group"] = dict(kafka_offsets.committed_offsets(settings))
    state["table_offsets"] = table_end_offsets(settings)
    return state


# -- the invariants ------------------------------------------------------------


def _tile(
    settings: Settings, records: Iterable[Record], end: dict[int, int], begin: dict[int, int]
) -> tuple[list[Record], list[Record], int]:
    """I3 over the pipeline's commits, oldest first; returns what the table holds.

    Each batch's range must start where the previous one of its partition
    ended (no gap, no overlap) and be non-empty; a reset commit (a position
    without a batch range) moves the position on purpose, and a full rebuild
    also empties the table. Returns (records applied since the last rebuild,
    each once; the same with a replayed record once per batch that read it;
    the number of batches).
    """
    by_offset = {(r.partition, r.offset): r for r in records}
    position = dict(begin)
    applied: list[Record] = []
    batches = 0
    for summary in _pipeline_summaries(settings):
        if "cdc.batch-range" not in summary:
            if "cdc.offsets" in summary:  # a reset: the operator moved the position
                moved = {int(p): int(o) for p, o in json.loads(summary["cdc.offsets"]).items()}
                position.update(moved)
                if summary.get("cdc.batch-id") == "reset-full-rebuild":
                    applied = []
            continue
        batches += 1
        for partition, (start, stop) in sorted(
            (int(p), (int(r[0]), int(r[1])))
            for p, r in json.loads(summary["cdc.batch-range"]).items()
        ):
            expected_start = position.get(partition, 0)
            assert start == expected_start, (
                f"I3: batch {summary.get('cdc.batch-id')} reads partition {partition} from "
                f"{start}, the previous commit ended at {expected_start} "
                f"({'gap' if start > expected_start else 'overlap'})"
            )
            assert start < stop, f"I3: empty range {start}..{stop} on partition {partition}"
            applied += [
                by_offset[(partition, o)] for o in range(start, stop) if (partition, o) in by_offset
            ]
            position[partition] = stop
    for partition, last in end.items():
        assert position.get(partition, 0) == last, (
            f"I3: ranges of partition {partition} reach {position.get(partition, 0)}, "
            f"the table records {last}"
        )
    unique = list({(r.partition, r.offset): r for r in applied}.values())
    return unique, applied, batches


def _check_history(settings: Settings, snapshots_before: Sequence[Any] | None) -> int:
    """I2 and I4 over every snapshot of the live table; returns the number of snapshots."""
    loaded = _load(settings, settings.iceberg_table)
    assert loaded is not None, f"table {settings.iceberg_table} does not exist"
    chain = _ancestry(loaded)
    ids = [int(s.snapshot_id) for s in chain]
    if snapshots_before:
        before = [
            int(s["snapshot_id"]) if isinstance(s, dict) else int(s) for s in snapshots_before
        ]
        # maintenance may expire the oldest snapshots; the rest must still lead the history
        existing = {int(s.snapshot_id) for s in loaded.snapshots()}
        kept = [i for i in before if i in existing]
        assert kept == before[len(before) - len(kept) :], (
            f"I4: snapshots committed before the fault were removed out of order: {before}"
        )
        assert ids[: len(kept)] == kept, (
            f"I4: snapshots committed before the fault are no longer the table's history "
            f"(before {kept[-3:]}, now starts {ids[: len(kept)][-3:]})"
        )
    highest: dict[str, tuple[int, ...]] = {}
    for snapshot in chain:
        summary = dict(snapshot.summary.additional_properties) if snapshot.summary else {}
        if summary.get("cdc.batch-id") == "reset-full-rebuild":
            highest = {}  # an operator's rebuild starts the table again on purpose
        rows = (
            loaded.scan(snapshot_id=snapshot.snapshot_id, selected_fields=("article_id", *SEQUENCE))
            .to_arrow()
            .to_pylist()
        )
        seen: set[str] = set()
        for row in rows:
            key = row["article_id"]
            assert key not in seen, f"I2: key {key!r} twice in snapshot {snapshot.snapshot_id}"
            seen.add(key)
            seq = tuple(row[c] for c in SEQUENCE)
            previous = highest.get(key)
            assert previous is None or seq >= previous, (
                f"I4: key {key!r} went back from {previous} to {seq} "
                f"at snapshot {snapshot.snapshot_id}"
            )
            highest[key] = seq
    return len(chain)


def check_invariants(
    settings: Settings,
    records: Sequence[Record],
    snapshots_before: Sequence[Any] | None = None,
    *,
    complete: bool = True,
    begin: dict[int, int] | None = None,
    event_format: str = "envelope",
) -> dict[str, Any]:
    """Assert I1-I5 for the pipeline of ``settings``; return counts for the report.

    ``records``: every record the scenario sent to the topic. ``snapshots_before``:
    snapshot ids of the live table (``snapshot_ids(settings)``) taken before the
    fault; they must still be the start of its history. ``complete``: the
    pipeline has drained the whole topic (I3 then reaches the topic's end and
    the group's offsets). ``begin``: the offset per partition the pipeline's
    first batch starts from, 0 by default (a fresh topic). A reset the
    pipeline recorded (cdc_reset) moves the expected position on purpose.
    """
    begin = dict(begin or {})
    end = table_end_offsets(settings)
    assert end, "the table records no committed offsets for this pipeline"

    # I3: contiguous, non-overlapping ranges from the first offset to the end
    if complete:
        topic_end = kafka_offsets.end_offsets(settings)
        assert end == topic_end, f"I3: table ends at {end}, topic ends at {topic_end}"
        group = kafka_offsets.committed_offsets(settings)
        assert group == end, f"I3: consumer group at {group}, table at {end}"
    covered, read, batches = _tile(settings, records, end, begin)

    # I1: the table equals the fold of what it covers
    expected = fold(covered, event_format)
    assert_table_equals_fold(settings, expected.rows)

    # I2 + I4: every snapshot, no duplicate key, no sequence going back
    snapshot_count = _check_history(settings, snapshots_before)

    # I5: every event accounted for, exactly once
    totals = {"events_in": 0, "dead_lettered": 0, "kafka_tombstones": 0}
    for summary in _pipeline_summaries(settings):
        if "cdc.batch-range" not in summary or "cdc.metrics" not in summary:
            continue
        metrics = json.loads(summary["cdc.metrics"])
        for key in totals:
            totals[key] += int(metrics.get(key) or 0)
    tombstones = sum(1 for r in read if r.value is None)
    kinds = [decode(r, event_format)[0] for r in read]
    valid, dead = kinds.count("ok"), kinds.count("dead")
    assert totals["events_in"] == len(read), (
        f"I5: batches report {totals['events_in']} events in, {len(read)} records committed"
    )
    assert totals["kafka_tombstones"] == tombstones, (
        f"I5: batches report {totals['kafka_tombstones']} Kafka tombstones, fold {tombstones}"
    )
    assert totals["dead_lettered"] == dead, (
        f"I5: batches report {totals['dead_lettered']} dead letters, fold {dead}"
    )
    assert totals["events_in"] == valid + totals["dead_lettered"] + tombstones, "I5: events lost"
    dlq = _load(settings, settings.iceberg_dlq_table)
    letters = dlq.scan().to_arrow().to_pylist() if dlq is not None else []
    coordinates = [
        (int(d["kafka_partition"]), int(d["kafka_offset"]))
        for d in letters
        if d["pipeline_id"] == settings.pipeline_id
    ]
    doubled = sorted({c for c in coordinates if coordinates.count(c) > 1})
    assert not doubled, f"I5: dead-lettered more than once: {doubled[:5]}"
    missing = sorted(set(expected.dead) - set(coordinates))
    extra = sorted(set(coordinates) - set(expected.dead))
    assert not missing and not extra, (
        f"I5: dead letters missing {missing[:5]}, unexpected {extra[:5]}"
    )
    assert all(d["reason"] for d in letters), "I5: a dead letter without a reason"

    return {
        "records": len(records),
        "committed_records": len(covered),
        "applied": expected.applied,
        "dead": len(expected.dead),
        "kafka_tombstones": tombstones,
        "snapshots": snapshot_count,
        "batches": batches,
        "keys": len(expected.rows),
    }


def assert_rerun_changes_nothing(settings: Settings, run: Callable[[], Any]) -> dict[str, Any]:
    """I6: ``run()`` (a drain with no new data) commits nothing and moves no offset.

    ``run`` may return a ``subprocess.CompletedProcess`` (its exit code must be
    0) or anything else (ignored). Returns the unchanged state.
    """
    before = pipeline_state(settings)
    outcome = run()
    returncode = getattr(outcome, "returncode", 0)
    if returncode != 0:
        from harness import describe

        raise AssertionError(f"I6: the rerun failed: {describe(outcome)}")
    after = pipeline_state(settings)
    assert after == before, f"I6: a rerun with no new data changed {before} into {after}"
    return after


def checkpoint_listing(location: str) -> list[str]:
    """Files of a local checkpoint, relative, sorted (for messages and reports)."""
    root = Path(location)
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
