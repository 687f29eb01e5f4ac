"""Statements that lose a commit race are planned again; other errors are not retried."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.iceberg_tables import sql_retrying


class _Session:
    """Stands in for a SparkSession: fails the first ``failures`` statements with ``error``."""

    def __init__(self, failures: int, error: str) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def sql(self, statement: str) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(self.error)
        return self

    def collect(self) -> list[int]:
        return [self.calls]


def test_a_lost_commit_race_is_retried() -> None:
    session = _Session(
        2, "org.apache.iceberg.exceptions.ValidationException: Found conflicting files"
    )
    assert sql_retrying(session, "MERGE …", retries=3) == [3]  # type: ignore[arg-type]


def test_other_errors_and_exhausted_retries_raise() -> None:
    with pytest.raises(RuntimeError, match="No space left"):
        sql_retrying(_Session(1, "No space left on device"), "MERGE …")  # type: ignore[arg-type]
    session = _Session(5, "CommitFailedException: race")
    with pytest.raises(RuntimeError, match="CommitFailed"):
        sql_retrying(session, "MERGE …", retries=1)  # type: ignore[arg-type]
    assert session.calls == 2
