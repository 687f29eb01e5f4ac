"""Sensors: consumer lag of the pipeline's group, read from the broker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from cdc_airflow import metrics
from cdc_airflow.hooks import CdcKafkaHook, settings_for_table


class KafkaLagSensor(BaseSensorOperator):
    """Wait until the consumer group's lag on every partition of a table's topic is at
    most ``max_lag`` (the table of ``KAFKA_TOPIC`` unless ``table`` names another).

    Lag is the partition's end offset minus the group's committed offset, the
    figure ``kafka-consumer-groups --describe`` shows. The job commits the
    group after every Iceberg commit, so this is the pipeline's real backlog.
    It reschedules between pokes instead of holding a worker slot.
    """

    template_fields: Sequence[str] = ("max_lag", "consumer_group", "table")

    def __init__(
        self,
        *,
        max_lag: int = 1000,
        consumer_group: str | None = None,
        table: str | None = None,
        kafka_conn_id: str = CdcKafkaHook.default_conn_name,
        mode: str = "reschedule",
        poke_interval: float = 30,
        timeout: float = 15 * 60,
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode, poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.max_lag = max_lag
        self.consumer_group = consumer_group
        self.table = table
        self.kafka_conn_id = kafka_conn_id

    def poke(self, context: Any) -> PokeReturnValue:
        from cdc_iceberg import kafka_offsets
        from cdc_iceberg.checks import evaluate_lag

        settings = settings_for_table(CdcKafkaHook(self.kafka_conn_id), self.table)
        group = self.consumer_group or settings.kafka_consumer_group
        end = kafka_offsets.end_offsets(settings)
        committed = kafka_offsets.committed_offsets(settings, group)
        report = evaluate_lag(end, committed, int(self.max_lag))
        self.log.info("%s: %s", group, report.message)
        metrics.emit_gauges(settings.iceberg_table, {"lag": report.total})
        value = {
            "table": settings.iceberg_table,
            "group": group,
            "lag": {str(p): n for p, n in report.per_partition.items()},
            "total": report.total,
        }
        return PokeReturnValue(is_done=report.ok, xcom_value=value)
