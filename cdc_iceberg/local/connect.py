"""A Kafka Connect worker with the Debezium Postgres connector, run as a plain JVM process.

Usage::

    python -m cdc_iceberg.local.connect up        # start the worker, register the connector
    python -m cdc_iceberg.local.connect register  # (re)register the connector only
    python -m cdc_iceberg.local.connect down      # stop the worker
    python -m cdc_iceberg.local.connect status

The worker runs in distributed mode: its connector configs, source offsets and
statuses live in Kafka topics on ``KAFKA_BOOTSTRAP_SERVERS``, so a restarted
worker (even after ``kill -9``) resumes where the last committed offset
points, as a production worker would. Its REST API listens on 127.0.0.1 at
``CONNECT_PORT`` (default 8083); state and logs go to ``CONNECT_DATA_DIR``
(default ``.local/connect``). The connector reads the Postgres server that
``PGHOST``/``PGPORT``/``PGUSER``/``PGPASSWORD``/``PGDATABASE`` describe and
writes ``<topic.prefix>.public.articles`` (``neuronews.public.articles``).
The jars come from ``jvm/connect/pom.xml`` (``make connect-jars``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib import error as urlerror
from urllib import request as urlrequest

from cdc_iceberg.local import process as server_process
from cdc_iceberg.settings import PROJECT_ROOT

CONNECT_JARS = PROJECT_ROOT / "build" / "jars" / "connect"
CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"
DEFAULT_CONNECTOR = "neuronews-articles"
DEFAULT_TOPIC_PREFIX = "neuronews"
SOURCE_TABLE = "public.articles"

_LOG4J2 = """\
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log}">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="io.debezium" level="INFO"/>
    <Logger name="org.apache.kafka.connect" level="INFO"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="org.apache.kafka.connect.runtime.isolation" level="WARN"/>
    <Logger name="org.reflections" level="ERROR"/>
    <Root level="WARN"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""

_SLOT_CHARS = re.compile(r"[^a-z0-9_]")


def slot_name(connector: str) -> str:
    """Replication slot (and publication) name for a connector: Postgres allows [a-z0-9_]{1,63}."""
    return ("dbz_" + _SLOT_CHARS.sub("_", connector.lower()))[:63]


def topic_for(prefix: str) -> str:
    """The topic Debezium writes the changes of ``public.articles`` to."""
    return f"{prefix}.{SOURCE_TABLE}"


@dataclass(frozen=True)
class PostgresSource:
    """Where the connector reads from."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = field(default="postgres", repr=False)
    database: str = "neuronews"


def connector_config(
    name: str,
    source: PostgresSource,
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
    partitions: int = 1,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The Debezium Postgres connector's configuration for ``PUT /connectors/<name>/config``.

    The slot and publication are named after the connector, so two connectors
    never steal each other's WAL position. JSON with schemas is the format the
    job reads (the schema block drives its schema evolution). Connect creates
    the topic itself (``topic.creation.*``): the local broker does not
    auto-create topics.
    """
    slot = slot_name(name)
    config = {
        "connector.class": CONNECTOR_CLASS,
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": source.host,
        "database.port": str(source.port),
        "database.user": source.user,
        "database.password": source.password,
        "database.dbname": source.database,
        "topic.prefix": topic_prefix,
        "table.include.list": SOURCE_TABLE,
        "slot.name": slot,
        "publication.name": slot,
        "publication.autocreate.mode": "filtered",
        "snapshot.mode": "initial",
        "tombstones.on.delete": "true",
        "key.converter": JSON_CONVERTER,
        "key.converter.schemas.enable": "true",
        "value.converter": JSON_CONVERTER,
        "value.converter.schemas.enable": "true",
        "topic.creation.default.replication.factor": "1",
        "topic.creation.default.partitions": str(partitions),
    }
    config.update(extra or {})
    return config


class ConnectError(RuntimeError):
    """The worker or the connector is not in the state asked for."""


