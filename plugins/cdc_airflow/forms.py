"""What the DAGs share: the one writer pool, and the table field of their trigger forms.

Read when a DAG file is parsed: nothing here opens a connection (the tables
offered are the entries of ``pipelines.yaml``; one found by its topic pattern
may be typed, and the task refuses any table the file does not configure).
"""

from __future__ import annotations

from typing import Any

WRITER_POOL = "cdc_iceberg_writer"
"""One writer per Iceberg table: every task that writes one takes a slot of this pool."""

# (?![\s\S]) ends the text in both Python and JavaScript ($ allows a final \n)
TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}\.[A-Za-z_][A-Za-z0-9_]{0,127}(?![\s\S])"


def configured_tables() -> list[str]:
    """The Iceberg tables the entries of ``CDC_PIPELINES_FILE`` name."""
    from cdc_iceberg import pipelines
    from cdc_iceberg.settings import Settings

    return [t.iceberg_table for t in pipelines.load(Settings.from_env().pipelines_file).tables]


def table_param(description: str, *, optional: bool = False, title: str = "Table") -> Any:
    """A form field for a table of ``pipelines.yaml`` (by default its first)."""
    from airflow.sdk import Param

    tables = configured_tables()
    default = None if optional else (tables[0] if tables else "neuronews.articles")
    return Param(
        default,
        type=["null", "string"] if optional else "string",
        examples=tables or ["neuronews.articles"],
        pattern=TABLE_PATTERN,
        maxLength=257,
        title=title,
        description=description,
    )
