"""How a kafka-python client is built: a refusal fails at once, a slow broker is waited for.

The factory stands in for kafka-python's client classes: it logs what a failed
connection logs and times out as their bootstrap does (the real broker's
refusal is in tests/integration/test_security.py).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from cdc_iceberg import kafka_offsets
from cdc_iceberg.settings import Settings

SASL = Settings(
    kafka_bootstrap_servers="127.0.0.1:9093",
    kafka_security_protocol="SASL_PLAINTEXT",
    kafka_sasl_mechanism="SCRAM-SHA-512",
    kafka_sasl_username="cdc",
    kafka_sasl_password="not-this-one",
)


class Broker:
    """Each bootstrap logs the given lines and times out, until one that succeeds."""

    def __init__(self, *attempts: list[str] | None) -> None:
        self.attempts = list(attempts)
        self.waits: list[int] = []

    def __call__(self, **config: Any) -> str:
        self.waits.append(config["bootstrap_timeout_ms"])
        lines = self.attempts.pop(0)
        if lines is None:
            return "client"
        for line in lines:
            logging.getLogger("kafka.net.connection").warning(line)
        raise KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:9093")


REFUSED = "<BrokerConnection node_id=bootstrap-0>: SaslAuthenticationFailedError: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"  # noqa: E501
CLOSED = "Bootstrap connection to bootstrap-0 failed: KafkaConnectionError: socket disconnected"


def test_a_refused_login_fails_after_the_first_short_wait() -> None:
    broker = Broker([REFUSED])
    with pytest.raises(kafka_offsets.KafkaAccessError, match="SASL authentication failed"):
        kafka_offsets._connect(SASL, broker)
    assert broker.waits == [kafka_offsets.FIRST_BOOTSTRAP_MS]
    assert kafka_offsets.FIRST_BOOTSTRAP_MS < kafka_offsets.BOOTSTRAP_TIMEOUT_MS


def test_a_broker_still_starting_is_waited_for_up_to_the_whole_timeout() -> None:
    broker = Broker(["Bootstrap connection to bootstrap-0 failed: Connection refused"], None)
    assert kafka_offsets._connect(SASL, broker) == "client"
    assert broker.waits == [
        kafka_offsets.FIRST_BOOTSTRAP_MS,
        kafka_offsets.BOOTSTRAP_TIMEOUT_MS - kafka_offsets.FIRST_BOOTSTRAP_MS,
    ]


def test_closed_connections_are_a_refusal_only_after_the_whole_timeout() -> None:
    # a broker still starting also closes connections during the SASL exchange
    broker = Broker([CLOSED], [CLOSED])
    with pytest.raises(kafka_offsets.KafkaAccessError, match="closed every connection"):
        kafka_offsets._connect(SASL, broker)
    assert len(broker.waits) == 2
    assert sum(broker.waits) == kafka_offsets.BOOTSTRAP_TIMEOUT_MS


def test_a_broker_that_never_answers_times_out_as_before() -> None:
    broker = Broker(["Connection refused"], ["Connection refused"])
    with pytest.raises(KafkaTimeoutError, match="Unable to bootstrap"):
        kafka_offsets._connect(SASL, broker)
    assert len(broker.waits) == 2


def test_the_password_never_reaches_the_reason() -> None:
    broker = Broker([REFUSED])
    with pytest.raises(kafka_offsets.KafkaAccessError) as error:
        kafka_offsets._connect(SASL, broker)
    assert SASL.kafka_sasl_password not in str(error.value)
