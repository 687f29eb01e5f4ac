"""The ``CDC status`` page of the Airflow UI: every table at a glance.

A FastAPI app on the API server under ``/cdc-status/`` (HTML, and ``json``
with the facts of ``python -m cdc_iceberg status --json``), linked from the
UI's navigation. Airflow does not authenticate plugin apps: every route here
requires a signed-in Airflow user (the UI's session, or a bearer token).
"""

from __future__ import annotations

import time
from typing import Any

from airflow.api_fastapi.core_api.security import requires_authenticated
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

app = FastAPI(title="CDC status", dependencies=[Depends(requires_authenticated())])


def _statuses() -> list[Any]:
    from cdc_airflow.hooks import CdcKafkaHook

    from cdc_iceberg.status import statuses

    return statuses(CdcKafkaHook().settings())


@app.get("/", response_class=HTMLResponse)
def page() -> str:
    from cdc_airflow.status_page import status_page

    return status_page(_statuses(), int(time.time() * 1000))


@app.get("/json")
def facts() -> dict[str, Any]:
    return {"tables": [s.as_dict() for s in _statuses()]}


class CdcStatusPlugin(AirflowPlugin):
    name = "cdc_status"
    fastapi_apps = [{"app": app, "url_prefix": "/cdc-status", "name": "CDC status"}]
    external_views = [
        {
            "name": "CDC status",
            "href": "cdc-status/",
            "destination": "nav",
            "category": "browse",
            "url_route": "cdc-status",
        }
    ]
