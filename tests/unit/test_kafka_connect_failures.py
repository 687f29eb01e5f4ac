"""A client that cannot reach Kafka or is refused: the wait, what it leaves, what it says.

Real kafka-python clients against a loopback port nothing listens on; the
reading of their failure messages is pure logic.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from kafka.errors import KafkaTimeoutError

from cdc_iceberg import kafka_offsets
from cdc_iceberg.settings import Settings


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _io_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kafka-io")]


@pytest.mark.parametrize(
    "client", [kafka_offsets.consumer, kafka_offsets.admin, kafka_offsets.producer]
)
def test_an_unreachable_broker_is_waited_for_then_leaves_no_thread(
    client: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_offsets, "BOOTSTRAP_TIMEOUT_S", 3.0)
    monkeypatch.setattr(kafka_offsets, "BOOTSTRAP_ATTEMPT_S", 1.0)
    settings = Settings.from_env().replace(kafka_bootstrap_servers=f"127.0.0.1:{_closed_port()}")
    before = set(_io_threads())
    started = time.monotonic()
    with pytest.raises(KafkaTimeoutError), client(settings):  # type: ignore[operator]
        pass
    # no refusal to report: the attempts go on for the whole wait
    assert time.monotonic() - started >= 3.0
    # every attempt's IO thread is stopped
    assert set(_io_threads()) - before == set()


def test_a_refusal_is_named_at_once_and_a_silent_close_only_when_it_persists() -> None:
    settings = Settings.from_env().replace(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="cdc",
        kafka_sasl_password="secretPw1",
    )
    refused = ["Connection failed: SaslAuthenticationFailedError: Authentication failed"]
    closed = ["Bootstrap connection to bootstrap-0 failed: socket disconnected"]
    for persistent in (False, True):
        reason = kafka_offsets.explain_refusal(settings, refused, persistent)
        assert reason is not None and "SASL authentication failed for user 'cdc'" in reason
        assert "secretPw1" not in reason
    # a broker going down closes connections too: a refusal only when it persists
    assert kafka_offsets.explain_refusal(settings, closed, persistent=False) is None
    reason = kafka_offsets.explain_refusal(settings, closed, persistent=True)
    assert reason is not None and "closed every connection" in reason
    # without SASL a closed connection is no login problem
    plain = settings.replace(kafka_security_protocol="PLAINTEXT")
    assert kafka_offsets.explain_refusal(plain, closed, persistent=True) is None
