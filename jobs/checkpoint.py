"""The drain's Structured Streaming checkpoint: read it, check it, lock it, set it aside.

Spark's checkpoint holds the offset log (``offsets/N``: what batch N reads,
written before the batch runs) and the commit log (``commits/N``: written
after it). The table, not the checkpoint, is the final word on progress, so a
checkpoint Spark could not restart from is never a reason to stop or to
reprocess: it is renamed aside and the drain resumes from the offsets the table
records. Local checkpoints are checked file by file; a remote one
(``s3a://``, ``hdfs://``) is left to Spark.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from cdc_iceberg import kafka_offsets

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("cdc_to_iceberg")


class CheckpointInUseError(RuntimeError):
    """Another drain holds the checkpoint."""


def is_local(location: str) -> bool:
    return urlparse(location).scheme in ("", "file")


def local_path(location: str) -> Path:
    return Path(urlparse(location).path if location.startswith("file:") else location)


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
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    hpath = jvm.org.apache.hadoop.fs.Path(location)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
    if not fs.exists(hpath):
        return None
    stream = fs.open(hpath)
    try:
        return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()


def checkpoint_exists(location: str) -> bool:
    """Whether the drain can resume from this checkpoint (a corrupt one is set aside first)."""
    if is_local(location):
        return (local_path(location) / "offsets").is_dir()
    return True  # remote checkpoints: let Spark decide


_VERSION_LINE = re.compile(r"^v[1-9][0-9]*$")


def _batch_files(directory: Path) -> dict[int, Path]:
    """``N`` files of a metadata log (Spark ignores temp, checksum and other names)."""
    if not directory.is_dir():
        return {}
    return {int(p.name): p for p in directory.iterdir() if p.name.isdigit() and p.is_file()}


def _checksum_problem(path: Path, data: bytes) -> str | None:
    """Hadoop's local file system verifies ``.N.crc`` (CRC32 per chunk) on every read."""
    crc = path.with_name(f".{path.name}.crc")
    if not crc.is_file():
        return None
    raw = crc.read_bytes()
    if len(raw) < 8 or raw[:4] != b"crc\x00":
        return f"{crc.name} is not a checksum file"
    chunk = int.from_bytes(raw[4:8], "big")
    if chunk <= 0:
        return f"{crc.name} is not a checksum file"
    sums = [zlib.crc32(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    stored = [int.from_bytes(raw[8 + 4 * i : 12 + 4 * i], "big") for i in range(len(sums))]
    if len(raw) != 8 + 4 * len(sums) or stored != sums:
        return f"{path.name} does not match its checksum {crc.name}"
    return None


def _log_entry_problem(path: Path, kind: str) -> str | None:
    """Why Spark could not read ``path`` (an offset or commit log entry), or None."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return f"{path.name} is unreadable ({error})"
    problem = _checksum_problem(path, data)
    if problem:
        return problem
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"{path.name} is unreadable ({error})"
    lines = [line for line in text.splitlines() if line.strip()]
    need = 3 if kind == "offsets" else 2
    if len(lines) < need or not _VERSION_LINE.match(lines[0].strip()):
        return f"{path.name} is truncated or not an entry of the {kind} log"
    for line in lines[1:]:
        try:
            value = json.loads(line)
        except ValueError:
            return f"{path.name} is truncated or holds invalid JSON"
        if not isinstance(value, dict):
            return f"{path.name} holds {line[:40]!r}, not a JSON object"
    return None


def checkpoint_problem(location: str) -> str | None:
    """Why Spark could not restart from a local checkpoint, or None when it can.

    Checked: every entry of the offset and commit logs parses (and matches its
    checksum), neither log has a hole, and the newest committed batch has its
    offsets. Batches planned after the newest commit are left to
    :func:`set_aside_uncommitted_batch`; temp and other stray files are
    ignored, as Spark ignores them, except before the first commit: Spark then
    starts a new query and fails on any file in ``offsets/``, ``commits/`` or
    ``state/``.
    """
    if not is_local(location):
        return None
    root = local_path(location)
    offsets = _batch_files(root / "offsets")
    commits = _batch_files(root / "commits")
    if not commits:
        # Spark starts at batch 0 and then refuses any file left in these directories
        # (a batch 0 planned but never committed, a temp file of an interrupted write)
        leftovers = sorted(
            str(p.relative_to(root))
            for name in ("offsets", "commits", "state")
            if (root / name).is_dir()
            for p in (root / name).rglob("*")
            if p.is_file()
        )
        if leftovers:
            return f"no batch committed yet, but {', '.join(leftovers[:3])} left by a crash"
        return None
    last_commit = max(commits, default=-1)
    planned = {n: p for n, p in offsets.items() if n <= last_commit}
    for name, batches in (("offsets", planned), ("commits", commits)):
        if batches and len(batches) != max(batches) - min(batches) + 1:
            missing = sorted(set(range(min(batches), max(batches) + 1)) - set(batches))
            return f"{name}/ misses batch {', '.join(map(str, missing[:5]))}"
    if commits and last_commit not in offsets:
        return f"commits/{last_commit} has no offsets/{last_commit}"
    for name, batches in (("offsets", planned), ("commits", commits)):
        for batch in sorted(batches):
            problem = _log_entry_problem(batches[batch], name)
            if problem:
                return f"{name}/{problem}"
    metadata = root / "metadata"
    if metadata.is_file():
        try:
            if not isinstance(json.loads(metadata.read_text()), dict):
                return "metadata is not a JSON object"
        except (OSError, ValueError, UnicodeDecodeError):
            return "metadata is truncated or holds invalid JSON"
    return None


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


def checkpoint_offsets(location: str, topic: str) -> dict[int, int]:
    """Offsets of the newest batch in a local checkpoint's offset log."""
    if not is_local(location):
        return {}
    directory = local_path(location) / "offsets"
    if not directory.is_dir():
        return {}
    for batch in sorted(_batch_files(directory), reverse=True):
        try:
            text = (directory / str(batch)).read_text()
        except (OSError, UnicodeDecodeError):
            continue
        lines = [x for x in text.splitlines() if x.strip()]
        for line in lines[2:]:
            try:
                return kafka_offsets.from_spark_json(line, topic)
            except (ValueError, AttributeError, TypeError):
                continue
    return {}
