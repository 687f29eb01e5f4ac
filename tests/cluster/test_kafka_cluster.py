"""Three Kafka brokers: the drain stays exact when a broker dies and when leadership moves.

A KRaft cluster of three nodes (each a broker and a controller) runs on
loopback, started here and stopped at the end. The topic keeps three copies of
each partition and takes a write once two have it (``min.insync.replicas=2``),
as a production cluster would. The drain is spark-submitted in its own process.
``make test`` drains such a topic; the broker killed mid-drain, brought back and
made leader again while the next drain runs is a fault scenario (``make
test-faults``). Every check is against the reference fold of the records sent
(``tests/invariants.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import describe, kill_job, start_job, wait_job
from infra import assert_still_running, free_port_pair, own_pipeline, wait_for_batches
from invariants import check_invariants, snapshot_ids
from reference_fold import Record
from support import run_job, send

from cdc_iceberg import kafka_offsets
from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.local.kafka_broker import KafkaCluster
from cdc_iceberg.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.integration

PARTITIONS = 3  # each broker leads one


@pytest.fixture(scope="module")
def cluster(work_dir: Path) -> Iterator[KafkaCluster]:
    ports: list[int] = []
    while len(ports) < 3:
        port = free_port_pair()
        if not {port, port + 1} & {q for p in ports for q in (p, p + 1)}:
            ports.append(port)
    # KAFKA_DATA_DIR of `python -m cdc_iceberg.local.kafka_broker status --brokers 3`; not
    # the session broker's directory (work_dir / "kafka"), which this fixture removes at the end
    data_dir = work_dir / "kafka-three"
    nodes = KafkaCluster(data_dir=data_dir / "cluster", ports=ports, heap="384m")
    env = {
        **os.environ,
        "KAFKA_DATA_DIR": str(data_dir),
        "KAFKA_BOOTSTRAP_SERVERS": ",".join(b.bootstrap_servers for b in nodes.brokers),
    }

    def status() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "cdc_iceberg.local.kafka_broker", "status", "--brokers"]
        return subprocess.run(
            [*command, "3"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
        )

    try:
        nodes.start()
        running = status()
        assert running.returncode == 0 and "running" in running.stdout, running
        yield nodes
    finally:
        try:
            nodes.stop()
            stopped = status()
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    # after the cleanup, and only when the test itself passed: a failure here hides none
    assert stopped.returncode == 1 and "stopped" in stopped.stdout, stopped


def partition_state(settings: Settings) -> dict[int, tuple[int, list[int]]]:
    """Leader and in-sync replicas of each partition of the pipeline's topic, as the
    broker asked knows them (empty while a new topic has not reached it)."""
    with kafka_offsets.admin(settings) as client:
        (topic,) = client.describe_topics([settings.kafka_topic])
    return {
        p["partition_index"]: (p["leader_id"], sorted(p["isr_nodes"])) for p in topic["partitions"]
    }


def group_coordinator(settings: Settings) -> int:
    """The broker coordinating the pipeline's consumer group: the leader of the partition
    of ``__consumer_offsets`` that Kafka hashes the group to (Java's String.hashCode,
    over the 4 partitions the cluster's brokers configure)."""
    code = 0
    for char in settings.kafka_consumer_group:
        code = (31 * code + ord(char)) & 0xFFFFFFFF
    partition = (code & 0x7FFFFFFF) % 4
    deadline = time.monotonic() + 60
    while True:  # the topic is made with the cluster's first committed group offsets
        with kafka_offsets.admin(settings) as client:
            (topic,) = client.describe_topics(["__consumer_offsets"])
        leaders = [p["leader_id"] for p in topic["partitions"] if p["partition_index"] == partition]
        if leaders and leaders[0] >= 0:
            return int(leaders[0])
        assert time.monotonic() < deadline, f"no coordinator for the group: {topic}"
        time.sleep(1)


def wait_in_sync(settings: Settings, replicas: int, timeout: float = 120) -> None:
    """Every partition of the topic has ``replicas`` copies in sync. A broker learns of a
    new topic from the controller a moment after its creation returns."""
    deadline = time.monotonic() + timeout
    state = partition_state(settings)
    while len(state) < PARTITIONS or any(len(isr) < replicas for _, isr in state.values()):
        assert time.monotonic() < deadline, f"replicas not back in sync: {state}"
        time.sleep(1)
        state = partition_state(settings)


def elect_preferred_leaders(settings: Settings) -> None:
    """Every partition of the topic back to its preferred (first) replica."""
    with kafka_offsets.admin(settings) as client:
        client.elect_leaders(0, [settings.kafka_topic])  # 0: preferred


def history(settings: Settings, seed: int, events: int) -> list[Record]:
    source = ArticleSource(seed=seed, partitions=PARTITIONS)
    return send(settings, source.random_history(events, 150, snapshot_rows=40), PARTITIONS)


def drain_through(settings: Settings, fault: object) -> None:
    """One drain; ``fault()`` once it has committed a batch; it must complete on its own."""
    job = start_job(settings)
    try:
        assert_still_running(job, wait_for_batches(job, 1))
        fault()  # type: ignore[operator]
        result = wait_job(job, timeout=900)
    except BaseException:
        kill_job(job)
        raise
    assert result.returncode == 0, describe(result)


def three_copy_topic(cluster: KafkaCluster, catalog_settings: Settings, work_dir: Path) -> Settings:
    """A pipeline of its own whose topic keeps three copies of each partition, all in sync."""
    settings = own_pipeline(
        catalog_settings, work_dir, cluster.bootstrap_servers, max_offsets_per_trigger=150
    )
    kafka_offsets.ensure_topic(settings, partitions=PARTITIONS, replication=3)
    wait_in_sync(settings, 3, timeout=60)
    return settings


def test_the_drain_of_a_topic_kept_on_three_brokers_is_exact(
    cluster: KafkaCluster, catalog_settings: Settings, work_dir: Path
) -> None:
    settings = three_copy_topic(cluster, catalog_settings, work_dir)
    assert sorted(leader for leader, _ in partition_state(settings).values()) == [1, 2, 3], (
        "each broker leads one partition, so the drain reads from all three"
    )
    records = history(settings, seed=4, events=400)
    result = run_job(settings, timeout=900)
    assert result.returncode == 0, describe(result)
    check_invariants(settings, records)


@pytest.mark.faults
def test_a_broker_killed_mid_drain_and_leadership_moved_keep_the_table_exact(
    cluster: KafkaCluster, catalog_settings: Settings, work_dir: Path
) -> None:
    settings = three_copy_topic(cluster, catalog_settings, work_dir)
    records = history(settings, seed=5, events=600)

    # the broker coordinating the drain's consumer group, and leading a partition of its
    # topic, dies (kill -9) while the drain runs
    job_started = start_job(settings)
    try:
        assert_still_running(job_started, wait_for_batches(job_started, 2))
        victim_id = group_coordinator(settings)
        led = [p for p, (leader, _) in partition_state(settings).items() if leader == victim_id]
        assert led, f"broker {victim_id} leads no partition: {partition_state(settings)}"
        victim = cluster.broker(victim_id)
        before = snapshot_ids(settings)
        victim.kill()
        result = wait_job(job_started, timeout=900)
    except BaseException:
        kill_job(job_started)
        raise
    assert result.returncode == 0, describe(result)
    assert all(partition_state(settings)[p][0] != victim_id for p in led)
    assert group_coordinator(settings) != victim_id
    check_invariants(settings, records, before)

    # the broker comes back; leadership moves back to it while the next drain runs
    victim.wait_exited()
    victim.start()
    wait_in_sync(settings, 3)
    records += history(settings, seed=6, events=300)
    drain_through(settings, lambda: elect_preferred_leaders(settings))
    assert [partition_state(settings)[p][0] for p in led] == [victim_id] * len(led), (
        "the election moved the partition back to its preferred leader"
    )
    check_invariants(settings, records, before)
