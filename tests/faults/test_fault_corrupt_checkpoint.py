"""A damaged checkpoint: each rerun of the real job is exact, or says clearly why not.

One pipeline, one case after another: the checkpoint the last run left is
damaged the way a full disk, a torn copy or a careless hand would, more
records arrive, and the drain runs again (in one long-lived Spark session: a
restart reads the checkpoint exactly as a new spark-submit would, without a
JVM start per case). What a user expects:

* a torn or unreadable entry of the offset or commit log, a checksum that no
  longer matches, a hole in either log: Spark cannot restart from it, so the
  job sets the checkpoint aside (renamed ``<name>.corrupt-<time>``, with an
  error in the log naming the problem) and resumes from the offsets the table
  records: exact, no crash loop, nothing reprocessed twice;
* the newest commit missing (a crash between Spark's offset and commit log
  writes): the planned batch is set aside and planned again;
* stray temp files (a write interrupted before its rename): ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from invariants import assert_rerun_changes_nothing, check_invariants, snapshot_ids
from support import send

from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.settings import Settings
from jobs.cdc_to_iceberg import drain

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(3000)]


def _numbered(directory: Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _latest(root: Path, log: str) -> Path:
    return root / log / str(_numbered(root / log)[-1])


def _crc(path: Path) -> Path:
    return path.with_name(f".{path.name}.crc")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncate_offsets(root: Path) -> None:
    _truncate(_latest(root, "offsets"))


def _torn_offsets(root: Path) -> None:
    latest = _latest(root, "offsets")
    _truncate(latest)
    _crc(latest).unlink(missing_ok=True)


def _missing_middle(log: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        batches = _numbered(root / log)
        assert len(batches) >= 3, f"{log}/ has too few batches to lose one: {batches}"
        victim = root / log / str(batches[len(batches) // 2])
        victim.unlink()
        _crc(victim).unlink(missing_ok=True)

    return damage


def _missing_latest(log: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        victim = _latest(root, log)
        victim.unlink()
        _crc(victim).unlink(missing_ok=True)

    return damage


def _truncated_commit(root: Path) -> None:
    latest = _latest(root, "commits")
    latest.write_bytes(latest.read_bytes()[:3])
    _crc(latest).unlink(missing_ok=True)


def _stray_temp_files(root: Path) -> None:
    following = _numbered(root / "offsets")[-1] + 1
    (root / "offsets" / f".{following}.1f0e9a2b-tmp.tmp").write_bytes(b"v1\n{")
    (root / "offsets" / f"..{following}.1f0e9a2b-tmp.tmp.crc").write_bytes(b"crc")
    (root / "commits" / f".{following}.77aa.tmp").write_bytes(b"")
    (root / ".metadata.4c2d.tmp").write_bytes(b"{")
    (root / "offsets" / "tmp").write_bytes(b"\xff\xfe")


# (name, damage, what the rerun must do: "set aside" | "replan" | "keep")
CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("truncated newest offsets file", _truncate_offsets, "set aside"),
    ("torn newest offsets file, no checksum", _torn_offsets, "set aside"),
    ("missing batch file in offsets/", _missing_middle("offsets"), "set aside"),
    ("missing newest offsets file", _missing_latest("offsets"), "set aside"),
    ("missing batch file in commits/", _missing_middle("commits"), "set aside"),
    ("missing newest commits file", _missing_latest("commits"), "replan"),
    ("truncated newest commits file", _truncated_commit, "set aside"),
    ("stray temp files in the checkpoint", _stray_temp_files, "keep"),
]


def test_damaged_checkpoint_reruns_are_exact(
    spark: Any,
    pipeline: Settings,
    scenario_report: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = pipeline.replace(max_offsets_per_trigger=120)
    root = Path(settings.checkpoint_location)
    source = ArticleSource(seed=73, partitions=2)
    records = send(settings, source.random_history(500, 120, snapshot_rows=40), 2)
    drain(spark, settings)

    timings = []
    for name, damage, expected in CASES:
        label = f"corrupt checkpoint: {name}"
        scenario_report(
            name=label,
            injected=f"{name}, then new records and a rerun (expected: {expected})",
            invariants=["I1", "I2", "I3", "I4", "I5", "clear message"],
        )
        started = time.monotonic()
        history = snapshot_ids(settings)
        # enough new records for several batches: the logs always have a middle to lose
        records += send(settings, source.random_history(300, 120), 2)
        damage(root)
        aside_before = set(root.parent.glob(f"{root.name}.corrupt-*"))
        caplog.clear()

        with caplog.at_level(logging.WARNING, logger="cdc_to_iceberg"):
            drain(spark, settings)

        output = caplog.text
        aside = set(root.parent.glob(f"{root.name}.corrupt-*")) - aside_before
        if expected == "set aside":
            assert len(aside) == 1, f"{name}: checkpoint not set aside"
            assert "cannot be restarted (" in output and "resuming from the offsets" in output, (
                f"{name}: no clear message in the log"
            )
        else:
            assert not aside, f"{name}: a usable checkpoint was set aside"
        if expected == "replan":
            assert "planned but never committed" in output
        counts = check_invariants(settings, records, snapshots_before=history)
        duration = time.monotonic() - started
        timings.append(f"{name}: {duration:.0f} s")
        scenario_report(name=label, counts=counts, result="pass", duration_s=duration)

    assert_rerun_changes_nothing(settings, lambda: drain(spark, settings))
    with capsys.disabled():
        print("\ncorrupt checkpoint cases: " + "; ".join(timings))


def test_leftovers_of_a_first_batch_never_committed(
    spark: Any, pipeline: Settings, scenario_report: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed while writing batch 0's commit: Spark would refuse the files left behind."""
    name = "corrupt checkpoint: leftovers of a batch 0 never committed"
    scenario_report(
        name=name,
        injected="offsets/0 set aside and temp files in offsets/ and commits/, nothing committed",
        invariants=["I1", "I2", "I3", "I4", "I5", "I6", "clear message"],
    )
    settings = pipeline.replace(max_offsets_per_trigger=150)
    records = send(settings, ArticleSource(seed=76, partitions=2).random_history(300, 60), 2)
    root = Path(settings.checkpoint_location)
    for directory in ("offsets", "commits", "sources/0"):
        (root / directory).mkdir(parents=True)
    (root / "metadata").write_text('{"id":"6e742dfb-ced7-4fce-b956-203f5fd3d244"}')
    (root / "offsets" / ".0.uncommitted-20260101T000000").write_text("v1\n{}\n{}\n")
    (root / "offsets" / ".1.5e0c.tmp").write_bytes(b"")
    (root / "commits" / ".0.82ca7cb5.tmp").write_bytes(b"")
    (root / "commits" / "..0.82ca7cb5.tmp.crc").write_bytes(b"")

    with caplog.at_level(logging.WARNING, logger="cdc_to_iceberg"):
        drain(spark, settings)

    assert "cannot be restarted (no batch committed yet" in caplog.text
    counts = check_invariants(settings, records)
    assert_rerun_changes_nothing(settings, lambda: drain(spark, settings))
    scenario_report(name=name, counts=counts)
