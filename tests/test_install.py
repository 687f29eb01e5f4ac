"""The installed environment: pyspark and pyspark-client agree, spark-submit runs."""

from __future__ import annotations

import subprocess
from importlib import metadata

from cdc_iceberg.spark_conf import spark_env, spark_submit_binary


def test_pyspark_and_pyspark_client_are_the_same_spark() -> None:
    import pyspark

    assert metadata.version("pyspark") == metadata.version("pyspark-client") == pyspark.__version__
    from pyspark.sql import SparkSession  # the full package, not only the Connect client

    assert SparkSession.builder is not None


def test_spark_submit_runs_and_reports_the_pinned_version() -> None:
    import pyspark

    result = subprocess.run(
        [spark_submit_binary(), "--version"],
        capture_output=True,
        text=True,
        env=spark_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"version {pyspark.__version__}" in result.stdout + result.stderr


def test_airflow_3_with_the_spark_provider() -> None:
    assert metadata.version("apache-airflow").startswith("3.")
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    assert SparkSubmitOperator is not None
