"""A Spark standalone cluster (a master and workers) run as plain processes on 127.0.0.1.

Usage::

    python -m cdc_iceberg.local.spark_cluster up       # start, wait until the workers are ALIVE
    python -m cdc_iceberg.local.spark_cluster status
    python -m cdc_iceberg.local.spark_cluster down

``up`` prints the ``SPARK_MASTER`` to export (``spark://127.0.0.1:7077`` unless
``SPARK_MASTER`` already names another loopback port); ``make drain`` and the
DAGs then submit to it in client mode: the driver runs here, the executors run
in the workers. Both commands are safe to repeat.

The master and the workers are pyspark's own Spark (``spark-class``, with
``SPARK_HOME`` the installed pyspark package). Each worker offers a small share
of the machine (by default 1 core and 1 GiB, which one executor takes whole)
and keeps its executors' work directories (``<app-id>/<executor-id>/stderr``)
under ``<data dir>/worker-<n>/work``. The daemons start with a clean
environment: no ``PYTHONPATH``, no virtualenv, nothing of the shell that
started them, so an executor finds only what the application ships to it.
State (ports, process ids, logs) lives under ``.local/spark-cluster``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cdc_iceberg.settings import PROJECT_ROOT

DEFAULT_DATA_DIR = PROJECT_ROOT / ".local" / "spark-cluster"
DEFAULT_MASTER_PORT = 7077
AWS_ENVIRONMENT = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION")
DEFAULT_MASTER_WEBUI_PORT = 8080
_STATE_FILE = "cluster.json"


def spark_home() -> Path:
    """The installed pyspark package: a complete Spark distribution (jars, ``bin/spark-class``)."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.origin:
        raise RuntimeError("pyspark is not installed: run `make setup`")
    return Path(spec.origin).parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _java_dir() -> str:
    from cdc_iceberg.class_archive import java_executable

    java = java_executable()
    if java is None:
        raise RuntimeError("no java found: set JAVA_HOME or put java on the PATH")
    return str(java.parent)


