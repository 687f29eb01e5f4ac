"""Build the class-data archive of a local Spark driver (see :mod:`cdc_iceberg.class_archive`).

Run once by ``make setup``::

    python -m jobs.class_archive_build [--force] [--print]

A driver runs a small workload like the drain's (JSON parsing, an Iceberg
table created, merged into and read) and its JVM writes the classes it loaded
as it exits. :mod:`cdc_iceberg.class_archive` names the file and finds it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from cdc_iceberg.class_archive import DRIVER_OPTIONS_KEY, archive_path
from cdc_iceberg.settings import Settings
from jobs.session import build_session


def _warm_up(spark: object, table: str) -> None:
    """Queries that load the classes a drain loads: JSON, aggregation, Iceberg DDL, MERGE."""
    sql = spark.sql  # type: ignore[attr-defined]
    sql(f"CREATE TABLE {table} (id string, v bigint, body string) USING iceberg")
    sql(
        "SELECT from_json(s, 'map<string,string>') AS m FROM VALUES "
        '(\'{"id": "a", "v": 1}\') AS t(s)'
    ).createOrReplaceTempView("parsed")
    sql(
        "SELECT m['id'] AS id, max(cast(m['v'] AS bigint)) AS v, max_by(m['id'], m['v']) AS body "
        "FROM parsed GROUP BY m['id']"
    ).createOrReplaceTempView("changes")
    for _ in range(2):
        sql(
            f"MERGE INTO {table} t USING changes s ON t.id = s.id "
            "WHEN MATCHED AND s.v > t.v THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
        )
    sql(f"SELECT count(*) FROM {table}").collect()
    sql(f"SELECT * FROM {table}.snapshots").collect()


def build(settings: Settings, force: bool = False) -> Path | None:
    """Build the archive for this ``java`` and these jars unless it exists; its path."""
    path = archive_path(settings)
    if path is None:
        print("class archive: no java or no pyspark found, nothing built", file=sys.stderr)
        return None
    if path.is_file() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cdc-class-archive-") as scratch:
        local = settings.replace(
            spark_master="local[2]",
            spark_class_archive="off",
            iceberg_catalog_uri=f"sqlite:///{scratch}/catalog.db",
            iceberg_warehouse=f"file://{scratch}/warehouse",
        )
        _run_and_dump(local, partial)
    if not partial.is_file() or partial.stat().st_size == 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"the JVM wrote no class archive to {partial}")
    partial.replace(path)
    for stale in path.parent.glob("spark-driver-*.jsa"):
        if stale != path:
            stale.unlink(missing_ok=True)
    print(
        f"class archive: {path} ({path.stat().st_size // 2**20} MiB, "
        f"{time.monotonic() - started:.0f} s)",
        file=sys.stderr,
    )
    return path


def _run_and_dump(settings: Settings, target: Path) -> None:
    """One driver runs the warm-up; its JVM writes the archive as it exits."""
    from pyspark import SparkContext

    dump = {DRIVER_OPTIONS_KEY: f"-XX:ArchiveClassesAtExit={target} -Xlog:cds=error"}
    spark = build_session(settings, "cdc_class_archive", dump)
    spark.sparkContext.setLogLevel("ERROR")
    gateway = SparkContext._gateway
    try:
        namespace = f"{settings.iceberg_catalog_name}.warm_up"
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {namespace}")
        _warm_up(spark, f"{namespace}.t")
    finally:
        spark.stop()
    # the JVM exits when its stdin closes, and writes the archive on the way out
    process = getattr(gateway, "proc", None)
    if gateway is not None and process is not None:
        gateway.shutdown()
        if process.stdin:
            process.stdin.close()
        process.wait(timeout=600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="build again even if it exists")
    parser.add_argument("--print", action="store_true", help="print the archive's path")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if settings.spark_class_archive == "off":
        print("class archive: SPARK_CLASS_ARCHIVE=off, nothing built", file=sys.stderr)
        return 0
    if args.print:
        print(archive_path(settings) or "")
        return 0
    try:
        build(settings, force=args.force)
    except Exception as error:  # an optimization: Spark starts without it, only slower
        print(f"class archive not built ({error}); Spark starts without it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
