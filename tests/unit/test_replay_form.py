"""The dead-letter replay form: what reaches the replay job, and what is refused."""

from __future__ import annotations

import pytest
from cdc_airflow.replay_form import ReplayFormError, replay_args


def test_an_empty_form_is_a_dry_run_of_every_pending_dead_letter() -> None:
    assert replay_args({}, "manual__2026-12-04T18:00:00+00:00") == [
        "--replay-id",
        "manual__2026-12-04T18_00_00_00_00",
    ]
    # templates render empty fields as "None"
    assert replay_args({"reason": "None", "partition": "None", "dry_run": "True"}, "r") == [
        "--replay-id",
        "r",
    ]


def test_every_filter_reaches_the_job_checked() -> None:
    args = replay_args(
        {
            "reason": "does not fit",
            "partition": 2,
            "from_offset": "10",
            "to_offset": 20,
            "from_time": "2026-01-01T00:00:00Z",
            "to_time": "2026-02-01T00:00:00+01:00",
            "dry_run": False,
            "ignore_retention": "true",
        },
        "run",
    )
    assert args == [
        "--reason",
        "does not fit",
        "--partition",
        "2",
        "--from-offset",
        "10",
        "--to-offset",
        "20",
        "--from-time",
        "2026-01-01T00:00:00+00:00",
        "--to-time",
        "2026-02-01T00:00:00+01:00",
        "--apply",
        "--ignore-retention",
        "--replay-id",
        "run",
    ]


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"partition": -1}, "partition"),
        ({"partition": "1; rm -rf /"}, "partition"),
        ({"partition": True}, "partition"),
        ({"partition": 2**31}, "partition"),
        ({"from_offset": 5}, "give the partition"),
        ({"partition": 0, "from_offset": 9, "to_offset": 9}, "not after"),
        ({"from_time": "yesterday"}, "ISO-8601"),
        ({"to_time": "2026-01-01T00:00:00"}, "time zone"),
        ({"reason": "x" * 201}, "at most 200"),
        ({"reason": "line\nbreak"}, "printable"),
        ({"dry_run": "maybe"}, "neither true nor false"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(form: dict, message: str) -> None:
    with pytest.raises(ReplayFormError, match=message):
        replay_args(form, "run")
