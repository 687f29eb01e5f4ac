"""Turn the backfill form into offsets, refusing anything malformed.

Every value typed into the form is checked here, on the server, whatever the
form's own schema let through: partitions and offsets are plain non-negative
integers in Kafka's ranges and must exist in the topic, a timestamp is an
ISO-8601 time with a zone between 1970 and now, and the target table is a
``namespace.table`` of ASCII identifiers (it is later written into SQL).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cdc_iceberg.settings import Settings, SettingsError

_RUN_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_PARTITION = re.compile(r"[0-9]{1,10}\Z")

MAX_PARTITION = 2**31 - 1
"""Kafka partitions are int32."""
MAX_OFFSET = 2**63 - 1
"""Kafka offsets are int64."""
MAX_FIELD_CHARS = 10_000
"""Longer than any real offsets JSON for a topic; refuses pasted junk early."""
FUTURE_TOLERANCE_MS = 60_000
"""Clock skew accepted between the form's timestamp and this machine."""


class BackfillFormError(ValueError):
    """A value typed into the backfill form cannot be used."""


def _text(value: Any, field: str, required: str = "required for this choice") -> str:
    if value is None or value == "":
        raise BackfillFormError(f"{field}: {required}")
    if not isinstance(value, str):
        raise BackfillFormError(f"{field}: expected text, got {type(value).__name__}")
    if len(value) > MAX_FIELD_CHARS:
        raise BackfillFormError(f"{field}: {len(value)} characters is too long")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    if duplicated:
        raise BackfillFormError(f"partition {duplicated[0]!r} is given twice")
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise BackfillFormError(f"{name} is not an offset")


def parse_offsets(text: str | None, field: str) -> dict[int, int]:
    """``{"0": 120}`` -> {0: 120}; partitions and offsets must be non-negative integers."""
    raw = _text(text, field)
    try:
        data = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except BackfillFormError as error:
        raise BackfillFormError(f"{field}: {error}") from None
    except ValueError:
        raise BackfillFormError(f'{field}: not JSON; expected {{"0": 120, "1": 80}}') from None
    if not isinstance(data, dict) or not data:
        raise BackfillFormError(f"{field}: expected a JSON object of partition -> offset")
    offsets: dict[int, int] = {}
    for partition, offset in data.items():
        if (
            not _PARTITION.match(partition)
            or isinstance(offset, bool)
            or not isinstance(offset, int)
        ):
            raise BackfillFormError(
                f"{field}: {partition[:40]!r}: {str(offset)[:40]!r} is not partition: offset "
                '(whole numbers, e.g. {"0": 120})'
            )
        number = int(partition)
        if number > MAX_PARTITION:
            raise BackfillFormError(f"{field}: partition {number} is out of range")
        if number in offsets:
            raise BackfillFormError(f"{field}: partition {number} is given twice")
        if offset < 0:
            raise BackfillFormError(f"{field}: offset {offset} of partition {number} is negative")
        if offset > MAX_OFFSET:
            raise BackfillFormError(f"{field}: offset of partition {number} is out of range")
        offsets[number] = offset
    return offsets


