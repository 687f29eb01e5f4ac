"""The one builder of Spark configuration.

The Spark job applies it to its SparkSession, and the Airflow operator and
``make drain`` pass the same values to ``spark-submit``, so no ``--conf`` list
is repeated anywhere. Nothing here imports pyspark.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from cdc_iceberg.class_archive import DRIVER_OPTIONS_KEY, driver_java_options
from cdc_iceberg.settings import PROJECT_ROOT, Settings, catalog_credentials

JOB_FILE = PROJECT_ROOT / "jobs" / "cdc_to_iceberg.py"

REDACTION_REGEX = r"(?i)secret|password|token|access[._-]?key|jaas|sasl\.login"
"""Spark's default redaction pattern plus the Kafka options that carry credentials, and
S3 access keys however they are spelt (``fs.s3a.access.key``, ``s3.access-key-id``)."""


def spark_jars(settings: Settings) -> list[str]:
    """The jars ``jvm/spark/pom.xml`` fetched: Kafka source, Iceberg runtime, SQLite JDBC."""
    jars = sorted(str(p) for p in Path(settings.jars_dir).glob("*.jar"))
    if not jars:
        raise FileNotFoundError(
            f"no jars in {settings.jars_dir}: run `make jars` (or set CDC_JARS_DIR)"
        )
    return jars


def spark_conf(settings: Settings) -> dict[str, str]:
    """Spark properties for the CDC job: Iceberg catalog, extensions and tuning."""
    catalog = f"spark.sql.catalog.{settings.iceberg_catalog_name}"
    conf = {
        "spark.sql.extensions": (
            "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
        ),
        catalog: "org.apache.iceberg.spark.SparkCatalog",
        # jdbc (Iceberg's JdbcCatalog on the SQL database) or rest (a REST catalog server)
        f"{catalog}.type": settings.iceberg_catalog_type,
        f"{catalog}.uri": (
            settings.iceberg_catalog_uri
            if settings.iceberg_catalog_type == "rest"
            else settings.jdbc_catalog_url
        ),
        f"{catalog}.warehouse": settings.iceberg_warehouse,
        # Every read of the table's progress must see the newest commit: the micro-batch
        # runs in a cloned session with a catalog (and a table cache) of its own.
        f"{catalog}.cache-enabled": "false",
        # Seed's session settings: adaptive execution with partition coalescing and Kryo.
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
        "spark.sql.streaming.checkpointLocation.deleteCheckpointOnShutdown": "false",
        # A micro-batch is small next to the defaults' 200 shuffle partitions.
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        # Bucketed MERGE: let Spark join bucket to bucket without a shuffle of the target.
        "spark.sql.sources.v2.bucketing.enabled": "true",
        "spark.sql.sources.v2.bucketing.pushPartValues.enabled": "true",
        "spark.sql.requireAllClusterKeysForCoPartition": "false",
        "spark.sql.sources.v2.bucketing.partiallyClusteredDistribution.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        # tables drained at the same time share the executors (jobs.drain_tables)
        "spark.scheduler.mode": "FAIR",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Spark keeps the plans and metrics of the last 1000 SQL executions even with the
        # UI off. This job's plans are large: a session that had run many drains held
        # 367k plan metrics, its 1 GiB heap's old generation 99.9% full.
        "spark.sql.ui.retainedExecutions": "20",
        # A batch's plans compile to about 60 classes (10 to 300 ms each) and a drain's
        # first batch and metadata queries to 100 more. Spark's cache of generated classes
        # holds 100 by default: the batches evicted each other's classes and every batch
        # compiled them all again, about a second per batch.
        "spark.sql.codegen.cache.maxEntries": "1000",
        "spark.ui.retainedJobs": "100",
        "spark.ui.retainedStages": "100",
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.pyspark.python": sys.executable,
        # Kafka's sasl.jaas.config holds the password: redact it (and any password,
        # secret or token) wherever Spark prints properties, options or plans.
        "spark.redaction.regex": REDACTION_REGEX,
        "spark.sql.redaction.options.regex": "(?i)url|" + REDACTION_REGEX.removeprefix("(?i)"),
    }
    if settings.spark_executor_python:
        # executors start the workers' Python; the driver keeps its own
        conf["spark.pyspark.python"] = settings.spark_executor_python
        conf["spark.pyspark.driver.python"] = sys.executable
    java_options = driver_java_options(settings)
    if java_options:  # a local driver maps its classes from the archive make setup built
        conf[DRIVER_OPTIONS_KEY] = java_options
    if on_loopback(settings.spark_master):
        # a laptop run (local[*], or a standalone cluster on this machine) stays on loopback
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    if settings.iceberg_catalog_type == "jdbc":
        if settings.iceberg_catalog_uri.startswith("sqlite"):
            # tables drained at the same time commit to one SQLite file: wait for its lock
            conf[f"{catalog}.jdbc.busy_timeout"] = "30000"
        # the URI's user and password go to properties Spark redacts, never into the JDBC URL
        user, password = catalog_credentials(settings.iceberg_catalog_uri)
        if user:
            conf[f"{catalog}.jdbc.user"] = user
        if password:
            conf[f"{catalog}.jdbc.password"] = password
    if urlparse(settings.iceberg_warehouse).scheme in S3_SCHEMES:
        conf.update(iceberg_s3_conf(settings, catalog))
    if urlparse(settings.checkpoint_location).scheme == "s3a":
        conf.update(checkpoint_s3a_conf(settings))
    return conf


def kafka_source_options(settings: Settings) -> dict[str, str]:
    """Options of Spark's Kafka source for the pipeline's topic, streaming or batch.

    Committed records only, with their headers (``__debezium.oldkey`` and
    ``__debezium.newkey`` of key changes), and the client settings (security)
    of :meth:`Settings.kafka_client_config`.
    """
    options = {
        "kafka.bootstrap.servers": settings.kafka_bootstrap_servers,
        "subscribe": settings.kafka_topic,
        "failOnDataLoss": "true",
        "kafka.isolation.level": "read_committed",
        "includeHeaders": "true",
    }
    options.update({f"kafka.{k}": str(v) for k, v in settings.kafka_client_config().items()})
    return options


def on_loopback(master: str) -> bool:
    """Whether the executors run on this machine (``local[*]``, ``spark://127.0.0.1:<port>``)."""
    if master.startswith("local"):
        return True
    if not master.startswith("spark://") or "," in master:
        return False
    return urlparse(master).hostname in ("127.0.0.1", "localhost")


S3_SCHEMES = ("s3", "s3a")

CHECKPOINT_FILE_MANAGER = (
    "org.apache.spark.internal.io.cloud.AbortableStreamBasedCheckpointFileManager"
)
"""Writes each checkpoint file in place, visible once complete (spark-hadoop-cloud)."""

AWS_DEFAULT_CREDENTIALS = "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"


def iceberg_s3_conf(settings: Settings, catalog: str) -> dict[str, str]:
    """Iceberg's S3FileIO for an ``s3://`` warehouse (``iceberg-aws-bundle``).

    No credentials here: the AWS SDK's default chain finds them in the driver's and
    executors' environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) or the instance's
    role, so they never enter Spark's configuration, a command line or a log.
    """
    conf = {
        f"{catalog}.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        f"{catalog}.client.region": settings.s3_region,
    }
    if settings.iceberg_s3_endpoint:
        # an S3-compatible store (MinIO...) serves buckets as paths of its one address
        conf[f"{catalog}.s3.endpoint"] = settings.iceberg_s3_endpoint
        conf[f"{catalog}.s3.path-style-access"] = "true"
    return conf


def checkpoint_s3a_conf(settings: Settings) -> dict[str, str]:
    """Hadoop's S3A file system (``hadoop-aws``) for an ``s3a://`` streaming checkpoint.

    An object store has no atomic rename, the way Spark's default checkpoint file
    manager publishes a file (write a temporary file, rename it): the abortable-stream
    manager writes each file in place, and S3 makes an object visible only when its
    upload completes, so a crashed writer leaves no partial file. Credentials come
    from the AWS SDK's default chain, as for the warehouse.
    """
    conf = {
        "spark.sql.streaming.checkpointFileManagerClass": CHECKPOINT_FILE_MANAGER,
        "spark.hadoop.fs.s3a.aws.credentials.provider": AWS_DEFAULT_CREDENTIALS,
        "spark.hadoop.fs.s3a.endpoint.region": settings.s3_region,
    }
    if settings.iceberg_s3_endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = settings.iceberg_s3_endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(
            settings.iceberg_s3_endpoint.startswith("https")
        ).lower()
    return conf


def secret_conf_keys(conf: dict[str, str]) -> set[str]:
    """Keys whose values must never be logged."""
    return {k for k in conf if k.endswith((".password", "jaas.config"))}


def spark_submit_command(settings: Settings, job: Path = JOB_FILE) -> list[str]:
    """A complete ``spark-submit`` command line for ``make drain`` and tools."""
    command = [
        spark_submit_binary(),
        "--master",
        settings.spark_master,
        "--name",
        f"cdc_to_iceberg:{settings.iceberg_table}",
        "--jars",
        ",".join(spark_jars(settings)),
    ]
    for key, value in spark_conf(settings).items():
        if key == "spark.driver.memory":
            command += ["--driver-memory", value]
            continue
        command += ["--conf", f"{key}={value}"]
    command.append(str(job))
    return command


def spark_submit_binary() -> str:
    """``spark-submit`` of the installed pyspark (the venv's ``bin``)."""
    candidate = Path(sys.executable).parent / "spark-submit"
    return str(candidate) if candidate.exists() else "spark-submit"


def spark_env() -> dict[str, str]:
    """Environment for a ``spark-submit`` child: the venv's Python and pyspark's home."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    env = dict(os.environ)
    if spec is not None and spec.origin:
        env.setdefault("SPARK_HOME", str(Path(spec.origin).parent))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env
