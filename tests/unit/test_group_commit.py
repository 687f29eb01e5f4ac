"""Committing group offsets while the group's coordinator moves (a broker died)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from kafka.errors import GroupAuthorizationFailedError, NoError, NotCoordinatorError

from cdc_iceberg import kafka_offsets
from cdc_iceberg.settings import Settings


class Coordinator:
    """Answers alter_group_offsets with the per-partition errors it is given, in turn."""

    def __init__(self, *answers: type[Exception]) -> None:
        self.answers = list(answers)
        self.calls: list[dict[Any, Any]] = []

    def alter_group_offsets(self, group: str, offsets: dict[Any, Any]) -> dict[Any, Any]:
        self.calls.append(offsets)
        error = self.answers.pop(0)
        return dict.fromkeys(offsets, error)


def _served_by(monkeypatch: pytest.MonkeyPatch, coordinator: Coordinator) -> None:
    @contextlib.contextmanager
    def admin(settings: Settings) -> Iterator[Coordinator]:
        yield coordinator

    monkeypatch.setattr(kafka_offsets, "admin", admin)
    monkeypatch.setattr(kafka_offsets.time, "sleep", lambda seconds: None)


def test_a_moved_coordinator_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    coordinator = Coordinator(NotCoordinatorError, NotCoordinatorError, NoError)
    _served_by(monkeypatch, coordinator)
    kafka_offsets.commit_group_offsets(Settings(kafka_topic="t.public.a"), {0: 5, 1: 7})
    assert len(coordinator.calls) == 3
    assert sorted((tp.partition, om.offset) for tp, om in coordinator.calls[-1].items()) == [
        (0, 5),
        (1, 7),
    ]


def test_an_error_asking_again_cannot_mend_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    coordinator = Coordinator(GroupAuthorizationFailedError)
    _served_by(monkeypatch, coordinator)
    with pytest.raises(RuntimeError, match="committing offsets to group 'g' failed"):
        kafka_offsets.commit_group_offsets(Settings(kafka_topic="t.public.a"), {0: 5}, "g")
    assert len(coordinator.calls) == 1