def parse_timestamp_ms(text: str | None, now_ms: int | None = None) -> int:
    """An ISO-8601 time with a zone, between 1970 and now, as epoch milliseconds."""
    raw = _text(text, "start_timestamp", "required when starting from a timestamp").strip()
    if len(raw) > 64:
        raise BackfillFormError("start_timestamp: not an ISO-8601 time (too long)")
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BackfillFormError(f"start_timestamp: {raw!r} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise BackfillFormError("start_timestamp: give a time zone (e.g. 2026-01-01T00:00:00Z)")
    try:
        millis = int(moment.timestamp() * 1000)
    except (OverflowError, ValueError, OSError):
        raise BackfillFormError(f"start_timestamp: {raw!r} is out of range") from None
    if millis < 0:
        # Kafka reads -1 and -2 as "latest" and "earliest": never pass a negative time
        raise BackfillFormError(f"start_timestamp: {raw} is before 1970")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if millis > now + FUTURE_TOLERANCE_MS:
        raise BackfillFormError(
            f"start_timestamp: {raw} is in the future; no record is that recent"
        )
    return millis


def check_offsets_in_topic(
    offsets: Mapping[int, int],
    beginning: Mapping[int, int],
    end: Mapping[int, int],
    field: str,
) -> None:
    """Every partition exists in the topic and every offset is one the topic still holds."""
    for partition, offset in sorted(offsets.items()):
        if partition not in end:
            raise BackfillFormError(
                f"{field}: the topic has no partition {partition} (it has {sorted(end)})"
            )
        if offset > end[partition]:
            raise BackfillFormError(
                f"{field}: partition {partition} ends at {end[partition]}, not {offset}"
            )
        if offset < beginning.get(partition, 0):
            raise BackfillFormError(
                f"{field}: partition {partition} starts at {beginning[partition]} (older records "
                f"were deleted by retention), not {offset}"
            )


def _choice(params: Mapping[str, Any], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = params.get(name, default)
    if value is None:
        value = default
    if not isinstance(value, str) or value not in allowed:
        raise BackfillFormError(f"{name}: {str(value)[:40]!r} is not {' or '.join(allowed)}")
    return value


def run_segment(run_id: str) -> str:
    """The run id as one safe path component (no separators, never '.' or '..')."""
    return _RUN_SAFE.sub("_", str(run_id)).lstrip(".")[:80] or "manual"


def backfill_group(settings: Settings) -> str:
    """The consumer group a backfill commits its progress to: its own, never the scheduled
    pipeline's (``KAFKA_CONSUMER_GROUP``)."""
    return f"{settings.kafka_consumer_group}_backfill"


def plan_backfill(
    params: Mapping[str, Any], run_id: str = "manual", settings: Settings | None = None
) -> dict[str, str]:
    """Resolve the form into the drain's arguments (Spark offsets JSON, table, checkpoint)."""
    from cdc_iceberg import kafka_offsets, pipelines

    base = settings or Settings.from_env()
    table = params.get("target_table")
    if table is not None and not isinstance(table, str):
        raise BackfillFormError(f"target_table: expected text, got {type(table).__name__}")
    if table:
        try:
            base.replace(iceberg_table=table)  # a namespace.table of identifiers
        except SettingsError as error:
            raise BackfillFormError(f"target_table: {error}") from None
    source = params.get("table")
    if source is not None and not isinstance(source, str):
        raise BackfillFormError(f"table: expected text, got {type(source).__name__}")
    try:
        config = pipelines.load(base.pipelines_file)
        # the table whose topic is read: its own topic, its Iceberg table by default
        resolved = config.settings_for(base, source, lambda: kafka_offsets.topics(base))
    except pipelines.PipelinesError as error:
        raise BackfillFormError(f"table: {error}") from None
    target = resolved.replace(iceberg_table=table) if table else resolved
    start_from = _choice(params, "start_from", "earliest", ("earliest", "timestamp", "offsets"))
    stop_at = _choice(params, "stop_at", "latest", ("latest", "offsets"))
    # parse everything typed before asking the broker anything
    timestamp = (
        parse_timestamp_ms(params.get("start_timestamp")) if start_from == "timestamp" else 0
    )
    typed_start = (
        parse_offsets(params.get("start_offsets"), "start_offsets")
        if start_from == "offsets"
        else {}
    )
    stop_offsets = (
        parse_offsets(params.get("stop_offsets"), "stop_offsets") if stop_at == "offsets" else {}
    )
    beginning = kafka_offsets.beginning_offsets(target)
    if start_from == "earliest":
        start = beginning
    elif start_from == "timestamp":
        start = kafka_offsets.offsets_for_timestamp(target, timestamp)
    else:
        check_offsets_in_topic(
            typed_start, beginning, kafka_offsets.end_offsets(target), "start_offsets"
        )
        start = typed_start
    stop = ""
    if stop_at == "offsets":
        check_offsets_in_topic(stop_offsets, {}, kafka_offsets.end_offsets(target), "stop_offsets")
        for partition, offset in stop_offsets.items():
            if offset < start.get(partition, 0):
                raise BackfillFormError(
                    f"stop_offsets: partition {partition} stops at {offset}, before its start "
                    f"{start.get(partition, 0)}"
                )
        stop = json.dumps({str(p): o for p, o in stop_offsets.items()})
    run = run_segment(run_id)
    return {
        "table": target.iceberg_table,
        "topic": target.kafka_topic,
        "pipeline_id": f"backfill:{run}",
        # the scheduled pipeline's group shows its lag: a backfill that stops early
        # must not set it back
        "consumer_group": backfill_group(base),
        "checkpoint": f"{base.checkpoint_location.rstrip('/')}_backfill/{run}",
        "starting_offsets": kafka_offsets.to_spark_json(target.kafka_topic, start),
        "stop_offsets": stop,
    }
