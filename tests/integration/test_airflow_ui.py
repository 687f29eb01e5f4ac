"""The backfill, triggered the way an operator does it: from the Airflow UI's form.

``test_dags.py`` runs the DAGs with ``dag.test()``, which bypasses the API
server, the scheduler, the executor and the UI. Here a real Airflow 3
deployment (API server, scheduler, dag-processor on their own SQLite DB) runs
the product's DAGs, headless Chromium logs in, fills the typed trigger form of
``cdc_backfill``, and the run must end in success with the Iceberg table equal
to the reference fold of what was written to Kafka.

The deployment's pipelines file names two tables. The form's table field offers
exactly those (the backfill's and the reset's), the table picked there is the
one whose topic the run re-reads, a name that is not a table is refused by the
form, and a table the file does not configure is refused by the run.
"""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow_server import AirflowServer
from articles import ARTICLES, write_pipelines
from reference_fold import fold
from support import assert_table_equals_fold, send

from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.kafka_offsets import ensure_topic
from cdc_iceberg.settings import PROJECT_ROOT, Settings

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"
SCREENSHOT = ARTIFACTS / "airflow-backfill-run.png"
STATUS_SCREENSHOT = ARTIFACTS / "airflow-cdc-status.png"
DAG_ID = "cdc_backfill"
RUN_TIMEOUT_S = 480
UI_TIMEOUT_MS = 60_000


@pytest.fixture
def configured(pipeline: Settings, tmp_path: Path) -> Settings:
    """The pipeline with a pipelines file of two tables: its own (first), then a second
    one, ``<table>_source``, both of the articles schema."""
    name = pipeline.iceberg_table.split(".")[1]
    entry = {"schema": ARTICLES.to_declared()}
    path = write_pipelines(
        tmp_path / "pipelines.yaml",
        {
            f"public.{name}": {
                "topic": pipeline.kafka_topic,
                "iceberg_table": pipeline.iceberg_table,
                **entry,
            },
            f"public.{name}_source": {
                "topic": f"{pipeline.kafka_topic}_source",
                "iceberg_table": f"{pipeline.iceberg_table}_source",
                **entry,
            },
        },
    )
    return pipeline.replace(pipelines_file=path)


