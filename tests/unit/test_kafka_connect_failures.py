"""A client that cannot reach Kafka: the wait, and what it leaves behind.

Real kafka-python clients against a loopback port nothing listens on.
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


@pytest.mark.parametrize("client", [kafka_offsets.consumer, kafka_offsets.admin])
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
