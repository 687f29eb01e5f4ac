"""Kafka-side faults while the real drain runs: the broker killed, frozen, cut off; aborted
transactions.

Each scenario starts a broker of its own (a loopback KRaft broker on free ports,
stopped at the end), so killing or freezing it disturbs no other test. The
drain is spark-submitted in its own process (``harness.start_job``); the fault
is injected once it has committed its first batch. The drain then either
completes, or fails cleanly: it names its error and leaves the table equal to
the fold of the offsets it records. The rerun on the healed broker is exact
(``invariants.check_invariants``).
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import kill_job, run_job, start_job, wait_job
from infra import (
    assert_still_running,
    free_port_pair,
    own_pipeline,
    settle,
    wait_for_batches,
)
from invariants import assert_rerun_changes_nothing, snapshot_ids
from proxy import CuttingProxy
from reference_fold import Record
from support import read_rows, send

from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.local.kafka_broker import KafkaBroker
from cdc_iceberg.settings import Settings

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ALL = ["I1", "I2", "I3", "I4", "I5"]


@pytest.fixture
def own_broker(work_dir: Path) -> Iterator[Callable[..., KafkaBroker]]:
    """Start brokers of the scenario's own; every one is stopped and removed at the end."""
    started: list[KafkaBroker] = []

    def make(port: int | None = None, advertised_port: int | None = None) -> KafkaBroker:
        broker = KafkaBroker(
            data_dir=work_dir / f"broker-{uuid.uuid4().hex[:8]}",
            port=port or free_port_pair(),
            advertised_port=advertised_port,
        )
        started.append(broker)
        broker.start()
        return broker

    yield make
    for broker in started:
        broker.resume()  # a frozen broker cannot act on SIGTERM
        broker.stop()
        shutil.rmtree(broker.data_dir, ignore_errors=True)


def _history(settings: Settings, seed: int, events: int = 800) -> list[Record]:
    source = ArticleSource(seed=seed, partitions=2)
    messages = source.random_history(events, 150, snapshot_rows=60, redelivery_share=0.03)
    return send(settings, messages, 2)


def test_broker_killed_and_restarted_mid_drain(
    own_broker: Callable[..., KafkaBroker],
    catalog_settings: Settings,
    work_dir: Path,
    scenario_report: Callable[..., None],
) -> None:
    name = "Kafka broker kill -9 and restart mid-drain"
    scenario_report(
        name=name,
        injected=(
            "kill -9 of the broker after the drain's first batch; restarted on the same "
            "data dir and port 5 s later"
        ),
        invariants=[*ALL, "I6"],
    )
    broker = own_broker()
    settings = own_pipeline(
        catalog_settings, work_dir, broker.bootstrap_servers, max_offsets_per_trigger=150
    )
    records = _history(settings, seed=71)

    job = start_job(settings)
    try:
        batches_before = wait_for_batches(job, 1)
        assert_still_running(job, batches_before)
        before = snapshot_ids(settings)
        killed_at = time.monotonic()
        broker.kill()
        broker.wait_exited()
        time.sleep(5)
        broker.start()
        down_s = time.monotonic() - killed_at
        first = wait_job(job, timeout=1500)
    except BaseException:
        kill_job(job)
        raise

    counts = settle(settings, records, first, before)
    assert_rerun_changes_nothing(settings, lambda: run_job(settings))
    scenario_report(
        name=name,
        counts={
            "broker down s": round(down_s, 1),
            "batches before fault": batches_before,
            **counts,
        },
    )


def test_broker_frozen_for_a_minute_mid_drain(
    own_broker: Callable[..., KafkaBroker],
    catalog_settings: Settings,
    work_dir: Path,
    scenario_report: Callable[..., None],
) -> None:
    name = "Kafka broker frozen (SIGSTOP) for 60 s mid-drain"
    scenario_report(
        name=name,
        injected="SIGSTOP of the broker after the drain's first batch, SIGCONT 60 s later",
        invariants=ALL,
    )
    broker = own_broker()
    settings = own_pipeline(
        catalog_settings, work_dir, broker.bootstrap_servers, max_offsets_per_trigger=150
    )
    records = _history(settings, seed=72)

    job = start_job(settings)
    try:
        batches_before = wait_for_batches(job, 1)
        assert_still_running(job, batches_before)
        before = snapshot_ids(settings)
        broker.pause()
        try:
            time.sleep(60)
        finally:
            broker.resume()
        first = wait_job(job, timeout=1500)
    except BaseException:
        kill_job(job)
        raise

    counts = settle(settings, records, first, before)
    scenario_report(name=name, counts={"batches before fault": batches_before, **counts})


