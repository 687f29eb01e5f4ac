"""The oracle itself, on hand-written cases (so a wrong oracle cannot bless a wrong job)."""

from __future__ import annotations

import json

from reference_fold import PLACEHOLDER, Record, fold


def _event(op: str, key: str, ts: int, lsn: int, **row: object) -> bytes:
    image = {"article_id": key, **row}
    body = {
        "op": op,
        "before": image if op == "d" else None,
        "after": None if op == "d" else image,
        "source": {"ts_ms": ts, "lsn": lsn},
        "ts_ms": ts + 999,
    }
    return json.dumps({"schema": {}, "payload": body}).encode()


def test_newest_by_whole_sequence_wins() -> None:
    records = [
        Record(0, 0, None, _event("c", "a", 100, 10, title="one")),
        Record(0, 1, None, _event("u", "a", 200, 30, title="three")),
        Record(0, 2, None, _event("u", "a", 200, 20, title="two")),  # same ms, older lsn
    ]
    assert fold(records).rows["a"]["title"] == "three"


def test_delete_is_remembered_and_duplicates_are_no_ops() -> None:
    create = _event("c", "a", 100, 10, title="x")
    records = [
        Record(0, 0, None, create),
        Record(0, 1, None, _event("d", "a", 150, 15)),
        Record(0, 2, None, None),
        Record(0, 3, None, _event("u", "a", 120, 12, title="late")),
    ]
    result = fold(records)
    assert "a" not in result.rows
    assert result.deleted["a"][:2] == (150, 15)


def test_toast_placeholder_keeps_previous_value() -> None:
    records = [
        Record(0, 0, None, _event("c", "a", 1, 1, body="long text", title="t1")),
        Record(0, 1, None, _event("u", "a", 2, 2, body=PLACEHOLDER, title="t2")),
    ]
    row = fold(records).rows["a"]
    assert (row["body"], row["title"]) == ("long text", "t2")


def test_bad_records_are_dead() -> None:
    records = [
        Record(0, 0, None, b"nope"),
        Record(0, 1, None, _event("x", "a", 1, 1)),
        Record(0, 2, None, _event("c", "a", 1, 1, word_count="many")),
    ]
    assert set(fold(records).dead) == {(0, 0), (0, 1), (0, 2)}
