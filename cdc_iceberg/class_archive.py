"""A class-data archive that makes a local Spark driver start faster.

A local Spark driver loads and verifies about 20,000 classes before its first
query, most of a Spark start on a laptop. The JVM can map them from an archive
instead (application class-data sharing, JDK 13 and later): about 3 s less
per start here, for every scheduled drain, maintenance run and test session.

``make setup`` builds the archive once (``python -m jobs.class_archive_build``):
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

import hashlib
import os
import shutil
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
