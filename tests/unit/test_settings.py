from __future__ import annotations

import pytest

from cdc_iceberg.settings import Settings, SettingsError, check_identifier, jdbc_url
from cdc_iceberg.spark_conf import kafka_source_options, spark_conf


def test_defaults_are_the_design_documents() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_bootstrap_servers == "localhost:9092"
    assert settings.kafka_topic == "neuronews.public.articles"
    assert settings.kafka_consumer_group == "cdc_to_iceberg"
    assert settings.checkpoint_location == "/tmp/checkpoints/cdc_to_iceberg"
    assert settings.starting_offsets == "earliest"
    assert settings.iceberg_dlq_table == "neuronews.articles_dlq"
    assert settings.pipeline_id == "cdc_to_iceberg"


def test_environment_overrides_and_types() -> None:
    settings = Settings.from_env(
        {
            "KAFKA_TOPIC": "db.public.things",
            "MAX_OFFSETS_PER_TRIGGER": "5000",
            "ICEBERG_TABLE": "lake.things",
            "CDC_EVENT_FORMAT": "flattened",
            "ICEBERG_BUCKETS": "8",
            "KAFKA_MIN_PARTITIONS": "12",
            "CDC_MAX_STALENESS_S": "300",
            "SPARK_DRIVER_MEMORY": "3g",
        }
    )
    assert settings.kafka_topic == "db.public.things"
    assert settings.max_offsets_per_trigger == 5000
    assert settings.iceberg_dlq_table == "lake.things_dlq"
    assert settings.tombstone_table == "lake.things_tombstones"
    assert settings.event_format == "flattened"
    assert settings.iceberg_buckets == 8
    assert settings.kafka_min_partitions == 12
    assert settings.max_staleness_s == 300
    assert Settings.from_env({}).max_staleness_s is None
    assert spark_conf(settings)["spark.driver.memory"] == "3g"
    assert spark_conf(Settings.from_env({}))["spark.driver.memory"] == "1g"
    assert (
        Settings.from_env({"MAX_OFFSETS_PER_TRIGGER": "unlimited"}).max_offsets_per_trigger is None
    )


def test_round_trip_through_the_environment() -> None:
    settings = Settings(
        kafka_topic="a.b",
        iceberg_table="x.y",
        max_offsets_per_trigger=None,
        kafka_sasl_password="s3cret",
    )
    assert Settings.from_env(settings.to_env()) == settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ICEBERG_TABLE": "articles"}, "namespace.table"),
        ({"ICEBERG_TABLE": "a.b; DROP TABLE x"}, "namespace.table"),
        ({"ICEBERG_CATALOG_NAME": "lake-house"}, "plain identifier"),
        ({"MAX_OFFSETS_PER_TRIGGER": "lots"}, "whole number"),
        ({"CDC_EVENT_FORMAT": "avro"}, "envelope"),
        ({"ICEBERG_CATALOG_URI": "mysql://h/db"}, "sqlite"),
        ({"KAFKA_MIN_PARTITIONS": "-1"}, "KAFKA_MIN_PARTITIONS"),
    ],
)
def test_bad_values_are_refused_with_the_variable_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_jdbc_url_from_sqlalchemy_uri() -> None:
    assert jdbc_url("sqlite:////abs/path/catalog.db") == "jdbc:sqlite:/abs/path/catalog.db"
    assert jdbc_url("postgresql://u:p@db:5433/iceberg") == "jdbc:postgresql://db:5433/iceberg"


def test_secrets_stay_out_of_repr() -> None:
    settings = Settings(kafka_sasl_password="hunter2")
    assert "hunter2" not in repr(settings)


def test_identifier_check() -> None:
    assert check_identifier("word_count") == "word_count"
    with pytest.raises(SettingsError):
        check_identifier("x`; DROP")


def test_sequence_order_from_the_environment() -> None:
    assert Settings().sequence == ("ts_ms", "lsn", "kafka_partition", "kafka_offset")
    by_lsn = Settings.from_env({"CDC_SEQUENCE": "lsn"})
    assert by_lsn.sequence == ("lsn", "ts_ms", "kafka_partition", "kafka_offset")
    assert by_lsn.to_env()["CDC_SEQUENCE"] == "lsn"
    with pytest.raises(SettingsError, match="CDC_SEQUENCE"):
        Settings.from_env({"CDC_SEQUENCE": "wallclock"})


def test_write_mode_from_the_environment() -> None:
    assert Settings().iceberg_write_mode == "copy-on-write"
    mor = Settings.from_env({"ICEBERG_WRITE_MODE": "merge-on-read"})
    assert mor.iceberg_write_mode == "merge-on-read"
    assert mor.to_env()["ICEBERG_WRITE_MODE"] == "merge-on-read"
    with pytest.raises(SettingsError, match="ICEBERG_WRITE_MODE"):
        Settings.from_env({"ICEBERG_WRITE_MODE": "merge-on-write"})


def test_spark_reads_the_topic_committed_with_headers_and_the_security_settings() -> None:
    settings = Settings(
        kafka_topic="db.public.things",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="cdc",
        kafka_sasl_password="s3cret",
    )
    options = kafka_source_options(settings)
    assert options["subscribe"] == "db.public.things"
    assert options["kafka.isolation.level"] == "read_committed"
    assert options["includeHeaders"] == "true"  # the key changes' old and new keys
    assert options["kafka.security.protocol"] == "SASL_SSL"
    assert "s3cret" in options["kafka.sasl.jaas.config"]


def test_tombstone_compaction_limit() -> None:
    assert Settings.from_env({}).tombstone_compact_files == 256
    assert Settings.from_env({"CDC_TOMBSTONE_COMPACT_FILES": "0"}).tombstone_compact_files == 0
    with pytest.raises(SettingsError, match="CDC_TOMBSTONE_COMPACT_FILES"):
        Settings.from_env({"CDC_TOMBSTONE_COMPACT_FILES": "-1"})
