"""Per-table figures out through Airflow's own metrics settings (StatsD or OpenTelemetry).

Nothing to configure here: ``[metrics] statsd_on`` (or ``otel_on``) with its
host, port and prefix, as for Airflow's own metrics, sends these too. Each
name carries the Iceberg table, and backends that take tags also get it as
the tag ``table``:

=========================================  =======  ==================================
``cdc_iceberg.<table>.batches``            counter  batches a drain committed
``cdc_iceberg.<table>.events_in``          counter  change events applied or decided
``cdc_iceberg.<table>.inserted``           counter  rows inserted (likewise
                                                    ``updated``, ``deleted``, ``stale``,
                                                    ``dead_lettered``)
``cdc_iceberg.<table>.batch_duration``     timer    wall time of each batch
``cdc_iceberg.<table>.events_per_s``       gauge    the drain's events over its batches' time
``cdc_iceberg.<table>.lag``                gauge    records behind (the lag sensor)
``cdc_iceberg.<table>.rows``               gauge    live rows (the validation task)
``cdc_iceberg.<table>.staleness_s``        gauge    age of the newest change (validation)
``cdc_iceberg.<table>.last_commit_age_s``  gauge    age of the newest batch's commit, the
                                                    table's progress record (validation)
``cdc_iceberg.<table>.dead_letters``       gauge    rows in the dead-letter table
=========================================  =======  ==================================

``<table>`` is ``namespace.table``, e.g. ``cdc_iceberg.neuronews.articles.lag``
(after Airflow's ``statsd_prefix``, ``airflow`` by default).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

PREFIX = "cdc_iceberg"
COUNTERS = ("events_in", "inserted", "updated", "deleted", "stale", "dead_lettered")


def stat_name(iceberg_table: str, metric: str) -> str:
    """``cdc_iceberg.<namespace>.<table>.<metric>``."""
    return f"{PREFIX}.{iceberg_table}.{metric}"


def drain_figures(batches: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """What a drain's committed batches add to each counter (``batches`` included)."""
    figures = {"batches": len(batches)}
    for name in COUNTERS:
        figures[name] = sum(int(b.get(name, 0) or 0) for b in batches)
    return figures


def events_per_s(batches: Sequence[Mapping[str, Any]]) -> float | None:
    """The drain's processing rate: change events over the batches' summed wall time."""
    seconds = sum(float(b.get("duration_s", 0) or 0) for b in batches)
    if seconds <= 0:
        return None
    return round(sum(int(b.get("events_in", 0) or 0) for b in batches) / seconds, 1)


def _stats() -> Any:
    """Airflow's stats module, set up from ``[metrics]`` where the task runner did not
    (``dag.test()`` runs tasks in-process, without the runner's start-up)."""
    from airflow.sdk._shared.observability.metrics import stats
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability.metrics import stats_utils

    if getattr(stats, "_factory", None) is None:
        stats.initialize(
            factory=stats_utils.get_stats_factory(),
            export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=False),
        )
    return stats


def emit_drain(iceberg_table: str, batches: Sequence[Mapping[str, Any]]) -> None:
    """Counters and batch timings of the batches one drain committed to a table."""
    if not batches:
        return
    stats = _stats()
    tags = {"table": iceberg_table}
    for name, value in drain_figures(batches).items():
        stats.incr(stat_name(iceberg_table, name), value, tags=tags)
    for batch in batches:
        seconds = float(batch.get("duration_s", 0) or 0)
        stats.timing(
            stat_name(iceberg_table, "batch_duration"),
            datetime.timedelta(seconds=seconds),
            tags=tags,
        )
    rate = events_per_s(batches)
    if rate is not None:
        stats.gauge(stat_name(iceberg_table, "events_per_s"), rate, tags=tags)


def emit_gauges(iceberg_table: str, values: Mapping[str, float | int | None]) -> None:
    """Gauges of a table (values that are None are not sent)."""
    stats = _stats()
    for name, value in values.items():
        if value is not None:
            stats.gauge(stat_name(iceberg_table, name), value, tags={"table": iceberg_table})
