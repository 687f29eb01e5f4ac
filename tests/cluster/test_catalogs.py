"""The catalog Spark, pyiceberg and Airflow share: JDBC on Postgres, and a REST catalog.

Each production option runs for real on loopback, started here and stopped at
the end: a Debian Postgres of its own (``cdc_iceberg.local.postgres``) holding
the JDBC catalog's database, and Iceberg's REST catalog server
(``cdc_iceberg.local.rest_catalog``) backed by another database of that
Postgres. The catalog's role has a password of its own, which no output of the
drain or of the REST server may show.

For each option, the drain is spark-submitted in its own process with the
option's settings, and every check reads the tables back through pyiceberg on
the same catalog (``table_state.catalog``, what Airflow's tasks use), against
the reference fold of the records sent (``tests/invariants.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from articles import ARTICLES, write_pipelines
from harness import describe, run_job
from infra import free_port_pair as free_port
from infra import own_pipeline
from invariants import check_invariants, snapshot_ids
from reference_fold import Record
from support import send

from cdc_iceberg import kafka_offsets, pipelines, status, table_state
from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.local.postgres import PostgresServer
from cdc_iceberg.local.rest_catalog import RestCatalogServer
from cdc_iceberg.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.integration

PARTITIONS = 2
ROLE = "iceberg_catalog"
# what a catalog that cannot take two writers at once reports
CATALOG_ERRORS = ("CommitFailedException", "database is locked", "SQLITE_BUSY", "CommitState")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A Postgres of its own (run as root, the server's OS user cannot enter pytest's
    private temp directories: its data goes under the system temp dir)."""
    data_dir = Path(tempfile.mkdtemp(prefix="cdc-catalog-postgres-"))
    data_dir.chmod(0o755)
    server = PostgresServer(data_dir=data_dir, port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def role_password(postgres: PostgresServer) -> str:
    """The catalog role's password, and the two databases it owns."""
    password = "catalog-" + uuid.uuid4().hex
    postgres.sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'", database="postgres")
    for database in ("iceberg_jdbc", "iceberg_rest"):
        postgres.sql(f"CREATE DATABASE {database} OWNER {ROLE}", database="postgres")
    return password


@pytest.fixture(scope="module")
def jdbc_catalog(
    base_settings: Settings, postgres: PostgresServer, role_password: str, work_dir: Path
) -> Iterator[Settings]:
    yield base_settings.replace(
        iceberg_catalog_type="jdbc",
        iceberg_catalog_uri=(
            f"postgresql+psycopg2://{ROLE}:{role_password}@{postgres.host}:{postgres.port}"
            "/iceberg_jdbc"
        ),
        iceberg_warehouse=f"file://{work_dir}/jdbc-warehouse",
    )


@pytest.fixture(scope="module")
def rest_server(
    postgres: PostgresServer, role_password: str, work_dir: Path
) -> Iterator[RestCatalogServer]:
    """The REST catalog, brought up and down by its command line (README, "Catalogs")."""
    server = RestCatalogServer(
        data_dir=work_dir / "rest-catalog",
        warehouse=f"file://{work_dir}/rest-warehouse",
        port=free_port(),
        backend_uri=f"jdbc:postgresql://{postgres.host}:{postgres.port}/iceberg_rest",
        backend_user=ROLE,
        backend_password=role_password,
    )
    env = {
        **os.environ,
        "REST_CATALOG_DATA_DIR": str(server.data_dir),
        "REST_CATALOG_PORT": str(server.port),
        "ICEBERG_WAREHOUSE": server.warehouse,
        "REST_CATALOG_BACKEND_URI": server.backend_uri,
        "REST_CATALOG_BACKEND_USER": ROLE,
        "REST_CATALOG_BACKEND_PASSWORD": role_password,
    }

    def command(name: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "cdc_iceberg.local.rest_catalog", name],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert_no_secret(role_password, done.stdout, done.stderr)
        return done

    up = command("up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"ICEBERG_CATALOG_URI={server.uri}" in up.stdout
        assert command("status").returncode == 0
        yield server
    finally:
        down = command("down")
        stopped = command("status")
    # after the cleanup, and only when the tests passed: a failure here hides none
    assert down.returncode == 0, down.stdout + down.stderr
    assert stopped.returncode == 1 and "stopped" in stopped.stdout
    assert server.running_pid() is None


@pytest.fixture(scope="module", params=["jdbc", "rest"])
def shared(request: pytest.FixtureRequest, base_settings: Settings) -> Settings:
    """Settings of one production catalog option (the suite's broker)."""
    if request.param == "jdbc":
        settings: Settings = request.getfixturevalue("jdbc_catalog")
        return settings
    server: RestCatalogServer = request.getfixturevalue("rest_server")
    return server.settings(base_settings)


def catalog_tables(settings: Settings, postgres: PostgresServer) -> set[str]:
    """The tables the catalog lists, asked the catalog's own way (not through pyiceberg):
    the JDBC catalog's table in Postgres, or the REST server's HTTP API."""
    if settings.iceberg_catalog_type == "jdbc":
        rows = postgres.query(
            "SELECT table_namespace, table_name FROM iceberg_tables", database="iceberg_jdbc"
        )
        return {f"{r['table_namespace']}.{r['table_name']}" for r in rows}
    with urllib.request.urlopen(
        f"{settings.iceberg_catalog_uri}/v1/namespaces/neuronews/tables"
    ) as r:
        listed = json.load(r)["identifiers"]
    return {".".join([*t["namespace"], t["name"]]) for t in listed}


def articles_pipeline(shared: Settings, work_dir: Path, **changes: object) -> Settings:
    settings = own_pipeline(shared, work_dir, **changes)
    entry = {
        "topic": settings.kafka_topic,
        "iceberg_table": settings.iceberg_table,
        "schema": ARTICLES.to_declared(),
    }
    name = settings.iceberg_table.split(".")[1]
    path = write_pipelines(work_dir / "pipelines" / f"{name}.yaml", {"public.articles": entry})
    return settings.replace(pipelines_file=path)


def history(settings: Settings, seed: int, events: int) -> list[Record]:
    source = ArticleSource(seed=seed, partitions=PARTITIONS)
    return send(settings, source.random_history(events, 60, snapshot_rows=20), PARTITIONS)


def assert_no_secret(password: str, *texts: str) -> None:
    for text in texts:
        assert password not in text, "the catalog's password was logged"


def test_a_drain_on_the_catalog_equals_the_fold_airflow_reads_it_and_a_lost_checkpoint_resumes(
    shared: Settings,
    postgres: PostgresServer,
    role_password: str,
    catalog_settings: Settings,
    work_dir: Path,
    request: pytest.FixtureRequest,
) -> None:
    settings = articles_pipeline(shared, work_dir, max_offsets_per_trigger=120)
    records = history(settings, seed=11, events=240)

    first = run_job(settings)
    assert first.returncode == 0, describe(first)
    counts = check_invariants(settings, records)
    assert counts["batches"] >= 2, counts

    # the table is in the shared catalog, not in the suite's SQLite one
    assert settings.iceberg_table in catalog_tables(settings, postgres)
    assert not table_state.catalog(catalog_settings).table_exists(settings.iceberg_table)

    # the Airflow side (validation, status page) reads it through the same catalog
    seen = status.table_status(settings)
    assert seen.problems == [], seen.problems
    assert seen.exists and seen.rows == counts["keys"], seen
    assert seen.table_offsets == kafka_offsets.end_offsets(settings) and seen.lag_total == 0
    assert seen.checkpoint is not None and seen.checkpoint.state == "agrees", seen.checkpoint

    # the checkpoint is lost; the next drain starts from the offsets the table records
    before = snapshot_ids(settings)
    shutil.rmtree(settings.checkpoint_location)
    records += history(settings, seed=12, events=120)
    second = run_job(settings)
    assert second.returncode == 0, describe(second)
    check_invariants(settings, records, before)  # I3: no batch reread or skipped an offset

    logs = [first.stdout, first.stderr, second.stdout, second.stderr]
    if settings.iceberg_catalog_type == "rest":
        server: RestCatalogServer = request.getfixturevalue("rest_server")
        logs.append(server.log_file.read_text())
    assert_no_secret(role_password, *logs)


@pytest.mark.faults  # long: make test-faults
def test_two_tables_drained_at_once_commit_concurrently_to_the_catalog(
    shared: Settings, role_password: str, work_dir: Path
) -> None:
    base = own_pipeline(shared, work_dir, max_offsets_per_trigger=50, parallel_tables=2)
    name = base.iceberg_table.split(".")[1]
    entries = {
        f"public.{name}_{side}": {
            "topic": f"{base.kafka_topic}_{side}",
            "iceberg_table": f"{base.iceberg_table}_{side}",
            "schema": ARTICLES.to_declared(),
        }
        for side in ("a", "b")
    }
    base = base.replace(
        pipelines_file=write_pipelines(work_dir / "pipelines" / f"{name}.yaml", entries)
    )
    config = pipelines.load(base.pipelines_file)
    tables = {source: config.find(source).settings(base) for source in entries}
    records = {
        source: history(settings, seed=20 + i, events=150)
        for i, (source, settings) in enumerate(tables.items())
    }

    result = run_job(base, args=["--tables", "all"])
    assert result.returncode == 0, describe(result)
    output = result.stdout + result.stderr
    assert not [e for e in CATALOG_ERRORS if e in output], describe(result)
    assert '"failed": []' in result.stdout, describe(result)
    assert_no_secret(role_password, result.stdout, result.stderr)

    spans = []
    for source, settings in tables.items():
        counts = check_invariants(settings, records[source])
        assert counts["batches"] >= 3, (source, counts)
        loaded = table_state.catalog(settings).load_table(settings.iceberg_table)
        times = sorted(
            s.timestamp_ms
            for s in loaded.snapshots()
            if s.summary is not None and "cdc.batch-range" in s.summary.additional_properties
        )
        spans.append((times[0], times[-1]))
    # the two tables' commits interleave: each committed while the other was committing
    (a_first, a_last), (b_first, b_last) = spans
    assert a_first < b_last and b_first < a_last, (
        f"the tables committed one after the other: {spans}"
    )
