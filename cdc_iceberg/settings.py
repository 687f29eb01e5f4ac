"""The one place that reads configuration.

Every setting comes from an environment variable with a documented default; the
DAGs, the Spark job, the plugins and the tools take a :class:`Settings` and
never read ``os.environ`` themselves. The names and defaults of the Kafka and
checkpoint settings are those of the original design document.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from cdc_iceberg.schema import SEQUENCE_ORDERS

PROJECT_ROOT = Path(__file__).resolve().parent.parent

EventFormat = Literal["envelope", "flattened"]
TruncatePolicy = Literal["dead-letter", "clear"]

# ASCII only, at most 128 characters, and \Z rather than $ (which also matches before "\n")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")

WRITE_MODES = ("copy-on-write", "merge-on-read")

CATALOG_TYPES = ("jdbc", "rest")

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class SettingsError(ValueError):
    """A setting has a value the product cannot use."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Configuration of one pipeline (one topic into one table)."""

    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_topic: str = "neuronews.public.articles"
    kafka_consumer_group: str = "cdc_to_iceberg"
    checkpoint_location: str = "/tmp/checkpoints/cdc_to_iceberg"
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = 200_000
    # Spark tasks reading a micro-batch (Spark's minPartitions); 0: see kafka_offsets.read_tasks
    kafka_min_partitions: int = 0

    iceberg_catalog_name: str = "lakehouse"
    # jdbc: a SQL database (SQLite, Postgres) in ICEBERG_CATALOG_URI; rest: an Iceberg REST
    # catalog server at ICEBERG_CATALOG_URI (http://...)
    iceberg_catalog_type: str = "jdbc"
    iceberg_catalog_uri: str = "sqlite:////tmp/iceberg/catalog.db"
    iceberg_warehouse: str = "file:///tmp/iceberg/warehouse"
    # an S3-compatible store's http(s) URL (MinIO...): path-style requests to it; empty: AWS S3.
    # Credentials are never settings: every client takes them from its environment
    # (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or the instance's role) itself.
    iceberg_s3_endpoint: str = ""
    # the bucket's region (AWS_REGION), given to every S3 client
    s3_region: str = "us-east-1"
    iceberg_table: str = "neuronews.articles"
    iceberg_dlq_table: str = ""
    iceberg_buckets: int = 16
    # how MERGE writes the live and tombstone tables (see docs/layout.md)
    iceberg_write_mode: str = "copy-on-write"

    pipeline_id: str = ""
    # the tables mirrored and their declared schemas (cdc_iceberg.pipelines)
    pipelines_file: str = str(PROJECT_ROOT / "pipelines.yaml")
    # tables one run drains at the same time (jobs.drain_tables)
    parallel_tables: int = 4
    event_format: EventFormat = "envelope"
    truncate_policy: TruncatePolicy = "dead-letter"
    sequence_order: str = "ts_ms"
    tombstone_retention_hours: int = 24 * 7
    # validation fails when the table's newest change is older than this while records
    # wait in Kafka (a quiet source is never stale); None: freshness is only reported
    max_staleness_s: int | None = None
    # the drain compacts the tombstone table once a batch leaves it with more data files
    # than this (each append writes a file per bucket it touches); 0: only maintenance does
    tombstone_compact_files: int = 256
    spark_master: str = "local[*]"
    # the Python that executors start (spark.pyspark.python), as the workers know it;
    # "" for the driver's own (a local master, or workers with the same Python)
    spark_executor_python: str = ""
    spark_shuffle_partitions: int = 4
    # the driver's heap (spark.driver.memory): a drain's plans and the tables' metadata
    spark_driver_memory: str = "1g"
    jars_dir: str = str(PROJECT_ROOT / "build" / "jars" / "spark")
    # class-data archive of a local driver's JVM: auto, off or a path (cdc_iceberg.class_archive)
    spark_class_archive: str = "auto"

    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = dataclasses.field(default="", repr=False)
    kafka_ssl_cafile: str = ""

    maintenance_snapshot_retention_hours: int = 72
    maintenance_retain_last: int = 20
    maintenance_target_file_mb: int = 128
    maintenance_orphan_age_hours: int = 72

    # crash injection for the test suite (see jobs/batch_writer.failpoint)
    failpoint: str = ""

    def __post_init__(self) -> None:
        if not self.iceberg_dlq_table:
            object.__setattr__(self, "iceberg_dlq_table", self.iceberg_table + "_dlq")
        if not self.pipeline_id:
            object.__setattr__(self, "pipeline_id", self.kafka_consumer_group)
        for name in ("iceberg_table", "iceberg_dlq_table"):
            _check_table_name(name, getattr(self, name))
        if not _IDENTIFIER.match(self.iceberg_catalog_name):
            raise SettingsError(
                f"ICEBERG_CATALOG_NAME={self.iceberg_catalog_name!r} is not a plain identifier"
            )
        if self.event_format not in ("envelope", "flattened"):
            raise SettingsError(
                f"CDC_EVENT_FORMAT={self.event_format!r}: expected 'envelope' or 'flattened'"
            )
        if self.truncate_policy not in ("dead-letter", "clear"):
            raise SettingsError(
                f"CDC_TRUNCATE_POLICY={self.truncate_policy!r}: expected 'dead-letter' or 'clear'"
            )
        if self.sequence_order not in SEQUENCE_ORDERS:
            raise SettingsError(
                f"CDC_SEQUENCE={self.sequence_order!r}: expected one of "
                f"{', '.join(sorted(SEQUENCE_ORDERS))}"
            )
        if self.iceberg_write_mode not in WRITE_MODES:
            raise SettingsError(
                f"ICEBERG_WRITE_MODE={self.iceberg_write_mode!r}: expected one of "
                f"{', '.join(WRITE_MODES)}"
            )
        if self.max_offsets_per_trigger is not None and self.max_offsets_per_trigger <= 0:
            raise SettingsError("MAX_OFFSETS_PER_TRIGGER must be a positive number of records")
        if self.parallel_tables < 1:
            raise SettingsError("CDC_PARALLEL_TABLES must be at least 1")
        if self.tombstone_compact_files < 0:
            raise SettingsError(
                "CDC_TOMBSTONE_COMPACT_FILES must be 0 (maintenance only) or a number of files"
            )
        if self.kafka_min_partitions < 0:
            raise SettingsError("KAFKA_MIN_PARTITIONS must be 0 (automatic) or a number of tasks")
        if self.iceberg_s3_endpoint and urlparse(self.iceberg_s3_endpoint).scheme not in (
            "http",
            "https",
        ):
            raise SettingsError(
                f"ICEBERG_S3_ENDPOINT={self.iceberg_s3_endpoint!r}: expected an http:// or "
                "https:// URL"
            )
        scheme = urlparse(self.iceberg_catalog_uri).scheme
        if self.iceberg_catalog_type not in CATALOG_TYPES:
            raise SettingsError(
                f"ICEBERG_CATALOG_TYPE={self.iceberg_catalog_type!r}: expected one of "
                f"{', '.join(CATALOG_TYPES)}"
            )
        if self.iceberg_catalog_type == "rest":
            if scheme not in ("http", "https"):
                raise SettingsError(
                    "ICEBERG_CATALOG_URI must be the http:// or https:// URL of the REST "
                    f"catalog with ICEBERG_CATALOG_TYPE=rest, got scheme {scheme!r}"
                )
        elif not scheme.startswith(("sqlite", "postgresql")):
            raise SettingsError(
                "ICEBERG_CATALOG_URI must be a sqlite:// or postgresql:// URL, "
                f"got scheme {scheme!r}"
            )

    # -- derived values -------------------------------------------------

    @property
    def sequence(self) -> tuple[str, ...]:
        """The sequence columns in the order they are compared (CDC_SEQUENCE)."""
        return SEQUENCE_ORDERS[self.sequence_order]

    @property
    def tombstone_table(self) -> str:
        """Where deletes are remembered, next to the live table."""
        return self.iceberg_table + "_tombstones"

    @property
    def history_table(self) -> str:
        """Every version of every row, for a table that keeps history (pipelines.yaml)."""
        return self.iceberg_table + "_history"

    def qualified(self, table: str) -> str:
        """``catalog.namespace.table`` as Spark SQL names it."""
        return f"{self.iceberg_catalog_name}.{table}"

    @property
    def jdbc_catalog_url(self) -> str:
        """The JDBC URL Iceberg's JdbcCatalog needs, from the SQLAlchemy-style URI."""
        return jdbc_url(self.iceberg_catalog_uri)

    def ensure_local_dirs(self) -> None:
        """Create the folders of a local SQLite catalog and ``file://`` warehouse."""
        uri = self.iceberg_catalog_uri
        if self.iceberg_catalog_type == "jdbc" and uri.startswith("sqlite") and ":///" in uri:
            Path(self.iceberg_catalog_uri.split(":///", 1)[1]).parent.mkdir(
                parents=True, exist_ok=True
            )
        if self.iceberg_warehouse.startswith("file://"):
            Path(urlparse(self.iceberg_warehouse).path).mkdir(parents=True, exist_ok=True)

    def check_kafka_security(self) -> None:
        """Refuse Kafka security settings that cannot work, naming the variable to fix."""
        protocol = self.kafka_security_protocol
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise SettingsError(
                f"KAFKA_SECURITY_PROTOCOL={protocol!r}: expected one of "
                f"{', '.join(KAFKA_SECURITY_PROTOCOLS)}"
            )
        if protocol.startswith("SASL"):
            if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
                raise SettingsError(
                    f"KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism!r}: with {protocol}, "
                    f"expected one of {', '.join(KAFKA_SASL_MECHANISMS)}"
                )
            if not self.kafka_sasl_username or not self.kafka_sasl_password:
                raise SettingsError(
                    f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and "
                    "KAFKA_SASL_PASSWORD (or the Airflow connection's login and password)"
                )
        if self.kafka_ssl_cafile and not Path(self.kafka_ssl_cafile).is_file():
            raise SettingsError(f"KAFKA_SSL_CAFILE={self.kafka_ssl_cafile!r} is not a file")

    def kafka_client_config(self) -> dict[str, str]:
        """Security settings as Kafka client properties (Java names).

        The ``sasl.jaas.config`` value holds the password: Kafka clients print
        it as ``[hidden]`` and Spark redacts it (see spark_conf), never log it.
        """
        self.check_kafka_security()
        config: dict[str, str] = {"security.protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            module = (
                "org.apache.kafka.common.security.plain.PlainLoginModule"
                if self.kafka_sasl_mechanism == "PLAIN"
                else "org.apache.kafka.common.security.scram.ScramLoginModule"
            )
            config["sasl.jaas.config"] = (
                f'{module} required username="{_jaas_quote(self.kafka_sasl_username)}" '
                f'password="{_jaas_quote(self.kafka_sasl_password)}";'
            )
        if self.kafka_ssl_cafile:
            config["ssl.truststore.type"] = "PEM"
            config["ssl.truststore.location"] = self.kafka_ssl_cafile
        return config

    def kafka_python_config(self) -> dict[str, object]:
        """The same security settings as kafka-python keyword arguments."""
        self.check_kafka_security()
        config: dict[str, object] = {
            "bootstrap_servers": self.kafka_bootstrap_servers.split(","),
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol.startswith("SASL"):
            config["sasl_mechanism"] = self.kafka_sasl_mechanism
            config["sasl_plain_username"] = self.kafka_sasl_username
            config["sasl_plain_password"] = self.kafka_sasl_password
        if self.kafka_ssl_cafile:
            config["ssl_cafile"] = self.kafka_ssl_cafile
        return config

    def to_env(self) -> dict[str, str]:
        """The environment from which :meth:`from_env` rebuilds these settings (child processes)."""
        env: dict[str, str] = {}
        for field in dataclasses.fields(self):
            name = _RENAMED.get(field.name.upper(), field.name.upper())
            value = getattr(self, field.name)
            env[name] = "unlimited" if value is None else str(value)
        return env

    def replace(self, **changes: object) -> Settings:
        """A copy with some settings changed (derived defaults recomputed)."""
        values = dataclasses.asdict(self)
        if "iceberg_table" in changes and "iceberg_dlq_table" not in changes:
            values["iceberg_dlq_table"] = ""
        if "kafka_consumer_group" in changes and "pipeline_id" not in changes:
            values["pipeline_id"] = ""
        values.update(changes)
        return Settings(**values)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from the environment (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            name = field.name.upper()
            if name in _RENAMED:
                name = _RENAMED[name]
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[field.name] = _convert(field.name, name, raw)
        return cls(**values)  # type: ignore[arg-type]


_RENAMED = {
    "PIPELINE_ID": "CDC_PIPELINE_ID",
    "PIPELINES_FILE": "CDC_PIPELINES_FILE",
    "PARALLEL_TABLES": "CDC_PARALLEL_TABLES",
    "EVENT_FORMAT": "CDC_EVENT_FORMAT",
    "TRUNCATE_POLICY": "CDC_TRUNCATE_POLICY",
    "SEQUENCE_ORDER": "CDC_SEQUENCE",
    "TOMBSTONE_RETENTION_HOURS": "CDC_TOMBSTONE_RETENTION_HOURS",
    "MAX_STALENESS_S": "CDC_MAX_STALENESS_S",
    "TOMBSTONE_COMPACT_FILES": "CDC_TOMBSTONE_COMPACT_FILES",
    "JARS_DIR": "CDC_JARS_DIR",
    "FAILPOINT": "CDC_FAILPOINT",
    "S3_REGION": "AWS_REGION",
}

_INT_FIELDS = {
    "kafka_min_partitions",
    "parallel_tables",
    "tombstone_retention_hours",
    "tombstone_compact_files",
    "spark_shuffle_partitions",
    "iceberg_buckets",
    "maintenance_snapshot_retention_hours",
    "maintenance_retain_last",
    "maintenance_target_file_mb",
    "maintenance_orphan_age_hours",
}


def _convert(field: str, env_name: str, raw: str) -> object:
    if field in ("max_offsets_per_trigger", "max_staleness_s"):
        if raw.lower() in ("none", "unlimited", "0"):
            return None
        return _int(env_name, raw)
    if field in _INT_FIELDS:
        return _int(env_name, raw)
    return raw


def _int(env_name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{env_name}={raw!r} is not a whole number") from None


def _check_table_name(setting: str, value: str) -> None:
    parts = value.split(".")
    if len(parts) != 2 or not all(_IDENTIFIER.match(p) for p in parts):
        raise SettingsError(
            f"{setting.upper()}={value!r}: expected 'namespace.table' made of letters, digits and _"
        )


def _jaas_quote(value: str) -> str:
    """Escape a value for a double-quoted JAAS option (backslash and quote)."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def check_identifier(value: str, what: str = "identifier") -> str:
    """Return ``value`` if it is a plain SQL identifier, else raise SettingsError.

    ASCII letters, digits and ``_``, not starting with a digit, at most 128
    characters: nothing that could end a quoted name or start a statement.
    """
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise SettingsError(f"{what} {value!r} must be letters, digits and _ only")
    return value


def jdbc_url(catalog_uri: str) -> str:
    """``sqlite:////abs/x.db`` -> ``jdbc:sqlite:/abs/x.db``; ``postgresql://h/db`` -> JDBC form."""
    parsed = urlparse(catalog_uri)
    if parsed.scheme.startswith("sqlite"):
        # sqlite:////abs/path -> path '//abs/path'; sqlite:///rel -> '/rel' (relative)
        path = catalog_uri.split(":///", 1)[1] if ":///" in catalog_uri else ""
        if not path:
            raise SettingsError(f"ICEBERG_CATALOG_URI {catalog_uri!r} names no database file")
        return f"jdbc:sqlite:{path}"
    host = parsed.hostname or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    return f"jdbc:postgresql://{host}{port}{parsed.path}"


def catalog_credentials(catalog_uri: str) -> tuple[str, str]:
    """User and password embedded in a ``postgresql://user:pw@host/db`` URI, if any."""
    parsed = urlparse(catalog_uri)
    return parsed.username or "", parsed.password or ""
