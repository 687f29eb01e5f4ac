"""The one SparkSession builder of the project's Spark jobs.

Every setting of the session comes from :func:`cdc_iceberg.spark_conf.spark_conf`
(catalog, Kafka security, the class-data archive of a local driver), so the
drain, maintenance, the benchmarks and the tests all run the same Spark.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cdc_iceberg.settings import Settings
from cdc_iceberg.spark_conf import spark_conf, spark_jars

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def jvm(spark: SparkSession) -> Any:
    """The driver's py4j view of the JVM (a classic session has one; Spark Connect none)."""
    view = spark.sparkContext._jvm
    if view is None:
        raise RuntimeError("this Spark session has no JVM gateway (Spark Connect?)")
    return view


def build_session(
    settings: Settings, app_name: str = "cdc_to_iceberg", extra_conf: dict[str, str] | None = None
) -> SparkSession:
    """The one SparkSession builder of the job: spark_conf, then ``extra_conf`` over it."""
    from pyspark.sql import SparkSession

    settings.ensure_local_dirs()
    builder = SparkSession.builder.appName(app_name).master(settings.spark_master)
    for key, value in {**spark_conf(settings), **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    builder = builder.config("spark.jars", ",".join(spark_jars(settings)))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
