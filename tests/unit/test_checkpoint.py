"""One writer per checkpoint, and re-planning a batch Spark planned but never committed."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.checkpoint import CheckpointInUseError, CheckpointLock, set_aside_uncommitted_batch


def test_second_drain_on_one_checkpoint_is_refused(tmp_path: Path) -> None:
    checkpoint = str(tmp_path / "ckpt")
    with (
        CheckpointLock(checkpoint),
        pytest.raises(CheckpointInUseError, match="refusing to start"),
    ):
        CheckpointLock(checkpoint).__enter__()
    with CheckpointLock(checkpoint):  # released: the next run may start
        pass


def test_uncommitted_batch_is_set_aside_not_deleted(tmp_path: Path) -> None:
    offsets, commits = tmp_path / "offsets", tmp_path / "commits"
    offsets.mkdir()
    commits.mkdir()
    for batch in ("0", "1", "2"):
        (offsets / batch).write_text("v1\n{}\n{}\n")
        (offsets / f".{batch}.crc").write_bytes(b"crc")
    for batch in ("0", "1"):
        (commits / batch).write_text("v1\n{}\n")

    moved = set_aside_uncommitted_batch(str(tmp_path))

    assert moved == ["2"]
    assert sorted(p.name for p in offsets.iterdir() if p.name.isdigit()) == ["0", "1"]
    kept = [p.name for p in offsets.iterdir() if p.name.startswith(".2.uncommitted-")]
    assert len(kept) == 1
    assert not (offsets / ".2.crc").exists()
    assert set_aside_uncommitted_batch(str(tmp_path)) == []
