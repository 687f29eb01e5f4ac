"""Turn the backfill form into offsets, refusing anything malformed."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cdc_iceberg.settings import Settings, SettingsError

_RUN_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class BackfillFormError(ValueError):
    """A value typed into the backfill form cannot be used."""


def parse_offsets(text: str | None, field: str) -> dict[int, int]:
    """``{"0": 120}`` -> {0: 120}; partitions and offsets must be non-negative integers."""
    if not text:
        raise BackfillFormError(f"{field}: required for this choice")
    try:
        data = json.loads(text)
    except ValueError:
        raise BackfillFormError(f'{field}: not JSON; expected {{"0": 120, "1": 80}}') from None
    if not isinstance(data, dict) or not data:
        raise BackfillFormError(f"{field}: expected a JSON object of partition -> offset")
    offsets: dict[int, int] = {}
    for partition, offset in data.items():
        if not str(partition).isdigit() or isinstance(offset, bool) or not isinstance(offset, int):
            raise BackfillFormError(f"{field}: {partition!r}: {offset!r} is not partition: offset")
        if offset < 0:
            raise BackfillFormError(
                f"{field}: offset {offset} of partition {partition} is negative"
            )
        offsets[int(partition)] = offset
    return offsets


def parse_timestamp_ms(text: str | None) -> int:
    if not text:
        raise BackfillFormError("start_timestamp: required when starting from a timestamp")
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise BackfillFormError(f"start_timestamp: {text!r} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise BackfillFormError("start_timestamp: give a time zone (e.g. 2026-01-01T00:00:00Z)")
    return int(moment.timestamp() * 1000)


def plan_backfill(
    params: Mapping[str, Any], run_id: str = "manual", settings: Settings | None = None
) -> dict[str, str]:
    """Resolve the form into the drain's arguments (Spark offsets JSON, table, checkpoint)."""
    from cdc_iceberg import kafka_offsets

    base = settings or Settings.from_env()
    try:
        target = base.replace(iceberg_table=str(params.get("target_table") or base.iceberg_table))
    except SettingsError as error:
        raise BackfillFormError(f"target_table: {error}") from None
    start_from = params.get("start_from", "earliest")
    if start_from == "earliest":
        start = kafka_offsets.beginning_offsets(target)
    elif start_from == "timestamp":
        start = kafka_offsets.offsets_for_timestamp(
            target, parse_timestamp_ms(params.get("start_timestamp"))
        )
    elif start_from == "offsets":
        start = parse_offsets(params.get("start_offsets"), "start_offsets")
    else:
        raise BackfillFormError(f"start_from: {start_from!r} is not earliest, timestamp or offsets")
    stop = ""
    if params.get("stop_at", "latest") == "offsets":
        stop_offsets = parse_offsets(params.get("stop_offsets"), "stop_offsets")
        for partition, offset in stop_offsets.items():
            if offset < start.get(partition, 0):
                raise BackfillFormError(
                    f"stop_offsets: partition {partition} stops at {offset}, before its start "
                    f"{start.get(partition, 0)}"
                )
        stop = json.dumps({str(p): o for p, o in stop_offsets.items()})
    elif params.get("stop_at", "latest") != "latest":
        raise BackfillFormError(f"stop_at: {params.get('stop_at')!r} is not latest or offsets")
    run = _RUN_SAFE.sub("_", run_id)[:80]
    return {
        "table": target.iceberg_table,
        "pipeline_id": f"backfill:{run}",
        "checkpoint": f"{base.checkpoint_location.rstrip('/')}_backfill/{run}",
        "starting_offsets": kafka_offsets.to_spark_json(target.kafka_topic, start),
        "stop_offsets": stop,
    }
