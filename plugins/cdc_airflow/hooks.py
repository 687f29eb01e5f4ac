"""Hooks: the Kafka connection and the Iceberg tables as the product's Settings."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from cdc_iceberg.settings import Settings


class CdcKafkaHook(BaseHook):
    """Kafka as configured by an Airflow connection, falling back to the environment.

    The connection (type ``kafka``) carries the bootstrap servers in ``host``
    (``host1:9092,host2:9092``, or host and port), the SASL user and password in
    ``login``/``password`` (Airflow masks the password in every log), and
    ``security_protocol``, ``sasl_mechanism`` and ``ssl_cafile`` in its extra.
    Without such a connection, the ``KAFKA_*`` environment settings apply.
    """

    conn_name_attr = "kafka_conn_id"
    default_conn_name = "kafka_default"
    conn_type = "kafka"
    hook_name = "Kafka (CDC)"

    def __init__(self, kafka_conn_id: str = default_conn_name, settings: Settings | None = None):
        super().__init__()
        self.kafka_conn_id = kafka_conn_id
        self._base = settings

    def settings(self) -> Settings:
        """The product's Settings with Kafka access taken from the connection, if any.

        The SASL password is registered with Airflow's secrets masker whichever
        way it came (connection or ``KAFKA_SASL_PASSWORD``), so task logs show
        ``***`` in its place.
        """
        settings = self._settings()
        if settings.kafka_sasl_password:
            from airflow.sdk.log import mask_secret

            mask_secret(settings.kafka_sasl_password, "kafka_sasl_password")
        return settings

    def table_settings(self, table: str | None = None) -> Settings:
        """:meth:`settings` for a table of ``CDC_PIPELINES_FILE`` (its source or Iceberg
        name; by default the table of ``KAFKA_TOPIC``), with its own topic and checkpoint.

        A name the file does not configure is refused (``PipelinesError``), so a
        form's text never reaches Spark unchecked.
        """
        from cdc_iceberg import kafka_offsets, pipelines

        base = self.settings()
        config = pipelines.load(base.pipelines_file)
        return config.settings_for(base, table, lambda: kafka_offsets.topics(base))

    def configured_tables(self) -> list[str]:
        """The Iceberg tables of ``CDC_PIPELINES_FILE``, topics matching its pattern included."""
        from cdc_iceberg import kafka_offsets, pipelines

        base = self.settings()
        config = pipelines.load(base.pipelines_file)
        topics = kafka_offsets.topics(base) if config.topics else ()
        return [t.iceberg_table for t in config.resolve(topics)]

    def _settings(self) -> Settings:
        base = self._base or Settings.from_env()
        try:
            conn = self.get_connection(self.kafka_conn_id)
        except Exception:  # no such connection: the environment is the configuration
            return base
        extra: dict[str, Any] = conn.extra_dejson or {}
        servers = extra.get("bootstrap_servers") or conn.host or base.kafka_bootstrap_servers
        if conn.port and conn.host and "," not in conn.host and ":" not in conn.host:
            servers = f"{conn.host}:{conn.port}"
        return base.replace(
            kafka_bootstrap_servers=servers,
            kafka_security_protocol=extra.get("security_protocol", base.kafka_security_protocol),
            kafka_sasl_mechanism=extra.get("sasl_mechanism", base.kafka_sasl_mechanism),
            kafka_sasl_username=conn.login or base.kafka_sasl_username,
            kafka_sasl_password=conn.password or base.kafka_sasl_password,
            kafka_ssl_cafile=extra.get("ssl_cafile", base.kafka_ssl_cafile),
        )

    def test_connection(self) -> tuple[bool, str]:
        from cdc_iceberg import kafka_offsets

        try:
            ends = kafka_offsets.end_offsets(self.settings())
        except Exception as error:
            return False, str(error)
        return True, f"topic has {len(ends)} partitions"


def settings_for_table(hook: CdcKafkaHook, table: str | None) -> Settings:
    """``hook.table_settings(table)``, an unknown table failing the task without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from cdc_iceberg.pipelines import PipelinesError

    try:
        return hook.table_settings(table or None)
    except PipelinesError as error:
        raise AirflowFailException(str(error)) from None
