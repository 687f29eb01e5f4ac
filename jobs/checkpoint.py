"""The drain's Structured Streaming checkpoint: read it, check it, lock it, set it aside.

Spark's checkpoint holds the offset log (``offsets/N``: what batch N reads,
written before the batch runs) and the commit log (``commits/N``: written
after it). The table, not the checkpoint, is the final word on progress, so a
checkpoint Spark could not restart from is never a reason to stop or to
reprocess: it is renamed aside and the drain resumes from the offsets the table
records. Local checkpoints are checked file by file
(:mod:`cdc_iceberg.checkpoint_log`); a remote one (``s3a://``, ``hdfs://``) is
left to Spark.
"""

from __future__ import annotations

import fcntl
import logging
import time
from typing import TYPE_CHECKING, Any

from cdc_iceberg import kafka_offsets
from cdc_iceberg.checkpoint_log import checkpoint_problem, is_local, local_path
from jobs import session

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("cdc_to_iceberg")


class CheckpointInUseError(RuntimeError):
    """Another drain holds the checkpoint."""


def read_offset_log(
    spark: SparkSession, checkpoint: str | None, batch_id: int, topic: str
) -> dict[int, int]:
    """End offsets Spark wrote ahead for ``batch_id`` (``offsets/N`` in the checkpoint)."""
    if not checkpoint:
        return {}
    text = _read_text(spark, f"{checkpoint.rstrip('/')}/offsets/{batch_id}")
    if text is None:
        return {}
    lines = [line for line in text.splitlines() if line.strip()]
    for line in lines[2:]:
        try:
            return kafka_offsets.from_spark_json(line, topic)
        except (ValueError, AttributeError):
            continue
    return {}


def _read_text(spark: SparkSession, location: str) -> str | None:
    if is_local(location):
        path = local_path(location)
        return path.read_text() if path.exists() else None
    jvm = session.jvm(spark)
    hpath = jvm.org.apache.hadoop.fs.Path(location)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
    if not fs.exists(hpath):
        return None
    stream = fs.open(hpath)
    try:
        return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()


def set_aside_corrupt_checkpoint(location: str) -> str | None:
    """Rename a local checkpoint Spark cannot restart from; return where it went.

    Spark would fail on it at every start (a crash loop). Nothing in it is
    needed: the table records what was applied and every batch is idempotent,
    so the drain starts a fresh checkpoint from the table's offsets. The old
    one is kept next to it, ``<name>.corrupt-<time>``, for inspection.
    """
    problem = checkpoint_problem(location)
    if problem is None:
        return None
    root = local_path(location)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = root.with_name(f"{root.name}.corrupt-{stamp}")
    suffix = 1
    while target.exists():
        target = root.with_name(f"{root.name}.corrupt-{stamp}-{suffix}")
        suffix += 1
    root.rename(target)
    log.error(
        "checkpoint %s cannot be restarted (%s): moved to %s; "
        "resuming from the offsets the table records",
        location,
        problem,
        target,
    )
    return str(target)


class CheckpointLock:
    """An exclusive lock next to a local checkpoint: one writer per checkpoint."""

    def __init__(self, location: str) -> None:
        self.path = local_path(location).with_name(local_path(location).name + ".lock")
        self.handle: Any = None

    def __enter__(self) -> CheckpointLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise CheckpointInUseError(
                f"another drain is running on checkpoint {self.path.with_suffix('')}; "
                "refusing to start"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def set_aside_uncommitted_batch(location: str) -> list[str]:
    """Move a planned but never committed batch out of a local checkpoint's offset log.

    After a crash between Spark's offset-log write and its commit-log write,
    Spark would replay that batch with the planned offsets (and its Kafka source
    fails reporting metrics for such a replay). The table already knows what
    was applied, so the batch is planned afresh instead: records the table holds
    are skipped by offset, the rest applied once. The file is renamed, not
    deleted, for inspection.
    """
    if not is_local(location):
        return []
    root = local_path(location)
    offsets, commits = root / "offsets", root / "commits"
    if not offsets.is_dir():
        return []
    committed = (
        {int(p.name) for p in commits.iterdir() if p.name.isdigit()} if commits.is_dir() else set()
    )
    moved = []
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for path in sorted(offsets.iterdir()):
        if (
            path.name.isdigit()
            and int(path.name) not in committed
            and int(path.name) > max(committed, default=-1)
        ):
            path.rename(offsets / f".{path.name}.uncommitted-{stamp}")
            checksum = offsets / f".{path.name}.crc"  # Hadoop's local checksum file
            if checksum.exists():
                checksum.rename(offsets / f".{path.name}.crc.uncommitted-{stamp}")
            moved.append(path.name)
    if moved:
        log.warning(
            "checkpoint %s: batch %s was planned but never committed; planning it again",
            location,
            ", ".join(moved),
        )
    return moved


def set_aside_uncommitted_remote_batch(spark: SparkSession, location: str) -> list[str]:
    """:func:`set_aside_uncommitted_batch` for a checkpoint on an object store or HDFS.

    Read and renamed through Hadoop's file system (an ``s3a://`` rename copies the
    small file). A checkpoint that committed nothing yet is renamed aside whole,
    ``<name>.corrupt-<time>``, as a local one is: Spark would refuse its leftovers.
    """
    if is_local(location):
        return set_aside_uncommitted_batch(location)
    jvm = session.jvm(spark)
    path = jvm.org.apache.hadoop.fs.Path
    root = path(location.rstrip("/"))
    fs = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
    offsets, commits = path(root, "offsets"), path(root, "commits")

    def batches(directory: Any) -> set[int]:
        if not fs.exists(directory):
            return set()
        names = [status.getPath().getName() for status in fs.listStatus(directory)]
        return {int(name) for name in names if name.isdigit()}

    planned = batches(offsets)
    if not planned:
        return []
    committed = batches(commits)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    if not committed:
        target = path(root.getParent(), f"{root.getName()}.corrupt-{stamp}")
        if not fs.rename(root, target):
            raise OSError(f"could not move checkpoint {location} aside to {target}")
        log.warning(
            "checkpoint %s: batch %s was planned but never committed, and nothing before it: "
            "moved to %s; starting from the offsets the table records",
            location,
            ", ".join(map(str, sorted(planned))),
            target,
        )
        return [str(n) for n in sorted(planned)]
    moved = []
    for batch in sorted(n for n in planned if n > max(committed)):
        target = path(offsets, f".{batch}.uncommitted-{stamp}")
        if not fs.rename(path(offsets, str(batch)), target):
            raise OSError(f"could not move {location}/offsets/{batch} aside")
        moved.append(str(batch))
    if moved:
        log.warning(
            "checkpoint %s: batch %s was planned but never committed; planning it again",
            location,
            ", ".join(moved),
        )
    return moved
