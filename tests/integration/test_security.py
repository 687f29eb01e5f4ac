"""Kafka over SASL_SSL with SCRAM-SHA-512: job, sensor, hook and reset, and no leaked secret.

A broker of its own (TLS with a CA made for the test, SCRAM users created at
format time) serves one pipeline. The real job is spark-submitted with the
credentials in its environment; the lag sensor, the Kafka hook and the reset
(operator and DAG) read them from an Airflow connection. The table must equal
the reference fold, and no log of the run may contain the password. A wrong
password must fail soon, and say that authentication failed.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from reference_fold import fold
from support import (
    assert_table_equals_fold,
    files_containing,
    prepare_airflow_db,
    send,
    spark_conf_with_logs,
)

from cdc_iceberg import kafka_offsets
from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.local.kafka_broker import BrokerSecurity, KafkaBroker, make_tls
from cdc_iceberg.settings import PROJECT_ROOT, Settings
from cdc_iceberg.spark_conf import spark_env

# the Kafka clients print their configuration at INFO: the password must not be in it
KAFKA_CLIENT_LOGS = {"org.apache.kafka.clients": "info"}

pytestmark = pytest.mark.integration

USER = "cdc"
PASSWORD = "cdcPw" + secrets.token_hex(12)
BROKER_PASSWORD = "brokerPw" + secrets.token_hex(12)
CONN_ID = "kafka_secure"


def _free_port_pair() -> int:
    """A loopback port whose successor (the controller listener) is free too."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port >= 65000:
            continue
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of loopback ports")


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A KRaft broker whose client listener is SASL_SSL (SCRAM-SHA-512), stopped after."""
    root = tmp_path_factory.mktemp("secure-kafka")
    security = BrokerSecurity(
        tls=make_tls(root / "tls"), users={"admin": BROKER_PASSWORD, USER: PASSWORD}
    )
    broker = KafkaBroker(data_dir=root / "kafka", port=_free_port_pair(), security=security)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def secure(secure_broker: KafkaBroker, catalog_settings: Settings, work_dir: Path) -> Settings:
    """A fresh pipeline on the secure broker, credentials included."""
    assert secure_broker.security is not None
    name = "s" + uuid.uuid4().hex[:10]
    return catalog_settings.replace(
        kafka_bootstrap_servers=secure_broker.bootstrap_servers,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=USER,
        kafka_sasl_password=PASSWORD,
        kafka_ssl_cafile=str(secure_broker.security.tls.ca_file),
        kafka_topic=f"neuronews.public.{name}",
        kafka_consumer_group=f"group_{name}",
        iceberg_table=f"neuronews.{name}",
        checkpoint_location=str(work_dir / "checkpoints" / name),
    )


def _without_credentials(settings: Settings) -> Settings:
    return settings.replace(
        kafka_security_protocol="PLAINTEXT",
        kafka_sasl_mechanism="",
        kafka_sasl_username="",
        kafka_sasl_password="",
        kafka_ssl_cafile="",
    )


def _connection(settings: Settings, password: str) -> str:
    """An Airflow connection (``AIRFLOW_CONN_*`` JSON form) to the secure broker."""
    host, port = settings.kafka_bootstrap_servers.rsplit(":", 1)
    return json.dumps(
        {
            "conn_type": "kafka",
            "host": host,
            "port": int(port),
            "login": settings.kafka_sasl_username,
            "password": password,
            "extra": {
                "security_protocol": settings.kafka_security_protocol,
                "sasl_mechanism": settings.kafka_sasl_mechanism,
                "ssl_cafile": settings.kafka_ssl_cafile,
            },
        }
    )


def run_job(
    settings: Settings, logs: Path, name: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """spark-submit the drain with the settings (credentials too) in its environment."""
    env = spark_env()
    env.update(settings.to_env())
    env["SPARK_CONF_DIR"] = str(spark_conf_with_logs(logs, KAFKA_CLIENT_LOGS))
    result = subprocess.run(
        [sys.executable, "-m", "cdc_iceberg.submit"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    (logs / f"{name}.stdout").write_text(result.stdout)
    (logs / f"{name}.stderr").write_text(result.stderr)
    return result


def _use_environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)


def test_sasl_ssl_pipeline_is_exact_and_never_logs_the_password(
    secure: Settings,
    secure_broker: KafkaBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cdc_airflow.hooks import CdcKafkaHook
    from cdc_airflow.operators import CdcResetOperator
    from cdc_airflow.sensors import KafkaLagSensor

    caplog.set_level("INFO")
    logs = tmp_path / "logs"
    logs.mkdir()
    source = ArticleSource(seed=91, partitions=2)
    records = send(secure, source.random_history(400, 60, snapshot_rows=30), 2)

    # the job: credentials from the environment (Settings.from_env in the child)
    job = run_job(secure, logs, "drain")
    assert job.returncode == 0, job.stderr[-4000:]
    assert_table_equals_fold(secure, fold(records).rows)
    end = kafka_offsets.end_offsets(secure)
    assert kafka_offsets.committed_offsets(secure) == end
    # the Kafka client dumped its configuration, with the JAAS config hidden
    assert "sasl.jaas.config = [hidden]" in job.stderr
    assert "security.protocol = SASL_SSL" in job.stderr

    # Airflow: the credentials come from a connection; the environment has none
    _use_environment(_without_credentials(secure), monkeypatch)
    monkeypatch.delenv("KAFKA_SASL_PASSWORD", raising=False)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", _connection(secure, PASSWORD))
    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_DEFAULT", _connection(secure, PASSWORD))

    hook = CdcKafkaHook(CONN_ID)
    from_connection = hook.settings()
    assert from_connection.kafka_security_protocol == "SASL_SSL"
    assert from_connection.kafka_sasl_username == USER
    ok, message = hook.test_connection()
    assert ok, message

    sensor = KafkaLagSensor(task_id="consumer_lag", kafka_conn_id=CONN_ID, max_lag=0)
    poked = sensor.poke({})
    assert poked.is_done
    assert poked.xcom_value["total"] == 0

    reset = CdcResetOperator(
        task_id="reset",
        scope="offsets",
        reset_to="earliest",
        table=secure.iceberg_table,
        confirm=secure.iceberg_table,
        dry_run=True,
        kafka_conn_id=CONN_ID,
    )
    planned = reset.execute({})
    assert planned["dry_run"] is True
    assert planned["offsets_before"] == {str(p): o for p, o in end.items()}
    assert planned["offsets_after"] == {str(p): 0 for p in end}

    # the reset DAG itself, as a task run by Airflow (kafka_default from the environment)
    prepare_airflow_db()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "cdc_reset.py"))
    assert not bag.import_errors, bag.import_errors
    run = bag.dags["cdc_reset"].test(
        run_conf={
            "scope": "offsets",
            "table": secure.iceberg_table,
            "confirm_table": secure.iceberg_table,
            "dry_run": True,
        }
    )
    assert {ti.task_id: str(ti.state) for ti in run.get_task_instances()} == {"reset": "success"}
    assert kafka_offsets.committed_offsets(secure) == end, "a dry run changes nothing"

    # every log of the run: job output, Spark event log, broker logs, Airflow logs, test output
    captured = capfd.readouterr()
    (logs / "test.out").write_text(captured.out + captured.err + caplog.text)
    assert secure_broker.security is not None
    roots = [
        logs,
        secure_broker.log_file,
        secure_broker.data_dir / "broker.stdout",
        Path(os.environ["AIRFLOW_HOME"]) / "logs",
    ]
    events = [p for p in (logs / "events").rglob("*") if p.is_file() and p.stat().st_size]
    assert any(b"SparkListenerApplicationStart" in p.read_bytes() for p in events), events
    for secret in (PASSWORD, BROKER_PASSWORD):
        assert files_containing(roots, secret) == []


def test_wrong_password_fails_soon_with_an_authentication_error(
    secure: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cdc_airflow.hooks import CdcKafkaHook

    wrong = "wrongPw" + secrets.token_hex(8)
    bad = secure.replace(kafka_sasl_password=wrong)
    send(secure, ArticleSource(seed=92, partitions=1).random_history(20, 5), 1)

    started = time.monotonic()
    with pytest.raises(kafka_offsets.KafkaAccessError, match="authentication failed") as error:
        kafka_offsets.committed_offsets(bad)
    # reported after the first or second bootstrap attempt, not after the whole wait
    assert time.monotonic() - started < kafka_offsets.BOOTSTRAP_TIMEOUT_S
    assert wrong not in str(error.value)

    # the hook's connection test, with the wrong password in the Airflow connection
    _use_environment(_without_credentials(secure), monkeypatch)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", _connection(secure, wrong))
    ok, message = CdcKafkaHook(CONN_ID).test_connection()
    assert not ok
    assert "authentication failed" in message and wrong not in message


@pytest.mark.faults  # a Spark start only to see it refused: the long suite
def test_job_with_a_wrong_password_exits_with_an_authentication_error(
    secure: Settings, tmp_path: Path
) -> None:
    wrong = "wrongPw" + secrets.token_hex(8)
    bad = secure.replace(kafka_sasl_password=wrong)
    send(secure, ArticleSource(seed=93, partitions=1).random_history(20, 5), 1)
    logs = tmp_path / "logs"
    logs.mkdir()
    started = time.monotonic()
    job = run_job(bad, logs, "drain", timeout=300)
    assert job.returncode != 0
    assert "authentication failed" in job.stdout + job.stderr, job.stderr[-3000:]
    assert time.monotonic() - started < 240
    assert files_containing([logs], wrong) == []
