"""Kafka offset bookkeeping: end offsets, the consumer group, lag.

Spark's Kafka source never commits to a consumer group. The job therefore
commits each batch's end offsets to ``KAFKA_CONSUMER_GROUP`` itself, after the
Iceberg commit, so that ``kafka-consumer-groups --describe`` and the lag sensor
show real progress. The pure functions here (lag, offset JSON) are unit tested;
the rest talks to a real broker through kafka-python.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from cdc_iceberg.settings import Settings

Offsets = dict[int, int]
"""Partition number -> offset (the next offset to read)."""


class TopicMissingError(RuntimeError):
    """The configured topic does not exist on the broker."""


class KafkaAccessError(RuntimeError):
    """The broker refused the client: wrong credentials, untrusted certificate, wrong protocol.

    Not retriable: repeating the same credentials cannot succeed.
    """

    retriable = False


# -- pure logic -------------------------------------------------------


def lag(end: Mapping[int, int], committed: Mapping[int, int]) -> dict[int, int]:
    """Records per partition between ``committed`` and ``end``.

    A partition the group never committed lags by its whole end offset.
    """
    return {p: max(0, end[p] - committed.get(p, 0)) for p in sorted(end)}


def lag_with_floor(
    end: Mapping[int, int], committed: Mapping[int, int], beginning: Mapping[int, int]
) -> dict[int, int]:
    """Lag where a never-committed partition counts from its first retained offset."""
    return {p: max(0, end[p] - committed.get(p, beginning.get(p, 0))) for p in sorted(end)}


def to_spark_json(topic: str, offsets: Mapping[int, int]) -> str:
    """``{"topic": {"0": 12}}``: Spark's ``startingOffsets`` form (-2 earliest, -1 latest)."""
    return json.dumps({topic: {str(p): int(o) for p, o in sorted(offsets.items())}})


def from_spark_json(text: str, topic: str) -> Offsets:
    """Inverse of :func:`to_spark_json` for one topic."""
    data = json.loads(text)
    return {int(p): int(o) for p, o in data.get(topic, {}).items()}


def read_tasks(partitions: int, cores: int, configured: int = 0) -> int | None:
    """Spark's ``minPartitions`` for reading a micro-batch, or None for one task per partition.

    A batch is read, parsed and grouped in one task per Kafka partition, so a
    topic with fewer partitions than Spark has cores leaves cores idle (a
    one-partition topic, Debezium's default, is parsed by one core), and 3
    partitions on 2 cores end with one task running alone. Unless
    ``configured`` (``KAFKA_MIN_PARTITIONS``) says otherwise, each partition's
    range is split in equal parts so the tasks are a multiple of both: 1
    partition on 2 cores is read by 2 tasks, 3 on 2 by 6, 3 on 8 by 24. Where
    that multiple is more than 4 times the larger of the two, nothing is split.
    """
    if configured > 0:
        return configured
    if partitions <= 0 or cores <= 1 or partitions % cores == 0:
        return None
    tasks = math.lcm(partitions, cores)
    return tasks if tasks <= 4 * max(partitions, cores) else None


def covers(table: Mapping[int, int], batch_end: Mapping[int, int]) -> bool:
    """True when every partition of a batch ends at or before what the table holds."""
    return all(table.get(p, -1) >= end for p, end in batch_end.items())


# -- broker access ----------------------------------------------------


class _ConnectionFailures(logging.Handler):
    """Collects why kafka-python's connections to the bootstrap servers failed.

    kafka-python retries a refused login or TLS handshake until its bootstrap
    timeout and then reports only "Unable to bootstrap"; the reasons are in its
    log records, which this handler keeps (messages only, never arguments).
    """

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.messages.append(record.getMessage())