@pytest.fixture
def airflow_server(configured: Settings, tmp_path: Path) -> Iterator[AirflowServer]:
    """Airflow with the pipeline's Settings as the task environment, stopped afterwards."""
    server = AirflowServer(
        tmp_path / "airflow",
        {
            **configured.to_env(),
            "AIRFLOW_CONN_SPARK_DEFAULT": '{"conn_type": "spark", "host": "local[2]"}',
        },
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _offered(dialog: Any, field: str) -> list[str]:
    """The choices a form field of the trigger dialog offers (its ``<datalist>``)."""
    listed = dialog.locator(f"#element_{field}").get_attribute("list")
    assert listed, f"the {field} field offers no choices"
    return list(
        dialog.locator(f"datalist[id='{listed}'] option").evaluate_all(
            "options => options.map(o => o.value)"
        )
    )


def _wait_for_run(server: AirflowServer, run_id: str, timeout: float) -> dict[str, Any]:
    """Poll the REST API until the run reaches a final state (or the time is up)."""
    deadline = time.monotonic() + timeout
    token = server.token()
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            run = server.request(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", token=token)
        except urllib.error.HTTPError as error:
            if error.code == 401:  # the token expired on a slow machine: get a new one
                token = server.token()
            elif error.code != 404:  # 404: the trigger has not landed yet
                raise
        else:
            if run.get("state") in ("success", "failed"):
                return run
        time.sleep(3)
    raise AssertionError(
        f"run {run_id} not finished after {timeout}s: {run.get('state')}\n"
        f"{server.log_tail('scheduler')}"
    )


def _task_states(server: AirflowServer, run_id: str) -> dict[str, str]:
    answer = server.request(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", token=server.token()
    )
    return {ti["task_id"]: ti["state"] for ti in answer["task_instances"]}


def _task_logs(server: AirflowServer, run_id: str, chars: int = 4000) -> str:
    """The end of each task's log of the run, for the failure message."""
    run_logs = server.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    return "\n".join(
        f"--- {path.relative_to(run_logs)}\n{path.read_text(errors='replace')[-chars:]}"
        for path in sorted(run_logs.glob("task_id=*/*.log"))
    )


@pytest.mark.timeout(900)
def test_backfill_triggered_from_the_ui_form_applies_the_topic(
    airflow_server: AirflowServer, configured: Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is missing: scripts/install-system-packages.sh"
    pipeline = configured
    # the second table of the file: the form picks it, its topic holds the records
    source = pipeline.replace(
        kafka_topic=f"{pipeline.kafka_topic}_source",
        iceberg_table=f"{pipeline.iceberg_table}_source",
    )
    tables = [pipeline.iceberg_table, source.iceberg_table]
    ensure_topic(pipeline)  # the default table's topic (KAFKA_TOPIC) exists, empty
    records = send(source, ArticleSource(seed=86).random_history(600, 80, snapshot_rows=40))
    server = airflow_server
    dag = server.wait_for_dag(DAG_ID)
    assert dag["is_paused"], "DAGs start paused here: the form's unpause box is exercised"
    server.wait_for_dag("cdc_reset")
    run_id = "ui_backfill_" + pipeline.iceberg_table.split(".")[-1]
    refused_id = run_id + "_unconfigured"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)  # a picture from an earlier run must not pass for this one
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        page = browser.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        try:
            # an anonymous visit is sent to the simple auth manager's login page
            page.goto(f"{server.base_url}/dags/{DAG_ID}")
            page.wait_for_url("**/auth/login**")
            page.fill("input[name=username]", server.username)
            page.fill("input[name=password]", server.password)
            page.keyboard.press("Enter")
            page.wait_for_url(f"**/dags/{DAG_ID}")

            page.get_by_role("button", name="Trigger").first.click()
            dialog = page.locator("[role=dialog][aria-modal=true]")
            expect(dialog.get_by_text(f"Trigger Dag - {DAG_ID}")).to_be_visible()
            unpause = dialog.get_by_label(f"Unpause {DAG_ID} on trigger")
            if not unpause.is_checked():
                unpause.check(force=True)
            # the table field offers the tables of the pipelines file, in its order
            table = dialog.locator("#element_table")
            expect(table).to_have_value("")  # optional: no table unless one is picked
            assert _offered(dialog, "table") == tables
            # a name that is not namespace.table is refused by the form: no run
            table.fill("not a table")
            dialog.get_by_test_id("trigger-dag-submit").click()
            expect(dialog.get_by_text("Invalid input for param table").first).to_be_visible()
            # a well-formed name the file does not configure passes the form; the run refuses it
            table.fill("neuronews.not_configured")
            dialog.get_by_role("button", name="Advanced Options").click()
            dialog.locator("input[name=dagRunId]").fill(refused_id)
            dialog.get_by_test_id("trigger-dag-submit").click()
            expect(page.get_by_text("Dag Run Triggered").first).to_be_visible()
            expect(dialog).to_be_hidden()
            page.wait_for_url(f"**/dags/{DAG_ID}/runs/{refused_id}")  # the UI opens the run

            page.goto(f"{server.base_url}/dags/{DAG_ID}")
            page.get_by_role("button", name="Trigger").first.click()
            expect(dialog.get_by_text(f"Trigger Dag - {DAG_ID}")).to_be_visible()
            start_from = dialog.get_by_role("combobox").first
            start_from.click()
            page.get_by_role("option", name="earliest", exact=True).click()
            expect(dialog.locator("input[name=element_start_from]")).to_have_value("earliest")
            # pick the second table offered: the browser's suggestion list is its own UI,
            # out of the page's reach, so the option's value goes into the field as a pick does
            picked = _offered(dialog, "table")[1]
            dialog.locator("#element_table").fill(picked)
            dialog.locator("#element_target_table").fill(pipeline.iceberg_table)
            dry_run = dialog.locator("input[name=element_dry_run]")
            expect(dry_run).to_be_checked()  # the safe default
            dialog.locator("label[id='switch:element_dry_run']").click()
            expect(dry_run).not_to_be_checked()
            # a known run id, so the run can be followed; it is in Advanced Options
            dialog.get_by_role("button", name="Advanced Options").click()
            dialog.locator("input[name=dagRunId]").fill(run_id)
            dialog.get_by_test_id("trigger-dag-submit").click()
            # the toast (title and description may both be announced: take the first)
            expect(page.get_by_text("Dag Run Triggered").first).to_be_visible()
            expect(dialog).to_be_hidden()

            refused = _wait_for_run(server, refused_id, RUN_TIMEOUT_S)
            run = _wait_for_run(server, run_id, RUN_TIMEOUT_S)
            page.goto(f"{server.base_url}/dags/{DAG_ID}/runs/{run_id}")
            expect(page.get_by_text(run_id).first).to_be_visible()
            # the run page's state badge says what the API says ("Success", we hope)
            expect(
                page.get_by_text(str(run["state"]).capitalize(), exact=True).first
            ).to_be_visible()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # the reset's form offers the same tables, the first one filled in
            page.goto(f"{server.base_url}/dags/cdc_reset")
            page.get_by_role("button", name="Trigger").first.click()
            expect(dialog.get_by_text("Trigger Dag - cdc_reset")).to_be_visible()
            expect(dialog.locator("#element_table")).to_have_value(tables[0])
            assert _offered(dialog, "table") == tables
            page.keyboard.press("Escape")
            expect(dialog).to_be_hidden()

            # the CDC status view, linked from the navigation, shows the table the run wrote
            page.goto(f"{server.base_url}/cdc-status/")
            status_row = page.locator("tr", has_text=pipeline.kafka_topic).filter(
                has_not_text=source.kafka_topic
            )
            expect(status_row).to_be_visible()
            expect(status_row).to_contain_text(pipeline.iceberg_table)
            expect(status_row).to_contain_text(f"{len(fold(records).rows):,} / ")
            page.screenshot(path=str(STATUS_SCREENSHOT), full_page=True)
        except Exception:
            # what the browser saw is the first thing to look at when this fails
            page.screenshot(path=str(ARTIFACTS / "airflow-backfill-failure.png"), full_page=True)
            raise
        finally:
            browser.close()

    assert run["state"] == "success", (
        f"{_task_states(server, run_id)}\n{_task_logs(server, run_id)}"
    )
    assert _task_states(server, run_id) == {"plan": "success", "backfill": "success"}
    assert run["conf"]["dry_run"] is False
    assert run["conf"]["table"] == source.iceberg_table
    assert run["conf"]["target_table"] == pipeline.iceberg_table
    assert run["conf"]["start_from"] == "earliest"
    # the picked table's topic was re-read (the default table's topic is empty)
    assert_table_equals_fold(pipeline, fold(records).rows)
    # the malformed name made no run; the unconfigured one failed in plan, naming the tables
    conf_tables = [
        r["conf"].get("table")
        for r in server.request(f"/api/v2/dags/{DAG_ID}/dagRuns", token=server.token())["dag_runs"]
    ]
    assert sorted(conf_tables) == ["neuronews.not_configured", source.iceberg_table]
    assert refused["state"] == "failed"
    assert refused["conf"]["table"] == "neuronews.not_configured"
    assert _task_states(server, refused_id) == {"plan": "failed", "backfill": "upstream_failed"}
    refusal = _task_logs(server, refused_id)
    assert "no table 'neuronews.not_configured' is configured" in refusal
    assert f"(configured: {', '.join(tables)})" in refusal
    # the view and its JSON are for signed-in users only (Airflow leaves plugin apps open)
    for path in ("/cdc-status/", "/cdc-status/json"):
        with pytest.raises(urllib.error.HTTPError) as refused_view:
            server.request(path)
        assert refused_view.value.code in (401, 403), path
    facts = server.request("/cdc-status/json", token=server.token())
    (table_facts,) = [t for t in facts["tables"] if t["table"] == pipeline.iceberg_table]
    assert table_facts["rows"] == len(fold(records).rows)
    plugins = server.request("/api/v2/plugins", token=server.token())["plugins"]
    (view,) = [v for p in plugins if p["name"] == "cdc_status" for v in p["external_views"]]
    assert (view["name"], view["href"]) == ("CDC status", "cdc-status/")
