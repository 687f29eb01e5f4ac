"""Turn the dead-letter replay form into the replay job's arguments, refusing bad input.

Every value is checked here, on the server, whatever the form's schema let
through: the table must be one of ``pipelines.yaml`` (resolved by the caller),
the reason filter is plain text of bounded length, partitions and offsets are
whole numbers in Kafka's ranges, and times are ISO-8601 with a zone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cdc_airflow.backfill import MAX_OFFSET, MAX_PARTITION, BackfillFormError, run_segment

MAX_REASON_CHARS = 200
_WHOLE = re.compile(r"[0-9]{1,19}\Z")


class ReplayFormError(BackfillFormError):
    """A value typed into the replay form cannot be used."""


def _absent(value: Any) -> bool:
    # a template renders an empty form field as "None"
    return value is None or (isinstance(value, str) and value.strip() in ("", "None"))


def _whole(params: Mapping[str, Any], name: str, limit: int) -> int | None:
    value = params.get(name)
    if _absent(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ReplayFormError(f"{name}: expected a whole number, got {type(value).__name__}")
    text = str(value).strip()
    if not _WHOLE.match(text) or int(text) > limit:
        raise ReplayFormError(f"{name}: {text[:40]!r} is not a whole number from 0 to {limit}")
    return int(text)


def _time(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if _absent(value):
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ReplayFormError(f"{name}: expected an ISO-8601 time")
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ReplayFormError(f"{name}: {value[:64]!r} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise ReplayFormError(f"{name}: give a time zone (e.g. 2026-01-01T00:00:00Z)")
    return moment.isoformat()


def _flag(params: Mapping[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if _absent(value):
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise ReplayFormError(f"{name}: {str(value)[:40]!r} is neither true nor false")


def replay_args(params: Mapping[str, Any], run_id: str) -> list[str]:
    """The replay job's arguments for the form's filters (the table is given apart).

    A dry run unless ``dry_run`` is a clear false.
    """
    args: list[str] = []
    reason = params.get("reason")
    if not _absent(reason):
        if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
            raise ReplayFormError(f"reason: expected text of at most {MAX_REASON_CHARS} characters")
        if not reason.isprintable():
            raise ReplayFormError("reason: only printable text")
        args += ["--reason", reason]
    partition = _whole(params, "partition", MAX_PARTITION)
    if partition is not None:
        args += ["--partition", str(partition)]
    offsets = [_whole(params, n, MAX_OFFSET) for n in ("from_offset", "to_offset")]
    if any(o is not None for o in offsets) and partition is None:
        raise ReplayFormError("from_offset / to_offset: give the partition they are offsets of")
    if offsets[0] is not None and offsets[1] is not None and offsets[1] <= offsets[0]:
        raise ReplayFormError(f"to_offset: {offsets[1]} is not after from_offset {offsets[0]}")
    for name, offset in zip(("--from-offset", "--to-offset"), offsets, strict=True):
        if offset is not None:
            args += [name, str(offset)]
    times = [_time(params, n) for n in ("from_time", "to_time")]
    for name, moment in zip(("--from-time", "--to-time"), times, strict=True):
        if moment is not None:
            args += [name, moment]
    if not _flag(params, "dry_run", default=True):
        args.append("--apply")
    if _flag(params, "ignore_retention", default=False):
        args.append("--ignore-retention")
    args += ["--replay-id", run_segment(run_id)]
    return args