def explain_refusal(settings: Settings, messages: list[str], persistent: bool = True) -> str | None:
    """A clear reason when failed connections show the broker refused these settings.

    A broker that closes every SASL connection without an answer is taken for a
    refused login only when that went on through more than one bootstrap
    attempt (``persistent``): kafka-python often sees the close of a refused
    login before the refusal itself, but one attempt's closes may also be a
    broker going down.
    """
    where = f"Kafka at {settings.kafka_bootstrap_servers}"
    text = "\n".join(messages)
    if "SaslAuthenticationFailed" in text or "Authentication failed" in text:
        return (
            f"{where}: SASL authentication failed for user {settings.kafka_sasl_username!r} "
            f"({settings.kafka_sasl_mechanism}): check the user name and password "
            "(KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD, or the Airflow connection's login "
            "and password)"
        )
    if "UnsupportedSaslMechanism" in text:
        return f"{where}: the broker does not offer SASL mechanism {settings.kafka_sasl_mechanism}"
    if "Handshake failed" in text or "CERTIFICATE_VERIFY_FAILED" in text:
        detail = next((m for m in messages if "Handshake failed" in m), "")
        return (
            f"{where}: TLS handshake failed; is KAFKA_SSL_CAFILE="
            f"{settings.kafka_ssl_cafile or '(system CAs)'} the CA that signed the broker's "
            f"certificate, and does the certificate name this host? {detail[-300:]}"
        )
    sasl = settings.kafka_security_protocol.startswith("SASL")
    if persistent and sasl and "socket disconnected" in text:
        # the broker closes the connection after a failed SASL exchange without a response
        return (
            f"{where}: the broker closed every connection during SASL authentication of user "
            f"{settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism}): "
            "authentication failed; check the user name and password (KAFKA_SASL_USERNAME / "
            "KAFKA_SASL_PASSWORD, or the Airflow connection's login and password) and that "
            f"the listener speaks {settings.kafka_security_protocol}"
        )
    return None


# How long a client waits for the bootstrap servers to answer at all, as kafka-python
# does by default, asked in attempts this long: a refused login or TLS handshake is
# reported after the first attempt (connections closed during SASL after the second)
# instead of at the end of the wait.
BOOTSTRAP_TIMEOUT_S = 30.0
BOOTSTRAP_ATTEMPT_S = 5.0


def _connect(settings: Settings, factory: Any, **kwargs: Any) -> Any:
    """Build a kafka-python client; a refused login or TLS handshake raises KafkaAccessError."""
    from kafka.errors import KafkaTimeoutError

    failures = _ConnectionFailures()
    loggers = [logging.getLogger("kafka.net.manager"), logging.getLogger("kafka.net.connection")]
    for logger in loggers:
        logger.addHandler(failures)
    deadline = time.monotonic() + BOOTSTRAP_TIMEOUT_S
    attempts = 0
    try:
        while True:
            attempts += 1
            attempt = min(BOOTSTRAP_ATTEMPT_S, max(deadline - time.monotonic(), 0.1))
            try:
                return closed_on_failure(factory)(
                    **settings.kafka_python_config(),
                    bootstrap_timeout_ms=int(attempt * 1000),
                    **kwargs,
                )
            except KafkaTimeoutError as error:
                waited_out = time.monotonic() >= deadline
                reason = explain_refusal(settings, failures.messages, attempts > 1 or waited_out)
                if reason is not None:
                    raise KafkaAccessError(reason) from error
                if waited_out:
                    raise
    finally:
        for logger in loggers:
            logger.removeHandler(failures)


@functools.cache
def closed_on_failure(factory: type) -> type:
    """``factory``, closing what it started when its construction fails.

    A kafka-python client starts its IO thread before it bootstraps and leaves it
    running when the bootstrap fails: every refused or timed-out attempt would
    leave a thread (and its sockets) behind in a long-lived process such as
    Airflow's.
    """

    class Client(factory):  # type: ignore[misc, valid-type]
        def __init__(self, **configs: Any) -> None:
            try:
                super().__init__(**configs)
            except BaseException:
                # the network client's connections, then its IO thread
                for part, method in (("_client", "close"), ("_net", "stop")):
                    with contextlib.suppress(Exception):
                        getattr(getattr(self, part), method)()
                raise

    Client.__name__ = Client.__qualname__ = factory.__name__
    return Client


@contextmanager
def consumer(settings: Settings, group_id: str | None = None, **extra: Any) -> Iterator[Any]:
    """A short-lived kafka-python consumer that never subscribes nor auto-commits."""
    from kafka import KafkaConsumer

    client = _connect(
        settings,
        KafkaConsumer,
        group_id=group_id,
        enable_auto_commit=False,
        isolation_level="read_committed",
        request_timeout_ms=30_000,
        **extra,
    )
    try:
        yield client
    finally:
        client.close()


@contextmanager
def admin(settings: Settings) -> Iterator[Any]:
    from kafka import KafkaAdminClient

    client = _connect(settings, KafkaAdminClient, request_timeout_ms=30_000)
    try:
        yield client
    finally:
        client.close()


@contextmanager
def producer(settings: Settings, **extra: Any) -> Iterator[Any]:
    """A kafka-python producer that writes with ``acks=all`` (the generator's and the
    benchmarks' writes); ``extra`` adds to or overrides its configuration."""
    from kafka import KafkaProducer

    client = _connect(settings, KafkaProducer, **{"acks": "all", **extra})
    try:
        yield client
    finally:
        client.close()


