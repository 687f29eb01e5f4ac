"""The statistics of the benchmarks: percentiles (bench/common.py), and the freshness
benchmark's (bench/freshness.py) lag of each row from snapshot and commit times, the lag
over time, and when a lag is bounded."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.common import percentile
from bench.freshness import (
    boundedness,
    first_visible,
    lag_summary,
    row_lags,
    sweep_verdict,
    timeline,
)


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 50) == 2
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([1, 2, 3, 4], 51) == 3
    assert percentile([], 50) is None


def test_lag_summary() -> None:
    summary = lag_summary([0.5, 1.5, 2.5, 10.0])
    assert summary == {"rows": 4, "p50_s": 1.5, "p95_s": 10.0, "p99_s": 10.0, "max_s": 10.0}
    assert lag_summary([]) == {
        "rows": 0,
        "p50_s": None,
        "p95_s": None,
        "p99_s": None,
        "max_s": None,
    }


def test_first_visible_takes_the_earliest_snapshot_holding_each_key() -> None:
    snapshots = [
        (3_000, ["a", "b", "c"]),  # out of order on purpose
        (1_000, ["a"]),
        (2_000, ["a", "b"]),
        (4_000, ["b", "c"]),  # a deleted: its first visibility stays
    ]
    assert first_visible(snapshots) == {"a": 1_000, "b": 2_000, "c": 3_000}


def test_row_lags_from_commit_and_snapshot_times() -> None:
    commits = {"a": 900, "b": 1_500, "c": 2_950, "gone": 1_000}
    visible = first_visible([(1_000, ["a"]), (3_000, ["a", "b", "c"])])
    points, unseen = row_lags(commits, visible)
    assert points == [(900, 0.1), (1_500, 1.5), (2_950, pytest.approx(0.05))]
    assert unseen == 1  # inserted and deleted before any snapshot held it


def test_timeline_buckets_by_commit_time() -> None:
    start = 10_000
    points = [(start + 1_000, 1.0), (start + 9_000, 3.0), (start + 12_000, 8.0)]
    out = timeline(points, start, bucket_s=10)
    assert [(b["from_s"], b["rows"], b["max_s"]) for b in out] == [(0.0, 2, 3.0), (10.0, 1, 8.0)]


def _steady(start: int, end: int, lag_of: Callable[[float], float]) -> list[tuple[int, float]]:
    """One row every 100 ms from start to end, its lag from ``lag_of(t_s)``."""
    return [(t, lag_of((t - start) / 1000.0)) for t in range(start, end, 100)]


def test_a_steady_sawtooth_lag_is_bounded() -> None:
    # drains every 5 s taking 3 s: the lag cycles between 3 and 8 s
    points = _steady(0, 60_000, lambda t: 3 + (5 - t % 5))
    verdict = boundedness(points, 0, 60_000, 5.0, 100, 99)
    assert verdict["bounded"], verdict["reasons"]
    assert verdict["p95_first_third_s"] == verdict["p95_last_third_s"]


def test_a_growing_lag_is_not_bounded() -> None:
    # the backlog grows: each second of the run adds half a second of lag
    points = _steady(0, 60_000, lambda t: 4 + 0.5 * t)
    verdict = boundedness(points, 0, 60_000, 5.0, 100, 100)
    assert not verdict["bounded"]
    assert verdict["writer_kept_up"]
    assert "grew" in verdict["reasons"][0]


def test_growth_within_the_allowance_is_bounded() -> None:
    # p95 goes from 10 to 14.9: within max(interval 5, 0.5 x 10) = 5
    first = [(t, 10.0) for t in range(0, 20_000, 100)]
    last = [(t, 14.9) for t in range(40_000, 60_000, 100)]
    assert boundedness(first + last, 0, 60_000, 5.0, 100, 100)["bounded"]
    later = [(t, 15.1) for t in range(40_000, 60_000, 100)]
    assert not boundedness(first + later, 0, 60_000, 5.0, 100, 100)["bounded"]
    # a long early lag allows more: 0.5 x 30 = 15 > the interval
    early = [(t, 30.0) for t in range(0, 20_000, 100)]
    late = [(t, 44.0) for t in range(40_000, 60_000, 100)]
    assert boundedness(early + late, 0, 60_000, 5.0, 100, 100)["allowance_s"] == 15.0
    assert boundedness(early + late, 0, 60_000, 5.0, 100, 100)["bounded"]


def test_a_writer_that_cannot_keep_up_is_not_bounded() -> None:
    points = _steady(0, 60_000, lambda t: 2.0)
    verdict = boundedness(points, 0, 60_000, 5.0, 4000, 3000)
    assert not verdict["bounded"] and not verdict["writer_kept_up"]
    assert boundedness(points, 0, 60_000, 5.0, 4000, 3600)["bounded"]  # 90 % is enough


def test_no_rows_is_not_bounded() -> None:
    verdict = boundedness([], 0, 60_000, 5.0, 100, 100)
    assert not verdict["bounded"]


def test_sweep_verdict_names_the_first_unbounded_rate() -> None:
    def result(rate: int, bounded: bool) -> dict[str, object]:
        return {"rate": rate, "bounded": {"bounded": bounded}}

    assert sweep_verdict([result(100, True), result(500, True), result(1500, False)]) == {
        "first_unbounded_rate": 1500,
        "last_bounded_rate": 500,
    }
    assert sweep_verdict([result(100, True), result(500, True)]) == {
        "first_unbounded_rate": None,
        "last_bounded_rate": 500,
    }
    assert sweep_verdict([result(100, False)]) == {
        "first_unbounded_rate": 100,
        "last_bounded_rate": None,
    }
