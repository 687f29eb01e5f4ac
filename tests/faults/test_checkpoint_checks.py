"""Which local checkpoints Spark could not restart from (fast: files only, no Spark).

The scenarios in ``test_fault_corrupt_checkpoint.py`` run the same damage
through the real job.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from cdc_iceberg.checkpoint_log import checkpoint_exists, checkpoint_offsets, checkpoint_problem
from jobs.checkpoint import set_aside_corrupt_checkpoint

TOPIC = "neuronews.public.articles"


def _write(path: Path, text: str) -> None:
    """A log entry with the checksum file Hadoop's local file system writes beside it."""
    data = text.encode()
    path.write_bytes(data)
    sums = b"".join(
        zlib.crc32(data[i : i + 512]).to_bytes(4, "big") for i in range(0, len(data), 512)
    )
    path.with_name(f".{path.name}.crc").write_bytes(b"crc\x00" + (512).to_bytes(4, "big") + sums)


def _offsets(batch: int) -> str:
    return f'v1\n{{"batchWatermarkMs":0}}\n{json.dumps({TOPIC: {"0": 10 * batch, "1": batch}})}'


def make_checkpoint(root: Path, batches: int = 4, planned: bool = False) -> Path:
    (root / "offsets").mkdir(parents=True)
    (root / "commits").mkdir()
    (root / "metadata").write_text('{"id":"6e742dfb-ced7-4fce-b956-203f5fd3d244"}')
    for batch in range(batches):
        _write(root / "offsets" / str(batch), _offsets(batch))
        _write(root / "commits" / str(batch), 'v1\n{"nextBatchWatermarkMs":0}')
    if planned:
        _write(root / "offsets" / str(batches), _offsets(batches))
    return root


def test_a_healthy_checkpoint_is_kept(tmp_path: Path) -> None:
    root = make_checkpoint(tmp_path / "ckpt", planned=True)
    assert checkpoint_problem(str(root)) is None
    assert checkpoint_exists(str(root))
    assert checkpoint_offsets(str(root), TOPIC) == {0: 40, 1: 4}


def test_stray_temp_files_are_ignored(tmp_path: Path) -> None:
    root = make_checkpoint(tmp_path / "ckpt")
    (root / "offsets" / ".4.0d1e2f.tmp").write_bytes(b"v1\n{")
    (root / "offsets" / ".4.0d1e2f.tmp.crc").write_bytes(b"crc")
    (root / "commits" / ".4.abc.tmp").write_bytes(b"")
    (root / ".metadata.9f.tmp").write_bytes(b"{")
    (root / "offsets" / "tmp").write_bytes(b"\xff")
    assert checkpoint_problem(str(root)) is None


def _truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda r: _truncate(r / "offsets" / "3"), "checksum"),
        (
            lambda r: (_truncate(r / "offsets" / "3"), (r / "offsets" / ".3.crc").unlink()),
            "truncated",
        ),
        (lambda r: _write(r / "offsets" / "3", "v1\n{}\n"), "truncated"),
        (lambda r: _write(r / "offsets" / "3", ""), "truncated"),
        (lambda r: (r / "offsets" / "3").write_bytes(b"\x00\x81garbage"), "checksum"),
        (
            lambda r: (
                (r / "offsets" / "3").write_bytes(b"\x00\x81garbage"),
                (r / "offsets" / ".3.crc").unlink(),
            ),
            "unreadable",
        ),
        (lambda r: (r / "offsets" / "1").unlink(), "misses batch 1"),
        (lambda r: (r / "offsets" / "3").unlink(), "commits/3 has no offsets/3"),
        (lambda r: (r / "commits" / "1").unlink(), "commits/ misses batch 1"),
        (lambda r: _write(r / "commits" / "3", "v1"), "truncated"),
        (lambda r: (r / "metadata").write_text('{"id":"6e74'), "metadata"),
    ],
    ids=[
        "truncated-offsets",
        "truncated-offsets-no-crc",
        "offsets-without-offsets-line",
        "empty-offsets",
        "binary-offsets",
        "binary-offsets-no-crc",
        "missing-middle-offsets",
        "missing-latest-offsets",
        "missing-middle-commit",
        "truncated-commit",
        "truncated-metadata",
    ],
)
def test_damage_is_found_and_set_aside(tmp_path: Path, damage: object, expected: str) -> None:
    root = make_checkpoint(tmp_path / "ckpt")
    damage(root)  # type: ignore[operator]
    problem = checkpoint_problem(str(root))
    assert problem is not None and expected in problem, problem

    assert set_aside_corrupt_checkpoint(str(root)) is not None
    assert not checkpoint_exists(str(root)), "the drain must resume from the table"
    assert not root.exists()
    kept = [p.name for p in tmp_path.iterdir() if p.name.startswith("ckpt.corrupt-")]
    assert len(kept) == 1, "set aside, never deleted"


def test_an_unfinished_last_batch_is_left_to_replanning(tmp_path: Path) -> None:
    """A batch planned but not committed may be torn: set_aside_uncommitted_batch handles it."""
    root = make_checkpoint(tmp_path / "ckpt")
    _write(root / "offsets" / "4", "v1\n{")
    assert checkpoint_problem(str(root)) is None
    assert set_aside_corrupt_checkpoint(str(root)) is None


@pytest.mark.parametrize(
    "leftover",
    ["offsets/0", "offsets/.0.1f0e.tmp", "commits/.0.82ca.tmp", "state/0/0/1.delta"],
)
def test_leftovers_before_the_first_commit_are_set_aside(tmp_path: Path, leftover: str) -> None:
    """Killed before batch 0 committed: Spark would start afresh and refuse these files."""
    root = tmp_path / "ckpt"
    for name in ("offsets", "commits", "sources/0"):
        (root / name).mkdir(parents=True)
    (root / "metadata").write_text('{"id":"6e742dfb-ced7-4fce-b956-203f5fd3d244"}')
    (root / "sources" / "0" / "0").write_bytes(b'\x00v1\n{"t":{"0":0}}')
    (root / leftover).parent.mkdir(parents=True, exist_ok=True)
    (root / leftover).write_text(_offsets(0))

    problem = checkpoint_problem(str(root))

    assert problem is not None and "no batch committed yet" in problem
    assert set_aside_corrupt_checkpoint(str(root)) is not None
    assert not checkpoint_exists(str(root))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("ckpt.corrupt-")]


def test_a_start_interrupted_before_any_batch_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    for name in ("offsets", "commits", "sources/0"):
        (root / name).mkdir(parents=True)
    (root / "metadata").write_text('{"id":"6e742dfb-ced7-4fce-b956-203f5fd3d244"}')
    assert checkpoint_problem(str(root)) is None
