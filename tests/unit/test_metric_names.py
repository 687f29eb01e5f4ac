"""Names and figures of the per-table metrics (their delivery: tests/integration/test_dags.py)."""

from __future__ import annotations

from cdc_airflow.metrics import drain_figures, events_per_s, stat_name


def test_names_carry_the_table() -> None:
    assert stat_name("neuronews.order_lines", "lag") == "cdc_iceberg.neuronews.order_lines.lag"


def test_a_drain_adds_up_its_batches() -> None:
    batches = [
        {"events_in": 10, "inserted": 6, "updated": 3, "deleted": 1, "stale": 0},
        {"events_in": 5, "inserted": 1, "dead_lettered": 2, "stale": None},
    ]
    assert drain_figures(batches) == {
        "batches": 2,
        "events_in": 15,
        "inserted": 7,
        "updated": 3,
        "deleted": 1,
        "stale": 0,
        "dead_lettered": 2,
    }
    assert drain_figures([])["batches"] == 0


def test_the_processing_rate_is_events_over_the_batches_time() -> None:
    batches = [{"events_in": 300, "duration_s": 2.0}, {"events_in": 100, "duration_s": 3.0}]
    assert events_per_s(batches) == 80.0
    assert events_per_s([{"events_in": 5, "duration_s": 0}]) is None  # no time measured
    assert events_per_s([]) is None
