"""The warehouse and the streaming checkpoint on an S3-compatible object store.

moto's S3 server runs on loopback as a process of its own (started here,
stopped at the end): the S3 REST API over HTTP, path-style, as MinIO serves it
in ``docker-compose.yaml``. The drain is spark-submitted with the warehouse at
``s3://<bucket>/warehouse`` (Iceberg's S3FileIO) and its checkpoint at
``s3a://<bucket>/checkpoints/<pipeline>`` (Hadoop's S3A with Spark's
abortable-stream checkpoint file manager), and the credentials only in its
environment. Tables are read back with pyiceberg through the same store
(pyarrow's S3 file system) and checked against the reference fold
(``tests/invariants.py``).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import describe, keep_output, kill_job, run_job, start_job
from infra import assert_still_running, free_port_pair, own_pipeline, wait_for_batches
from invariants import assert_rerun_changes_nothing, check_invariants, snapshot_ids
from reference_fold import Record
from support import files_containing, send, spark_conf_with_logs

from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.local.object_store import ObjectStore
from cdc_iceberg.settings import Settings

pytestmark = pytest.mark.integration

BUCKET = "lake"
PARTITIONS = 2
ACCESS_KEY = "AKIA" + secrets.token_hex(8).upper()
SECRET_KEY = "s3Secret" + secrets.token_hex(16)
# S3A, Iceberg's AWS client and the SDK's credential lookup at DEBUG: none may print the key
S3_CLIENT_LOGS = {
    "org.apache.hadoop.fs.s3a": "debug",
    "org.apache.iceberg.aws": "debug",
    "software.amazon.awssdk.auth": "debug",
}


@pytest.fixture(scope="module")
def logs(work_dir: Path) -> Path:
    """Where every output of this module's runs is kept (searched for the secret key)."""
    path = work_dir / "object-store-logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def object_store(work_dir: Path, logs: Path) -> Iterator[ObjectStore]:
    """An S3 server on a free loopback port with one bucket; credentials in the environment.

    The drain's child processes inherit them (as a container's environment gives
    them); pyiceberg and boto3 in this process read them too. Every drain of the
    module keeps a Spark event log and logs its S3 clients at DEBUG, for
    :func:`test_no_log_or_output_holds_the_secret_key`.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARK_CONF_DIR", str(spark_conf_with_logs(logs, S3_CLIENT_LOGS)))
        patch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        patch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        patch.setenv("AWS_REGION", "us-east-1")
        patch.delenv("AWS_SESSION_TOKEN", raising=False)
        patch.delenv("AWS_PROFILE", raising=False)
        store = ObjectStore(data_dir=work_dir / "object-store", port=free_port_pair())
        try:
            store.start()
            store.create_bucket(BUCKET)
            yield store
        finally:
            store.stop()
            left = store.running_pid()
            shutil.rmtree(store.data_dir, ignore_errors=True)
        assert left is None, "the store's process is gone"


@pytest.fixture
def on_s3(
    object_store: ObjectStore, kafka_broker: Any, catalog_settings: Settings, work_dir: Path
) -> Settings:
    """A pipeline of its own whose tables and checkpoint live in the object store."""
    settings = own_pipeline(
        catalog_settings,
        work_dir,
        kafka_broker.bootstrap_servers,
        iceberg_catalog_uri=f"sqlite:///{work_dir}/s3-catalog.db",
        iceberg_warehouse=f"s3://{BUCKET}/warehouse",
        iceberg_s3_endpoint=object_store.endpoint,
    )
    name = settings.iceberg_table.split(".")[1]
    return settings.replace(checkpoint_location=f"s3a://{BUCKET}/checkpoints/{name}")


def history(settings: Settings, seed: int, events: int, keys: int = 120) -> list[Record]:
    source = ArticleSource(seed=seed, partitions=PARTITIONS)
    return send(settings, source.random_history(events, keys, snapshot_rows=30), PARTITIONS)


def checkpoint_keys(store: ObjectStore, settings: Settings) -> list[str]:
    prefix = settings.checkpoint_location.removeprefix(f"s3a://{BUCKET}/").rstrip("/") + "/"
    return store.keys(BUCKET, prefix)


def drain(settings: Settings, logs: Path, name: str) -> None:
    result = run_job(settings, timeout=600)
    keep_output(result, logs, name)
    assert result.returncode == 0, describe(result)


def assert_stored_in_object_store(store: ObjectStore, settings: Settings) -> None:
    """The table's files and the checkpoint's logs are objects of the bucket, not local files."""
    table = settings.iceberg_table.replace(".", "/")
    objects = store.keys(BUCKET, f"warehouse/{table}/")
    assert any(k.endswith(".metadata.json") for k in objects), objects[:10]
    assert any(k.endswith(".parquet") for k in objects), objects[:10]
    listed = checkpoint_keys(store, settings)
    name = settings.checkpoint_location.rstrip("/").rsplit("/", 1)[1]
    assert any(f"/{name}/commits/" in k for k in listed), listed[:10]
    assert any(f"/{name}/offsets/" in k for k in listed), listed[:10]


def test_drain_to_object_store_equals_the_fold_and_a_rerun_changes_nothing(
    on_s3: Settings, object_store: ObjectStore, logs: Path
) -> None:
    records = history(on_s3, seed=31, events=500)
    drain(on_s3, logs, "s3-drain")
    assert_stored_in_object_store(object_store, on_s3)
    counts = check_invariants(on_s3, records)
    assert counts["committed_records"] == len(records)
    # the checkpoint is written in place: no temporary file left next to a log entry
    assert not [k for k in checkpoint_keys(object_store, on_s3) if ".tmp" in k]

    def rerun() -> Any:
        result = run_job(on_s3, timeout=600)
        keep_output(result, logs, "s3-rerun")
        return result

    assert_rerun_changes_nothing(on_s3, rerun)


@pytest.mark.faults  # long: make test-faults
def test_driver_killed_mid_drain_then_a_rerun_is_exact(
    on_s3: Settings, object_store: ObjectStore, logs: Path
) -> None:
    settings = on_s3.replace(max_offsets_per_trigger=120)
    records = history(settings, seed=32, events=900, keys=200)
    before = snapshot_ids(settings)

    job = start_job(settings)
    try:
        assert_still_running(job, wait_for_batches(job, 1))
    except BaseException:
        kill_job(job)
        raise
    kill_job(job)  # kill -9 of the driver's whole process group
    out, err = job.output()
    job.close()
    (logs / "s3-killed.stdout").write_text(out)
    (logs / "s3-killed.stderr").write_text(err)
    partial = check_invariants(settings, records, before, complete=False)
    assert 0 < partial["committed_records"] < len(records), partial

    drain(settings, logs, "s3-after-kill")
    counts = check_invariants(settings, records, before)
    assert counts["committed_records"] == len(records)


@pytest.mark.faults  # long: make test-faults
def test_lost_checkpoint_resumes_from_the_table(
    on_s3: Settings, object_store: ObjectStore, logs: Path
) -> None:
    records = history(on_s3, seed=33, events=300)
    drain(on_s3, logs, "s3-first")
    before = snapshot_ids(on_s3)
    check_invariants(on_s3, records, before)

    prefix = on_s3.checkpoint_location.removeprefix(f"s3a://{BUCKET}/").rstrip("/") + "/"
    assert object_store.delete_prefix(BUCKET, prefix) > 0
    assert checkpoint_keys(object_store, on_s3) == []
    records += history(on_s3, seed=34, events=200)

    drain(on_s3, logs, "s3-lost-checkpoint")
    # I3: the new commits start where the table ended, none re-reads what it holds
    counts = check_invariants(on_s3, records, before)
    assert counts["committed_records"] == len(records)
    assert checkpoint_keys(object_store, on_s3), "the drain started a new checkpoint"


def test_no_log_or_output_holds_the_secret_key(
    on_s3: Settings,
    object_store: ObjectStore,
    logs: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Every output of this module's drains (a drain of its own when run alone), their
    Spark event logs and the S3 server's log are searched for the secret key."""
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET_KEY  # what every drain is given
    if not list(logs.glob("*.stderr")):
        records = history(on_s3, seed=35, events=200)
        drain(on_s3, logs, "s3-secret")
        check_invariants(on_s3, records)

    outputs = sorted(logs.glob("*.stderr"))
    for path in outputs:
        text = path.read_text()
        # the drain used the object store and logged its S3 clients at DEBUG
        assert "spark.hadoop.fs.s3a.endpoint" in text, path
        assert "DEBUG org.apache.hadoop.fs.s3a" in text, path
    events = [p for p in (logs / "events").rglob("*") if p.is_file() and p.stat().st_size]
    assert len(events) >= len(outputs), (events, outputs)
    event_text = b"".join(p.read_bytes() for p in events)
    assert b"SparkListenerApplicationStart" in event_text
    assert b"AbortableStreamBasedCheckpointFileManager" in event_text
    assert b"org.apache.iceberg.aws.s3.S3FileIO" in event_text
    # the secret is in the drains' environment and nowhere else
    assert SECRET_KEY not in "".join(p.read_text() for p in outputs)

    captured = capfd.readouterr()
    (logs / "test.out").write_text(captured.out + captured.err)
    roots = [logs, object_store.log_file]
    assert files_containing(roots, SECRET_KEY) == []