def topics(settings: Settings) -> set[str]:
    """The names of the broker's topics (Kafka's internal ones left out)."""
    with consumer(settings) as client:
        return {t for t in client.topics() if not t.startswith("__")}


def _partitions(client: Any, topic: str) -> list[Any]:
    from kafka import TopicPartition

    partitions = client.partitions_for_topic(topic)
    if not partitions:
        raise TopicMissingError(f"Kafka topic {topic!r} does not exist (or has no partitions)")
    return [TopicPartition(topic, p) for p in sorted(partitions)]


def end_offsets(settings: Settings, topic: str | None = None) -> Offsets:
    """The next offset to be written per partition (the last stable offset)."""
    topic = topic or settings.kafka_topic
    with consumer(settings) as client:
        result = client.end_offsets(_partitions(client, topic))
    return {tp.partition: off for tp, off in result.items()}


def beginning_offsets(settings: Settings, topic: str | None = None) -> Offsets:
    """The first offset still retained per partition."""
    topic = topic or settings.kafka_topic
    with consumer(settings) as client:
        result = client.beginning_offsets(_partitions(client, topic))
    return {tp.partition: off for tp, off in result.items()}


def offsets_for_timestamp(settings: Settings, timestamp_ms: int) -> Offsets:
    """Per partition, the first offset whose record time is at or after ``timestamp_ms``."""
    with consumer(settings) as client:
        parts = _partitions(client, settings.kafka_topic)
        found = client.offsets_for_times({tp: timestamp_ms for tp in parts})
        ends = client.end_offsets(parts)
    return {
        tp.partition: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in parts
    }


def committed_offsets(settings: Settings, group: str | None = None) -> Offsets:
    """What the consumer group has committed for the topic (absent partitions omitted)."""
    group = group or settings.kafka_consumer_group
    result = _retrying(lambda client: client.list_group_offsets({group: None}), settings).get(
        group, {}
    )
    return {
        tp.partition: meta.offset
        for tp, meta in result.items()
        if tp.topic == settings.kafka_topic and meta.offset is not None and meta.offset >= 0
    }


def commit_group_offsets(
    settings: Settings, offsets: Mapping[int, int], group: str | None = None
) -> None:
    """Set the group's committed offsets (the group must have no active members)."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    if not offsets:
        return
    group = group or settings.kafka_consumer_group
    payload = {
        TopicPartition(settings.kafka_topic, p): OffsetAndMetadata(int(o), "", -1)
        for p, o in offsets.items()
    }

    def commit(client: Any) -> dict[Any, Any]:
        errors = client.alter_group_offsets(group, payload)
        for error in errors.values():
            # the group's coordinator moved (its broker died) or is being loaded: the
            # broker answers per partition instead of failing the request; ask again
            if error.__name__ != "NoError" and getattr(error, "retriable", False):
                raise error()
        return dict(errors)

    errors = _retrying(commit, settings)
    failed = {tp.partition: err for tp, err in errors.items() if err.__name__ != "NoError"}
    if failed:
        raise RuntimeError(f"committing offsets to group {group!r} failed: {failed}")


def _retrying(call: Any, settings: Settings, attempts: int = 20, pause: float = 1.0) -> Any:
    """Run ``call(admin)``, retrying Kafka's retriable errors (e.g. a coordinator being elected)."""
    from kafka.errors import KafkaError

    last: Exception | None = None
    for _ in range(attempts):
        try:
            with admin(settings) as client:
                return call(client)
        except KafkaError as error:
            if not getattr(error, "retriable", False):
                raise
            last = error
            time.sleep(pause)
    assert last is not None
    raise last


def delete_group_offsets(settings: Settings, group: str | None = None) -> None:
    """Forget the group's offsets for the topic."""
    group = group or settings.kafka_consumer_group
    with consumer(settings) as client:
        parts = _partitions(client, settings.kafka_topic)
    with admin(settings) as client:
        try:
            client.delete_group_offsets(group, parts)
        except Exception as error:  # a group that never committed has nothing to delete
            if "GroupIdNotFound" not in type(error).__name__:
                raise


def ensure_topic(
    settings: Settings,
    partitions: int = 3,
    configs: Mapping[str, str] | None = None,
    replication: int = -1,
) -> None:
    """Create the topic if it does not exist (local stack and tests), with ``replication``
    copies of each partition (-1: the brokers' ``default.replication.factor``)."""
    from kafka.errors import TopicAlreadyExistsError

    with admin(settings) as client, contextlib.suppress(TopicAlreadyExistsError):
        client.create_topics(
            {
                settings.kafka_topic: {
                    "num_partitions": partitions,
                    "replication_factor": replication,
                    "configs": dict(configs or {}),
                }
            },
            wait_for_metadata=True,
        )
