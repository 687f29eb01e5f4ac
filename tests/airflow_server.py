"""A real Airflow 3 deployment for one test: API server, scheduler and dag-processor.

``dag.test()`` runs a DAG inside the test process and never touches the API
server, the scheduler, the executor or the UI. The UI test needs all of them,
started the way an operator would start them, so this module runs them as
plain subprocesses on 127.0.0.1 with an Airflow home of their own (a fresh
SQLite metadata DB) and stops every process they spawned when done.

Every process carries a marker in its environment. Task processes put
themselves in their own process group and Spark runs below them, so neither
the process tree nor the process group of the three commands is enough to
find them all once a parent has gone: the marker is.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from cdc_iceberg.settings import PROJECT_ROOT

_MARKER = "CDC_TEST_AIRFLOW_SERVER"
_COMPONENTS = {
    "api-server": ["api-server", "--workers", "1"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
}


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AirflowServer:
    """Airflow's API server, scheduler and dag-processor for one test.

    ``extra_env`` is the environment the task processes need (the product's
    Settings, the Spark connection); the Airflow configuration itself comes
    from here and nothing of the caller's ``AIRFLOW*`` variables leaks in.
    """

    def __init__(
        self,
        home: Path,
        extra_env: Mapping[str, str],
        *,
        username: str = "admin",
        password: str = "admin",
    ) -> None:
        self.home = home
        self.port = free_port()
        self.username = username
        self.password = password
        self.marker = secrets.token_hex(8)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.env = self._environment(extra_env)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _environment(self, extra_env: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(extra_env)
        venv_bin = str(Path(sys.executable).parent)
        passwords = self.home / "simple_auth_manager_passwords.json"
        env.update(
            {
                _MARKER: self.marker,
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home}/airflow.db",
                # the default executor; Airflow 3 runs it on SQLite (as `airflow standalone` does)
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                # the scheduled DAGs stay paused: only the DAG the test triggers may run
                # (the trigger form unpauses it, as an operator would)
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__WORKERS": "1",
                # the components must agree on these: generate them once, for all three
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(64),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
                # task processes report to this server, not to the default localhost:8080
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                # parse each file once: the DAGs do not change during a test, and
                # re-parsing every 30 s costs CPU the Spark job needs on a small machine
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
                "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "plugins")]),
                "PATH": os.pathsep.join([venv_bin, env.get("PATH", "/usr/bin:/bin")]),
                "SPARK_LOCAL_IP": "127.0.0.1",
            }
        )
        return env

    def _airflow(self, *args: str, timeout: float = 300) -> str:
        """Run one Airflow CLI command to completion in this deployment's environment."""
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"airflow {' '.join(args)}: {result.stderr[-3000:]}"
        return result.stdout

    def start(self, timeout: float = 240) -> None:
        """Migrate a fresh DB, create the writer pool, start the three components, wait."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "simple_auth_manager_passwords.json").write_text(
            json.dumps({self.username: self.password})
        )
        self._airflow("db", "migrate")
        self._airflow("pools", "set", "cdc_iceberg_writer", "1", "one writer per Iceberg table")
        logs = self.home / "process-logs"
        logs.mkdir(exist_ok=True)
        for name, args in _COMPONENTS.items():
            with open(logs / f"{name}.log", "wb") as out:
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "airflow", *args, *self._port_args(name)],
                    env=self.env,
                    cwd=self.home,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        self.wait_until_healthy(timeout)

    def _port_args(self, name: str) -> list[str]:
        return ["--host", "127.0.0.1", "--port", str(self.port)] if name == "api-server" else []

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.home / "process-logs" / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(
                    f"airflow {name} exited with {process.returncode}:\n{self.log_tail(name)}"
                )

    def wait_until_healthy(self, timeout: float) -> None:
        """Until the API server answers and sees a live scheduler and dag-processor."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                last = self.request("/api/v2/monitor/health")
            except (OSError, urllib.error.URLError) as error:
                last = error
            else:
                statuses = {k: (v or {}).get("status") for k, v in last.items()}
                if statuses.get("scheduler") == "healthy" and statuses.get("dag_processor") in (
                    "healthy",
                    None,
                ):
                    return
            time.sleep(2)
        raise AssertionError(f"Airflow not healthy after {timeout}s: {last}")

    def request(
        self,
        path: str,
        *,
        token: str | None = None,
        body: Mapping[str, Any] | None = None,
        method: str | None = None,
        timeout: float = 30,
    ) -> Any:
        """One JSON call to the API server."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return json.loads(response.read() or b"null")

    def token(self) -> str:
        """A REST API token for the admin user, from the simple auth manager."""
        answer = self.request(
            "/auth/token", body={"username": self.username, "password": self.password}
        )
        return str(answer["access_token"])

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict[str, Any]:
        """Until the dag-processor has parsed ``dag_id`` and the API server knows it."""
        deadline = time.monotonic() + timeout
        token = self.token()
        last: Any = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                return dict(self.request(f"/api/v2/dags/{dag_id}", token=token))
            except urllib.error.HTTPError as error:
                last = error
            time.sleep(2)
        raise AssertionError(
            f"DAG {dag_id} not loaded after {timeout}s ({last}):\n{self.log_tail('dag-processor')}"
        )

    def _ours(self) -> list[psutil.Process]:
        """Every live process that inherited this deployment's marker, wherever it hangs now."""
        found = []
        for process in psutil.process_iter():
            if process.pid == os.getpid():
                continue
            try:
                if process.environ().get(_MARKER) == self.marker:
                    found.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the components (they stop their children), then SIGKILL what is left."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        leftovers = self._ours()
        for process in leftovers:
            try:
                process.terminate()
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(leftovers, timeout=10)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(alive, timeout=10)
        survivors = self._ours()
        assert not survivors, f"processes survived the Airflow deployment: {survivors}"
