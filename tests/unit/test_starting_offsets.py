"""Where a drain starts: the table's offsets, else STARTING_OFFSETS (pure, no Kafka)."""

from __future__ import annotations

import json

import pytest

from cdc_iceberg.settings import Settings
from jobs.cdc_to_iceberg import resolve_starting_offsets

TOPIC = "neuronews.public.articles"


def _start(starting_offsets: str, table: dict[int, int]) -> dict[str, int]:
    settings = Settings(kafka_topic=TOPIC, starting_offsets=starting_offsets)
    return dict(json.loads(resolve_starting_offsets(settings, table, [0, 1, 2]))[TOPIC])


@pytest.mark.parametrize(
    ("starting_offsets", "expected"),
    [
        ("earliest", {"0": -2, "1": -2, "2": -2}),  # Spark's -2: the first retained record
        ("latest", {"0": -1, "1": -1, "2": -1}),  # -1: the end of the topic
        (" Latest ", {"0": -1, "1": -1, "2": -1}),
        # Spark's offsets JSON: the partitions it names; the others from the beginning
        (json.dumps({TOPIC: {"0": 7, "2": 3}}), {"0": 7, "1": -2, "2": 3}),
    ],
)
def test_a_new_table_starts_where_starting_offsets_says(
    starting_offsets: str, expected: dict[str, int]
) -> None:
    assert _start(starting_offsets, {}) == expected


@pytest.mark.parametrize("starting_offsets", ["earliest", "latest", json.dumps({TOPIC: {"0": 1}})])
def test_the_offsets_the_table_records_win_over_starting_offsets(starting_offsets: str) -> None:
    # partition 2 is new to the table (the topic grew): only there STARTING_OFFSETS applies
    start = _start(starting_offsets, {0: 40, 1: 12})
    assert (start["0"], start["1"]) == (40, 12)
    assert start["2"] == (-1 if starting_offsets == "latest" else -2)


def test_an_unknown_starting_point_is_named() -> None:
    with pytest.raises(ValueError, match="STARTING_OFFSETS='newest': expected earliest, latest"):
        _start("newest", {})
