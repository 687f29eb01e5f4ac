"""How many Spark tasks read a micro-batch (pure arithmetic, no Kafka)."""

from __future__ import annotations

import pytest

from cdc_iceberg.kafka_offsets import read_tasks


@pytest.mark.parametrize(
    ("partitions", "cores", "tasks"),
    [
        (1, 2, 2),  # Debezium's one-partition topic is parsed on every core
        (1, 8, 8),
        (3, 2, 6),  # three waves of two tasks, not a third task alone
        (3, 8, 24),
        (2, 2, None),  # already a multiple of the cores: one task per partition
        (12, 4, None),
        (8, 2, None),
        (7, 8, None),  # 56 tasks would be too many small ones
        (3, 1, None),  # one core: nothing to balance
        (0, 4, None),
    ],
)
def test_automatic_split_makes_the_tasks_a_multiple_of_the_cores(
    partitions: int, cores: int, tasks: int | None
) -> None:
    assert read_tasks(partitions, cores) == tasks


def test_a_configured_count_is_used_as_it_is() -> None:
    assert read_tasks(3, 2, configured=5) == 5
    assert read_tasks(12, 4, configured=24) == 24