def test_connections_cut_by_a_proxy_mid_drain(
    own_broker: Callable[..., KafkaBroker],
    catalog_settings: Settings,
    work_dir: Path,
    scenario_report: Callable[..., None],
) -> None:
    name = "every Kafka connection reset (TCP RST) 4 times mid-drain"
    scenario_report(
        name=name,
        injected=(
            "the broker advertises a loopback proxy; after the drain's first batch the "
            "proxy resets every open connection 4 times, 5 s apart"
        ),
        invariants=[*ALL, "I6"],
    )
    port = free_port_pair()
    with CuttingProxy(upstream_port=port) as proxy:
        own_broker(port=port, advertised_port=proxy.port)
        settings = own_pipeline(
            catalog_settings, work_dir, proxy.address, max_offsets_per_trigger=150
        )
        records = _history(settings, seed=73)

        job = start_job(settings)
        dropped = []
        try:
            batches_before = wait_for_batches(job, 1)
            assert_still_running(job, batches_before)
            before = snapshot_ids(settings)
            for _ in range(4):
                if job.process.poll() is not None:
                    break
                dropped.append(proxy.cut())
                time.sleep(5)
            first = wait_job(job, timeout=1500)
        except BaseException:
            kill_job(job)
            raise
        assert dropped and sum(dropped) > 0, "the proxy dropped no connection during the drain"

        counts = settle(settings, records, first, before)
        assert_rerun_changes_nothing(settings, lambda: run_job(settings))
        scenario_report(
            name=name,
            counts={
                "batches before fault": batches_before,
                "cuts": len(dropped),
                "connections reset": sum(dropped),
                "connections through proxy": proxy.accepted,
                **counts,
            },
        )


def _send_transaction(
    settings: Settings, source: ArticleSource, events: int, keys: int, *, abort: bool
) -> list[Record]:
    return send(
        settings,
        source.random_history(events, keys),
        1,
        transactional_id="tx-doomed" if abort else "tx-cdc",
        abort=abort,
    )


def test_aborted_transactions_mid_drain_never_land(
    own_broker: Callable[..., KafkaBroker],
    catalog_settings: Settings,
    work_dir: Path,
    scenario_report: Callable[..., None],
) -> None:
    name = "Kafka transactions aborted before, during and at the end of a drain"
    scenario_report(
        name=name,
        injected=(
            "aborted transactions (newer changes of the same keys) between committed ones; "
            "a transaction held open while the drain runs, then aborted; more committed and "
            "aborted transactions during the drain; the topic ends with an aborted one"
        ),
        invariants=[*ALL, "no aborted record in any table"],
    )
    from kafka import KafkaProducer

    broker = own_broker()
    # one partition: aborted batches and their markers sit between committed records,
    # and small micro-batches start and end inside them
    settings = own_pipeline(
        catalog_settings, work_dir, broker.bootstrap_servers, max_offsets_per_trigger=40
    )
    source = ArticleSource(seed=75, partitions=1)
    records = send(
        settings, source.random_history(150, 40, snapshot_rows=20), 1, transactional_id="tx-cdc"
    )
    aborted = _send_transaction(settings, source, 60, 40, abort=True)
    records += _send_transaction(settings, source, 150, 40, abort=False)

    # a transaction left open: read_committed readers stop before it until it ends
    # (its timeout outlasts the drain: the coordinator would abort it by itself after 60 s)
    held = KafkaProducer(
        transactional_id="tx-held",
        enable_idempotence=True,
        transaction_timeout_ms=900_000,
        **settings.kafka_python_config(),
    )
    held.init_transactions()
    held.begin_transaction()
    held_messages = source.random_history(30, 40)
    held_futures = [
        held.send(settings.kafka_topic, key=m.key, value=m.value, partition=0)
        for m in held_messages
    ]
    held.flush()
    held_records = [
        Record(f.get(timeout=30).partition, f.get(timeout=30).offset, m.key, m.value)
        for f, m in zip(held_futures, held_messages, strict=True)
    ]
    records_after_held: list[Record] = []

    def write_during_drain() -> None:
        for _ in range(3):
            aborted.extend(_send_transaction(settings, source, 30, 40, abort=True))
            records_after_held.extend(_send_transaction(settings, source, 40, 40, abort=False))

    job = start_job(settings)
    writer = threading.Thread(target=write_during_drain, name="tx-writer")
    try:
        assert_still_running(job, wait_for_batches(job, 1))
        writer.start()
        writer.join(timeout=120)
        held.abort_transaction()
        held.close()
        first = wait_job(job, timeout=1500)
    except BaseException:
        kill_job(job)
        raise
    finally:
        if writer.is_alive():
            writer.join(timeout=120)
    assert first.returncode == 0, first.stderr[-4000:]
    # the held transaction blocked the drain's view of everything written after it
    aborted.extend(held_records)
    records += records_after_held
    aborted += _send_transaction(settings, source, 30, 40, abort=True)

    rerun = run_job(settings)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    counts = settle(settings, records, rerun)

    doomed = {(r.partition, r.offset) for r in aborted}
    for table in (settings.iceberg_table, settings.tombstone_table, settings.iceberg_dlq_table):
        landed = {
            (row["kafka_partition"], row["kafka_offset"]) for row in read_rows(settings, table)
        }
        assert not landed & doomed, f"aborted records in {table}: {sorted(landed & doomed)[:5]}"
    scenario_report(name=name, counts={"aborted records": len(doomed), **counts})
