"""Names and figures of the per-table metrics (their delivery: tests/integration/test_dags.py)."""

from __future__ import annotations

from cdc_airflow.metrics import drain_figures, stat_name


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