def _http(method: str, url: str, body: object = None, timeout: float = 10) -> tuple[int, Any]:
    """One REST call (standard library only): status and decoded JSON (or text).

    Raises ``OSError`` when nothing answers; HTTP errors come back as a status.
    """
    data = json.dumps(body).encode() if body is not None else None
    req = urlrequest.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urlrequest.urlopen(req, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urlerror.HTTPError as failure:
        status, raw = failure.code, failure.read()
    text = raw.decode("utf-8", errors="replace")
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


@dataclass
class ConnectWorker:
    """One distributed-mode worker; ``group`` names its group and its three internal topics."""

    data_dir: Path
    bootstrap_servers: str
    port: int = 8083
    host: str = "127.0.0.1"
    group: str = "cdc-connect"
    heap: str = "512m"
    offset_flush_interval_ms: int = 2000
    extra_properties: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "connect.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "connect.log"

    def properties(self) -> dict[str, str]:
        props = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group,
            "config.storage.topic": f"{self.group}-configs",
            "offset.storage.topic": f"{self.group}-offsets",
            "status.storage.topic": f"{self.group}-status",
            "config.storage.replication.factor": "1",
            "offset.storage.replication.factor": "1",
            "status.storage.replication.factor": "1",
            "offset.storage.partitions": "5",
            "status.storage.partitions": "1",
            "key.converter": JSON_CONVERTER,
            "value.converter": JSON_CONVERTER,
            "key.converter.schemas.enable": "true",
            "value.converter.schemas.enable": "true",
            # how often source offsets (and so Debezium's confirmed LSN) are committed:
            # what a crash redelivers is at most this much
            "offset.flush.interval.ms": str(self.offset_flush_interval_ms),
            "listeners": f"http://{self.host}:{self.port}",
            "rest.advertised.host.name": self.host,
            "rest.advertised.port": str(self.port),
            # a worker that died is replaced by itself on restart: reassign its tasks at once
            # instead of waiting up to five minutes for it to come back
            "scheduled.rebalance.max.delay.ms": "0",
            "topic.creation.enable": "true",
            # the connector is on the worker's classpath and declares itself to ServiceLoader
            "plugin.discovery": "service_load",
        }
        props.update(self.extra_properties)
        return props

    # -- process -----------------------------------------------------------

    def running_pid(self) -> int | None:
        return server_process.running_pid(self.pid_file)

    def answers(self) -> bool:
        try:
            return _http("GET", f"{self.url}/", timeout=2)[0] == 200
        except OSError:
            return False

    def start(self, timeout: float = 120.0) -> None:
        """Start the worker unless it runs, and wait until its REST API serves."""
        if self.running_pid() is not None:
            self._wait_ready(timeout)
            return
        if not (
            CONNECT_JARS.is_dir() and any(CONNECT_JARS.glob("debezium-connector-postgres-*.jar"))
        ):
            raise RuntimeError(
                f"Kafka Connect jars missing in {CONNECT_JARS}: run `make connect-jars` first"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "worker.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        log4j = self.data_dir / "log4j2.xml"
        log4j.write_text(_LOG4J2.format(log=self.log_file))
        command = [
            os.environ.get("JAVA", "java"),
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={log4j}",
            "-Djava.awt.headless=true",
            "-cp",
            str(CONNECT_JARS / "*"),
            "org.apache.kafka.connect.cli.ConnectDistributed",
            str(config),
        ]
        out = open(self.data_dir / "connect.stdout", "ab")  # noqa: SIM115 - owned by the child
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()
        self.pid_file.write_text(str(process.pid))
        self._wait_ready(timeout, process)

    def _wait_ready(self, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise ConnectError(
                    f"Kafka Connect exited with {process.returncode}:\n{self.log_tail()}"
                )
            try:
                # /connectors answers only once the worker has joined its group and read its configs
                if _http("GET", f"{self.url}/connectors", timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(
            f"Kafka Connect at {self.url} not ready in {timeout}s:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:] if self.log_file.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker if it runs.

        SIGTERM lets tasks commit their offsets; SIGKILL follows after ``timeout``.
        """
        server_process.stop(self.pid_file, timeout)

    def kill(self) -> None:
        """``kill -9``: no offset commit, no clean leave of the group (for fault tests)."""
        server_process.kill(self.pid_file)
        self.pid_file.unlink(missing_ok=True)

    # -- connectors ----------------------------------------------------------

    def register(self, name: str, config: dict[str, str]) -> None:
        """Create or update a connector (``PUT`` is idempotent: same config, no change)."""
        deadline = time.monotonic() + 60
        while True:
            status, answer = _http("PUT", f"{self.url}/connectors/{name}/config", config, 30)
            # 409: the group is rebalancing (e.g. just after a restart): try again shortly
            if status != 409 or time.monotonic() > deadline:
                break
            time.sleep(1)
        if status not in (200, 201):
            raise ConnectError(f"registering connector {name} failed ({status}): {answer}")

    def status(self, name: str) -> dict[str, Any] | None:
        status, answer = _http("GET", f"{self.url}/connectors/{name}/status")
        if status == 404:
            return None
        if status != 200 or not isinstance(answer, dict):
            raise ConnectError(f"status of connector {name} failed ({status}): {answer}")
        return answer

    def wait_running(self, name: str, timeout: float = 120.0, restarts: int = 3) -> None:
        """Wait until the connector and all its tasks are RUNNING.

        A task that FAILED is restarted up to ``restarts`` times (after a crash
        the old replication connection may still hold the slot for a moment);
        beyond that, the task's trace is raised.
        """
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            try:
                last = self.status(name)
            except (OSError, ConnectError):
                last = None
            if last is not None:
                tasks = last.get("tasks", [])
                states = [t.get("state") for t in tasks]
                if (
                    last["connector"]["state"] == "RUNNING"
                    and tasks
                    and all(s == "RUNNING" for s in states)
                ):
                    return
                failed = [t for t in tasks if t.get("state") == "FAILED"]
                if failed:
                    if restarts <= 0:
                        raise ConnectError(
                            f"connector {name} task failed:\n{failed[0].get('trace', '')[:4000]}"
                        )
                    restarts -= 1
                    time.sleep(2)
                    for task in failed:
                        _http("POST", f"{self.url}/connectors/{name}/tasks/{task['id']}/restart")
            time.sleep(0.5)
        raise TimeoutError(f"connector {name} not RUNNING in {timeout}s: {last}\n{self.log_tail()}")

    def delete(self, name: str) -> None:
        """Remove a connector (its replication slot stays in Postgres, as Debezium leaves it)."""
        status, answer = _http("DELETE", f"{self.url}/connectors/{name}", timeout=30)
        if status not in (200, 204, 404):
            raise ConnectError(f"deleting connector {name} failed ({status}): {answer}")


def worker_from_env() -> ConnectWorker:
    from cdc_iceberg.settings import Settings

    settings = Settings.from_env()
    data_dir = Path(os.environ.get("CONNECT_DATA_DIR", PROJECT_ROOT / ".local" / "connect"))
    return ConnectWorker(
        data_dir=data_dir,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        port=int(os.environ.get("CONNECT_PORT") or 8083),
    )


def source_from_env() -> PostgresSource:
    env = os.environ
    return PostgresSource(
        host=env.get("PGHOST") or "127.0.0.1",
        port=int(env.get("PGPORT") or 5432),
        user=env.get("PGUSER") or "postgres",
        password=env.get("PGPASSWORD") or "postgres",
        database=env.get("PGDATABASE") or "neuronews",
    )


# What ``make cdc-up`` captures: every table of the public schema, a table created
# later included (a publication FOR ALL TABLES; Postgres then refuses UPDATE and DELETE
# on a table without a primary key or replica identity, as any such publication does).
CAPTURE_ALL_PUBLIC = {
    "table.include.list": r"public\..*",
    "publication.autocreate.mode": "all_tables",
}


def register_from_env(worker: ConnectWorker) -> str:
    """Register the connector for every table of ``public``, topics named after
    ``KAFKA_TOPIC``'s prefix (the part before ``.public.``)."""
    from cdc_iceberg.settings import Settings

    topic = Settings.from_env().kafka_topic
    suffix = f".{SOURCE_TABLE}"
    prefix = topic[: -len(suffix)] if topic.endswith(suffix) else DEFAULT_TOPIC_PREFIX
    name = os.environ.get("CONNECTOR_NAME") or DEFAULT_CONNECTOR
    worker.register(
        name, connector_config(name, source_from_env(), prefix, extra=CAPTURE_ALL_PUBLIC)
    )
    worker.wait_running(name)
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("command", choices=["up", "register", "down", "status"])
    args = parser.parse_args(argv)
    worker = worker_from_env()
    if args.command in ("up", "register"):
        if args.command == "up":
            worker.start()
        name = register_from_env(worker)
        print(f"Kafka Connect at {worker.url}: connector {name} RUNNING")
    elif args.command == "down":
        worker.stop()
        print("Kafka Connect stopped")
    else:
        state = "running" if worker.running_pid() and worker.answers() else "stopped"
        print(f"Kafka Connect at {worker.url}: {state}")
        return 0 if state == "running" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
