"""Spark's Structured Streaming checkpoint logs, read as files: no Spark needed.

The offset log (``offsets/N``: what batch N reads, written before the batch
runs) and the commit log (``commits/N``: written after it) of a local
checkpoint are checked and read here, for the drain (:mod:`jobs.checkpoint`)
and for the tools that report on it without starting Spark. A remote
checkpoint (``s3a://``, ``hdfs://``) is left to Spark.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from cdc_iceberg import kafka_offsets


def is_local(location: str) -> bool:
    return urlparse(location).scheme in ("", "file")


def local_path(location: str) -> Path:
    return Path(urlparse(location).path if location.startswith("file:") else location)


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


def _entry_offsets(path: Path, topic: str) -> dict[int, int] | None:
    """The topic's offsets in an offset-log entry, or None when it holds none readable."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    lines = [x for x in text.splitlines() if x.strip()]
    for line in lines[2:]:
        try:
            return kafka_offsets.from_spark_json(line, topic)
        except (ValueError, AttributeError, TypeError):
            continue
    return None


def checkpoint_offsets(location: str, topic: str) -> dict[int, int]:
    """Offsets of the newest batch in a local checkpoint's offset log."""
    if not is_local(location):
        return {}
    directory = local_path(location) / "offsets"
    if not directory.is_dir():
        return {}
    for batch in sorted(_batch_files(directory), reverse=True):
        found = _entry_offsets(directory / str(batch), topic)
        if found is not None:
            return found
    return {}


@dataclass(frozen=True)
class CommittedBatch:
    """The newest batch a checkpoint's commit log holds and where it ended."""

    batch_id: int
    offsets: dict[int, int]  # the batch's end offsets (its offset-log entry)
    planned: tuple[int, ...] = ()  # batches planned after it and never committed


def committed_batch(location: str, topic: str) -> CommittedBatch | None:
    """The newest committed batch of a local checkpoint (None: nothing committed yet)."""
    root = local_path(location)
    commits = _batch_files(root / "commits")
    if not commits:
        return None
    last = max(commits)
    offsets = _batch_files(root / "offsets")
    found = _entry_offsets(offsets[last], topic) if last in offsets else None
    planned = tuple(sorted(n for n in offsets if n > last))
    return CommittedBatch(last, found or {}, planned)