@dataclass
class SparkCluster:
    """A master and ``workers`` workers on loopback, each worker ``cores`` cores and ``memory``.

    Ports left at 0 are chosen free when the cluster starts. The cluster's
    ports and process ids are written to ``data_dir/cluster.json``, so another
    process (the CLI's ``down`` and ``status``) finds the same cluster.
    """

    data_dir: Path
    workers: int = 2
    cores: int = 1
    memory: str = "1g"
    host: str = "127.0.0.1"
    master_port: int = 0
    master_webui_port: int = 0
    daemon_memory: str = "256m"
    worker_ports: list[int] = field(default_factory=list)
    worker_webui_ports: list[int] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    # -- where things are ---------------------------------------------------

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.master_port}"

    @property
    def master_json_url(self) -> str:
        return f"http://{self.host}:{self.master_webui_port}/json/"

    def worker_dir(self, index: int) -> Path:
        return self.data_dir / f"worker-{index + 1}"

    def work_dir(self, index: int) -> Path:
        """Where worker ``index`` (0-based) keeps its executors' directories and logs."""
        return self.worker_dir(index) / "work"

    def log_file(self, name: str) -> Path:
        return self.data_dir / f"{name}.log"

    @property
    def state_file(self) -> Path:
        return self.data_dir / _STATE_FILE

    # -- state shared with other processes -----------------------------------

    def save(self) -> None:
        state = {
            "host": self.host,
            "master_port": self.master_port,
            "master_webui_port": self.master_webui_port,
            "workers": self.workers,
            "cores": self.cores,
            "memory": self.memory,
            "worker_ports": self.worker_ports,
            "worker_webui_ports": self.worker_webui_ports,
            "pids": self.pids,
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, data_dir: Path) -> SparkCluster | None:
        """The cluster a previous ``start`` recorded in ``data_dir``, or None."""
        try:
            state = json.loads((data_dir / _STATE_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return cls(
            data_dir=data_dir,
            workers=int(state["workers"]),
            cores=int(state["cores"]),
            memory=str(state["memory"]),
            host=str(state["host"]),
            master_port=int(state["master_port"]),
            master_webui_port=int(state["master_webui_port"]),
            worker_ports=[int(p) for p in state["worker_ports"]],
            worker_webui_ports=[int(p) for p in state["worker_webui_ports"]],
            pids={str(k): int(v) for k, v in state["pids"].items()},
        )

    # -- processes -----------------------------------------------------------

    def _env(self) -> dict[str, str]:
        """A clean environment for the daemons (and the executors they start)."""
        conf_dir = self.data_dir / "conf"  # empty: no spark-env.sh or defaults of the user
        conf_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.pathsep.join([_java_dir(), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": str(self.data_dir),
            "LANG": "C.UTF-8",
            "SPARK_HOME": str(spark_home()),
            "SPARK_CONF_DIR": str(conf_dir),
            "SPARK_LOCAL_IP": self.host,
            "SPARK_DAEMON_MEMORY": self.daemon_memory,
        }
        if os.environ.get("JAVA_HOME"):
            env["JAVA_HOME"] = os.environ["JAVA_HOME"]
        # the machines' own S3 credentials (a cluster's would be an instance role): the
        # executors' AWS SDK finds them in their environment, never in Spark's configuration
        for name in AWS_ENVIRONMENT:
            if os.environ.get(name):
                env[name] = os.environ[name]
        return env

    def _launch(self, name: str, main: str, *args: str, env: dict[str, str] | None = None) -> None:
        command = [str(spark_home() / "bin" / "spark-class"), main, *args]
        log = open(self.log_file(name), "ab")  # noqa: SIM115 - owned by the child
        try:
            # a session of its own: the daemon and the executors it starts form one group
            process = subprocess.Popen(
                command,
                env={**self._env(), **(env or {})},
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self._children[name] = process
        self.pids[name] = process.pid  # spark-class execs the JVM: the same pid
        self.save()

    def _alive(self, name: str) -> bool:
        pid = self.pids.get(name)
        if pid is None:
            return False
        child = self._children.get(name)
        if child is not None:
            return child.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return _state(pid) not in ("Z", "")

    def running(self) -> bool:
        """Whether the master and every worker process are alive."""
        names = ["master", *(f"worker-{i + 1}" for i in range(self.workers))]
        return bool(self.pids) and all(self._alive(n) for n in names)

    def start(self, timeout: float = 120.0) -> None:
        """Start the master and the workers, then wait until the master lists them ALIVE."""
        if self.running():
            self.wait_ready(timeout)
            return
        self.stop()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.master_port = self.master_port or free_port(self.host)
        self.master_webui_port = self.master_webui_port or free_port(self.host)
        ports = list(self.worker_ports) or [free_port(self.host) for _ in range(self.workers)]
        webui = list(self.worker_webui_ports) or [free_port(self.host) for _ in range(self.workers)]
        self.worker_ports, self.worker_webui_ports = ports, webui
        self._launch(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            self.host,
            "--port",
            str(self.master_port),
            "--webui-port",
            str(self.master_webui_port),
        )
        for index in range(self.workers):
            self._start_worker(index)
        self.wait_ready(timeout)

    def _start_worker(self, index: int) -> None:
        self.work_dir(index).mkdir(parents=True, exist_ok=True)
        scratch = self.worker_dir(index) / "local"  # executors' shuffle and block files
        scratch.mkdir(parents=True, exist_ok=True)
        self._launch(
            f"worker-{index + 1}",
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            self.host,
            "--port",
            str(self.worker_ports[index]),
            "--webui-port",
            str(self.worker_webui_ports[index]),
            "--cores",
            str(self.cores),
            "--memory",
            self.memory,
            "--work-dir",
            str(self.work_dir(index)),
            self.master_url,
            env={"SPARK_LOCAL_DIRS": str(scratch)},
        )

    def master_state(self) -> dict[str, Any]:
        """The master's JSON status (workers, applications)."""
        with urllib.request.urlopen(self.master_json_url, timeout=5) as response:
            return dict(json.load(response))

    def alive_workers(self) -> list[dict[str, Any]]:
        """The workers the master knows as ALIVE."""
        try:
            state = self.master_state()
        except OSError:
            return []
        return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]

    def wait_ready(self, timeout: float = 120.0, workers: int | None = None) -> None:
        """Wait until the master lists ``workers`` (all by default) ALIVE workers."""
        wanted = self.workers if workers is None else workers
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in self.pids:
                if not self._alive(name):
                    raise RuntimeError(f"Spark {name} exited:\n{self._tail(name)}")
            if len(self.alive_workers()) >= wanted:
                return
            time.sleep(0.5)
        raise TimeoutError(
            f"Spark master {self.master_url}: {len(self.alive_workers())} workers ALIVE "
            f"after {timeout}s, expected {wanted}\n{self._tail('master')}"
        )

    def _tail(self, name: str) -> str:
        log = self.log_file(name)
        return log.read_text(errors="replace")[-3000:] if log.exists() else ""

    def worker_pid(self, index: int) -> int:
        return self.pids[f"worker-{index + 1}"]

    def kill_worker(self, index: int) -> None:
        """kill -9 of worker ``index`` (0-based) and its executors, as when a machine is lost."""
        name = f"worker-{index + 1}"
        pid = self.pids[name]
        pids = [pid, *_descendants(pid)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        for other in pids:  # anything that left the worker's group goes too
            with contextlib.suppress(ProcessLookupError):
                os.kill(other, signal.SIGKILL)
        self._wait_gone(name, pids, 30.0)

    def restart_worker(self, index: int, timeout: float = 120.0) -> None:
        """Start worker ``index`` again (after :meth:`kill_worker`) on new ports; wait for it.

        It registers with the master as a new worker; the wait is for that one
        (a killed worker may still be listed until the master notices).
        """
        port, webui = free_port(self.host), free_port(self.host)
        self.worker_ports[index], self.worker_webui_ports[index] = port, webui
        self._start_worker(index)
        deadline = time.monotonic() + timeout
        while not any(w.get("port") == port for w in self.alive_workers()):
            if not self._alive(f"worker-{index + 1}"):
                raise RuntimeError(f"Spark worker-{index + 1} exited:\n{self._tail('master')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Spark worker-{index + 1} not ALIVE in {timeout}s")
            time.sleep(0.5)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers (and their executors), then the master; SIGKILL after ``timeout``."""
        names = sorted((n for n in self.pids if n != "master"), reverse=True)
        if "master" in self.pids:
            names.append("master")
        for name in names:
            pid = self.pids[name]
            pids = [pid, *_descendants(pid)] if self._alive(name) else []
            if pids:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
            if not self._wait_gone(name, pids, timeout):
                for other in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(other, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self._wait_gone(name, pids, 10.0)
        self.pids.clear()
        self._children.clear()
        if self.data_dir.is_dir():
            self.save()

    def _wait_gone(self, name: str, pids: list[int], timeout: float) -> bool:
        child = self._children.get(name)
        deadline = time.monotonic() + timeout
        while True:
            if child is not None:
                child.poll()  # reap the daemon if this process started it
            left = [p for p in pids if _state(p) not in ("", "Z")]
            if not left:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    # -- what ran where --------------------------------------------------------

    def executor_dirs(self, app_id: str) -> dict[int, list[Path]]:
        """Per worker (0-based), the directories of the executors it ran for ``app_id``."""
        return {
            index: sorted(p for p in (self.work_dir(index) / app_id).glob("*") if p.is_dir())
            for index in range(self.workers)
        }

    def applications(self) -> list[dict[str, Any]]:
        """Active and completed applications, as the master lists them."""
        state = self.master_state()
        return [*state.get("activeapps", []), *state.get("completedapps", [])]


def _state(pid: int) -> str:
    """The process state letter (``R``, ``S``, ``Z``...), or "" when there is no such process."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children...)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in parents.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def cluster_from_env(data_dir: Path | None = None, workers: int = 2) -> SparkCluster:
    """The CLI's cluster: the one recorded in the data dir, else one on ``SPARK_MASTER``'s port."""
    from cdc_iceberg.settings import Settings

    directory = data_dir or Path(os.environ.get("SPARK_CLUSTER_DATA_DIR") or DEFAULT_DATA_DIR)
    recorded = SparkCluster.load(directory)
    if recorded is not None and recorded.pids:
        return recorded
    port = DEFAULT_MASTER_PORT
    master = Settings.from_env().spark_master
    if master.startswith("spark://"):
        parsed = urlparse(master)
        if parsed.hostname not in ("127.0.0.1", "localhost"):
            raise SystemExit(f"SPARK_MASTER={master} is not on this machine's loopback")
        port = parsed.port or DEFAULT_MASTER_PORT
    return SparkCluster(
        data_dir=directory,
        workers=workers,
        master_port=port,
        master_webui_port=DEFAULT_MASTER_WEBUI_PORT if port == DEFAULT_MASTER_PORT else 0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--workers", type=int, default=2, help="workers to start (up)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="default $SPARK_CLUSTER_DATA_DIR, else .local/spark-cluster",
    )
    args = parser.parse_args(argv)
    cluster = cluster_from_env(args.data_dir, args.workers)
    if args.command == "up":
        cluster.start()
        print(
            f"Spark master ready at {cluster.master_url} with {cluster.workers} workers "
            f"(UI http://{cluster.host}:{cluster.master_webui_port}, state in {cluster.data_dir})"
        )
        print(f"export SPARK_MASTER={cluster.master_url}")
    elif args.command == "down":
        cluster.stop()
        print("Spark cluster stopped")
    else:
        alive = len(cluster.alive_workers()) if cluster.running() else 0
        state = "running" if alive == cluster.workers else "stopped"
        print(f"Spark master at {cluster.master_url}: {state}, {alive} workers ALIVE")
        return 0 if state == "running" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
