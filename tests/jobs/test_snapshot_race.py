"""A change committed while Debezium's initial snapshot runs wins over the snapshot read.

The records below are the shape Debezium 3 writes for that race (taken from a
real capture): the slot exports its snapshot at LSN ``S``; ``race-1`` is
updated and ``race-2`` deleted right after, before the delayed snapshot reads
them. The snapshot still shows them as they were before ``S`` but stamps the
reads with LSN ``S`` and its own, later, ``ts_ms``; the update streams with
the same LSN ``S`` and an earlier ``ts_ms``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from articles import ARTICLE_COLUMNS, KEY
from reference_fold import Record, fold

from cdc_iceberg.schema import SEQUENCE_ORDERS

pytestmark = pytest.mark.integration  # needs the Spark jars on a real local session

RAW_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset bigint, "
    "timestamp timestamp, timestampType int"
)
S = 30713368
READ_MS = 1795796455089  # when the snapshot read the rows
COMMIT_MS = 1795796445041  # when the racing transaction committed


def _event(op: str, key: str, title: str | None, ts_ms: int, lsn: int, snapshot: str) -> bytes:
    image = {"article_id": key, "title": title}
    return json.dumps(
        {
            "op": op,
            "before": image if op == "d" else None,
            "after": None if op == "d" else image,
            "source": {"ts_ms": ts_ms, "lsn": lsn, "snapshot": snapshot},
        }
    ).encode()


RACE = [
    _event("r", "race-1", "before 1", READ_MS, S, "first"),
    _event("r", "race-2", "before 2", READ_MS, S, "true"),
    _event("r", "race-3", "before 3", READ_MS, S, "last"),
    _event("u", "race-1", "changed while the snapshot waited", COMMIT_MS, S, "false"),
    _event("d", "race-2", "before 2", COMMIT_MS + 1, S + 248, "false"),
    # an incremental snapshot's read already includes what streamed before it
    _event("u", "inc-1", "streamed", COMMIT_MS + 2, S + 400, "false"),
    _event("r", "inc-1", "read after the stream", READ_MS + 10, S + 400, "incremental"),
]


def _raw(spark: Any) -> Any:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [(None, value, "t", 0, offset, moment, 0) for offset, value in enumerate(RACE)]
    return spark.createDataFrame(rows, RAW_SCHEMA)


def test_a_blocking_snapshot_read_is_ordered_just_before_its_lsn(spark: Any) -> None:
    from jobs.transforms import parse_events

    lsns = {
        (r._op, r.article_id): r.lsn for r in parse_events(_raw(spark), "envelope", KEY).collect()
    }

    assert lsns[("r", "race-1")] == S - 1
    assert lsns[("u", "race-1")] == S
    assert lsns[("r", "inc-1")] == S + 400, "an incremental read keeps its LSN"


def test_the_racing_change_wins_over_the_snapshot_read_in_lsn_order(spark: Any) -> None:
    """Under ``CDC_SEQUENCE=ts_ms`` the read's later ``ts_ms`` still wins: see the README."""
    from jobs.transforms import collapse_newest, parse_events, type_columns

    columns = [(n, t) for n, t in ARTICLE_COLUMNS if n in ("article_id", "title")]
    # materialized, as the job's typed batch is (persisted)
    typed = type_columns(parse_events(_raw(spark), "envelope", KEY), columns, KEY).localCheckpoint()
    typed = typed.where("_problem IS NULL")
    newest = collapse_newest(typed, [n for n, _ in columns], SEQUENCE_ORDERS["lsn"], key=KEY)
    got = {r.article_id: (r.cdc_op, r.title) for r in newest.collect()}

    assert got["race-1"] == ("u", "changed while the snapshot waited")
    assert got["race-2"][0] == "d"
    assert got["race-3"] == ("r", "before 3")
    assert got["inc-1"] == ("r", "read after the stream")

    # the oracle applies the same rule
    folded = fold([Record(0, o, None, v) for o, v in enumerate(RACE)], order="lsn")
    assert {k: row["title"] for k, row in folded.rows.items()} == {
        "race-1": "changed while the snapshot waited",
        "race-3": "before 3",
        "inc-1": "read after the stream",
    }
