"""Each mirrored Iceberg table as an Airflow Asset, and the alias the drain emits through.

A drain that commits to a table records an asset event for it, through the
alias :data:`TABLES`, so a table found by the pipelines file's topic pattern
(unknown when the DAG is parsed) is an Asset as much as a named one, and a
drain that changed nothing (Kafka idle, a dry run) records none. A downstream
DAG is scheduled on one table, ``schedule=[table_asset("lakehouse",
"neuronews.articles")]``, or on every table, ``schedule=[TABLES]``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias

TABLES = AssetAlias("cdc_iceberg_tables")


def table_uri(catalog: str, iceberg_table: str) -> str:
    """``iceberg://<catalog>/<namespace>/<table>``."""
    return f"iceberg://{catalog}/{iceberg_table.replace('.', '/')}"


def table_asset(catalog: str, iceberg_table: str) -> Asset:
    """The Asset of one Iceberg table (named by its URI)."""
    return Asset(uri=table_uri(catalog, iceberg_table))


def announce(context: Any, catalog: str, iceberg_table: str, totals: dict[str, Any]) -> None:
    """Record an asset event for a table the drain committed to, its totals as the extra."""
    events = context.get("outlet_events")
    if events is None:  # run outside a task (no asset events to record)
        return
    events[TABLES].add(table_asset(catalog, iceberg_table), extra=dict(totals))
