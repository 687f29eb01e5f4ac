"""A class-data archive that makes a local Spark driver start faster.

A local Spark driver loads and verifies about 20,000 classes before its first
query, most of a Spark start on a laptop. The JVM can map them from an archive
instead (application class-data sharing, JDK 13 and later): about 3 s less
per start here, for every scheduled drain, maintenance run and test session.

``make setup`` builds the archive once (``python -m cdc_iceberg.class_archive``):
a driver runs a small workload like the job's (JSON parsing, an Iceberg table
created, merged into and read) and the JVM writes the classes it loaded when
it exits. The file is named after what it depends on (the ``java`` Spark
starts, Spark's jars and the project's jars with their sizes and times, and the
variables that add to the driver's class path, such as ``SPARK_CONF_DIR``), so
a change to any of them makes the job start without the archive, never with a
stale one, until ``make setup`` builds the new one. A JVM that still finds the
archive unusable only warns and starts as usual (``-Xshare:auto``).

``SPARK_CLASS_ARCHIVE`` chooses: ``auto`` (the default: the project's archive,
for a local master, when built), ``off``, or the path of an archive to use.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from cdc_iceberg.settings import PROJECT_ROOT, Settings

ARCHIVE_DIR = PROJECT_ROOT / "build" / "jvm"
# where the archive's options go: Spark puts them before spark.driver.extraJavaOptions,
# which stays the user's
DRIVER_OPTIONS_KEY = "spark.driver.defaultJavaOptions"
_CLASS_PATH_ENV = (
    "SPARK_CONF_DIR",
    "HADOOP_CONF_DIR",
    "YARN_CONF_DIR",
    "SPARK_DIST_CLASSPATH",
    "SPARK_CLASSPATH",
)


def java_executable() -> Path | None:
    """The ``java`` that ``spark-submit`` starts: ``$JAVA_HOME/bin/java``, else the PATH's."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    if candidate is None or not candidate.exists():
        found = shutil.which("java")
        candidate = Path(found) if found else None
    return candidate.resolve() if candidate else None


def _spark_jars_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.origin:
        return None
    home = Path(os.environ.get("SPARK_HOME") or Path(spec.origin).parent)
    return home / "jars"


def _files(directory: Path | None) -> list[str]:
    if directory is None or not directory.is_dir():
        return []
    out = []
    for path in sorted(directory.glob("*.jar")):
        stat = path.stat()
        out.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return out


def archive_key(settings: Settings) -> str | None:
    """What the archive depends on, hashed; None when no ``java`` or Spark is found."""
    java = java_executable()
    spark_jars = _spark_jars_dir()
    if java is None or spark_jars is None:
        return None
    stat = java.stat()
    parts = [f"{java}:{stat.st_size}:{stat.st_mtime_ns}", f"spark-jars {spark_jars}"]
    parts += _files(spark_jars)
    parts.append(f"project-jars {settings.jars_dir}")
    parts += _files(Path(settings.jars_dir))
    # what else spark-submit puts on the driver's class path: the JVM maps an archive
    # only for the class path it was built with
    parts += [f"{name}={os.environ.get(name, '')}" for name in _CLASS_PATH_ENV]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def archive_path(settings: Settings) -> Path | None:
    """Where the archive for this ``java`` and these jars is (or would be) built."""
    key = archive_key(settings)
    return ARCHIVE_DIR / f"spark-driver-{key}.jsa" if key else None


def driver_java_options(settings: Settings) -> str:
    """The driver JVM's options that map the archive, or "" when there is none to map."""
    choice = settings.spark_class_archive
    if choice == "off":
        return ""
    if choice == "auto":
        if not settings.spark_master.startswith("local"):
            return ""  # a cluster's driver runs another JVM on another machine
        path = archive_path(settings)
    else:
        path = Path(choice)
    if path is None or not path.is_file():
        return ""
    return f"-XX:SharedArchiveFile={path} -Xshare:auto"


# -- building it -----------------------------------------------------------------


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

    from jobs.cdc_to_iceberg import build_session

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
    if process is not None:
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
