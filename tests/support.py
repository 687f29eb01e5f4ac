"""Helpers for tests: produce records, read the Iceberg tables back with pyiceberg."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reference_fold import ARTICLES, FoldTable, Record

from cdc_iceberg import table_state
from cdc_iceberg.generator import Message, produce
from cdc_iceberg.kafka_offsets import ensure_topic
from cdc_iceberg.settings import PROJECT_ROOT, Settings
from cdc_iceberg.spark_conf import spark_env


def send(
    settings: Settings, messages: Sequence[Message], partitions: int = 3, **kwargs: Any
) -> list[Record]:
    """Create the topic if needed, write ``messages`` and return them as fold records."""
    ensure_topic(settings, partitions=partitions)
    produced = produce(settings, messages, **kwargs)
    return [Record(p.partition, p.offset, p.message.key, p.message.value) for p in produced]


def catalog(settings: Settings) -> Any:
    """The pyiceberg catalog of the settings (SQL or REST, as ICEBERG_CATALOG_TYPE says)."""
    return table_state.catalog(settings)


def read_rows(settings: Settings, table: str | None = None) -> list[dict[str, Any]]:
    loaded = catalog(settings).load_table(table or settings.iceberg_table)
    return loaded.scan().to_arrow().to_pylist()


def live_rows(settings: Settings, table: FoldTable = ARTICLES) -> dict[Any, dict[str, Any]]:
    """The live table by key (as the fold keys it); fails on a duplicate key."""
    rows: dict[Any, dict[str, Any]] = {}
    for row in read_rows(settings):
        parts = tuple(row[k] for k in table.key)
        key = parts[0] if len(parts) == 1 else parts
        assert key not in rows, f"duplicate key {key}"
        rows[key] = row
    return rows


def assert_table_equals_fold(
    settings: Settings, expected: dict[Any, dict[str, Any]], table: FoldTable = ARTICLES
) -> None:
    actual = live_rows(settings, table)
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    assert not missing and not extra, f"missing keys {missing[:5]}, unexpected keys {extra[:5]}"
    for key, want in expected.items():
        got = actual[key]
        for column in table.names:
            assert got[column] == want[column], (
                f"{key}.{column}: table has {got[column]!r}, fold says {want[column]!r}"
            )
        assert (got["ts_ms"], got["lsn"], got["kafka_partition"], got["kafka_offset"]) == want[
            "_seq"
        ], f"{key}: sequence differs"


def snapshots(settings: Settings, table: str | None = None) -> list[dict[str, str]]:
    """Snapshot summaries of a table, oldest first (current ancestry only)."""
    loaded = catalog(settings).load_table(table or settings.iceberg_table)
    current = loaded.current_snapshot()
    chain = []
    by_id = {s.snapshot_id: s for s in loaded.snapshots()}
    while current is not None:
        chain.append(current)
        current = by_id.get(current.parent_snapshot_id) if current.parent_snapshot_id else None
    return [dict(s.summary.additional_properties) for s in reversed(chain)]


def committed_ranges(settings: Settings) -> list[dict[int, tuple[int, int]]]:
    """Per commit of this pipeline, the offset range it recorded."""
    out = []
    for summary in snapshots(settings):
        if summary.get("cdc.pipeline-id") != settings.pipeline_id:
            continue
        if "cdc.batch-range" not in summary:
            continue  # a reset records a new position, not a batch
        ranges = json.loads(summary["cdc.batch-range"])
        out.append({int(p): (int(r[0]), int(r[1])) for p, r in ranges.items()})
    return out


def assert_ranges_tile(
    settings: Settings, end: dict[int, int], begin: dict[int, int] | None = None
) -> None:
    """Recorded ranges of each partition are contiguous, non-overlapping, and reach ``end``."""
    by_partition: dict[int, list[tuple[int, int]]] = {}
    for ranges in committed_ranges(settings):
        for partition, span in ranges.items():
            by_partition.setdefault(partition, []).append(span)
    for partition, last in end.items():
        spans = by_partition.get(partition, [])
        if last == (begin or {}).get(partition, 0):
            continue
        assert spans, f"partition {partition}: no committed range, expected up to {last}"
        assert spans[0][0] == (begin or {}).get(partition, 0), f"p{partition} starts at {spans[0]}"
        for previous, following in itertools.pairwise(spans):
            assert previous[1] == following[0], (
                f"p{partition}: gap or overlap {previous} {following}"
            )
            assert following[0] < following[1], f"p{partition}: empty range {following}"
        assert spans[-1][1] == last, f"p{partition}: ends at {spans[-1][1]}, topic ends at {last}"


def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    return read_rows(settings, settings.iceberg_dlq_table)


def prepare_airflow_db() -> Path:
    """The suite's Airflow metadata DB (SQLite in AIRFLOW_HOME), migrated, with the writer pool."""
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_CONN_SPARK_DEFAULT"] = json.dumps(
        {"conn_type": "spark", "host": "local[2]"}
    )
    for command in (
        ["db", "migrate"],
        ["pools", "set", "cdc_iceberg_writer", "1", "one writer per Iceberg table"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *command],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    return home / "airflow.db"


def run_job(
    settings: Settings, failpoint: str = "", timeout: float = 1200
) -> subprocess.CompletedProcess[str]:
    """spark-submit the drain exactly as `make drain` does, in a process of its own."""
    env = spark_env()
    env.update(settings.replace(failpoint=failpoint).to_env())
    return subprocess.run(
        [sys.executable, "-m", "cdc_iceberg.submit"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


_LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d %p %c: %m%n
"""


def spark_conf_with_logs(root: Path, loggers: dict[str, str]) -> Path:
    """A ``SPARK_CONF_DIR`` under ``root`` for a search of everything a run writes.

    An event log in ``root / "events"``, uncompressed (plain JSON lines, which a
    search for a secret can read), and log4j on stderr with ``loggers`` (logger
    name: level) turned up, so that what they would print is there to search.
    """
    conf = root / "spark-conf"
    conf.mkdir(parents=True, exist_ok=True)
    (root / "events").mkdir(exist_ok=True)
    log4j = conf / "log4j2.properties"
    levels = "".join(
        f"logger.l{i}.name = {name}\nlogger.l{i}.level = {level}\n"
        for i, (name, level) in enumerate(loggers.items())
    )
    log4j.write_text(_LOG4J2 + levels)
    (conf / "spark-defaults.conf").write_text(
        "spark.eventLog.enabled true\n"
        "spark.eventLog.compress false\n"
        f"spark.eventLog.dir file://{root / 'events'}\n"
        f"spark.driver.extraJavaOptions -Dlog4j2.configurationFile=file://{log4j}\n"
    )
    return conf


def files_containing(roots: Sequence[Path], secret: str) -> list[str]:
    """The files under ``roots`` (files or folders) whose bytes hold ``secret``."""
    found = []
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path.is_file() and secret.encode() in path.read_bytes():
                found.append(str(path))
    return found
