"""A single-node Apache Kafka broker in KRaft mode, run as a plain JVM process.

Usage::

    python -m cdc_iceberg.local.kafka_broker up      # start, wait until it answers
    python -m cdc_iceberg.local.kafka_broker down    # stop
    python -m cdc_iceberg.local.kafka_broker status

The broker listens on 127.0.0.1 at the port of ``KAFKA_BOOTSTRAP_SERVERS`` and
keeps its data under ``KAFKA_DATA_DIR`` (default ``.local/kafka``). Both
commands are safe to repeat. The jars come from ``jvm/kafka/pom.xml``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cdc_iceberg.settings import PROJECT_ROOT

KAFKA_JARS = PROJECT_ROOT / "build" / "jars" / "kafka"

_LOG4J2 = """\
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log}">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="INFO"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Root level="WARN"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


@dataclass
class KafkaBroker:
    """One broker; ``extra_properties`` are appended to ``server.properties``."""

    data_dir: Path
    port: int = 9092
    host: str = "127.0.0.1"
    heap: str = "512m"
    extra_properties: dict[str, str] = field(default_factory=dict)
    listener_protocol: str = "PLAINTEXT"
    jvm_options: list[str] = field(default_factory=list)
    # the port clients are told to connect to (e.g. a proxy in front of the broker)
    advertised_port: int | None = None

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def properties(self) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": (
                f"BROKER://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "advertised.listeners": f"BROKER://{self.host}:{self.advertised_port or self.port}",
            "listener.security.protocol.map": (
                f"BROKER:{self.listener_protocol},CONTROLLER:PLAINTEXT"
            ),
            "inter.broker.listener.name": "BROKER",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.check.interval.ms": "5000",
        }
        props.update(self.extra_properties)
        return props

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def start(self, timeout: float = 90.0) -> None:
        """Start the broker unless it is already running, and wait until it serves."""
        if self.running_pid() is not None:
            self._wait_ready(timeout)
            return
        if not (KAFKA_JARS.is_dir() and any(KAFKA_JARS.glob("kafka_2.13-*.jar"))):
            raise RuntimeError(f"Kafka jars missing in {KAFKA_JARS}: run `make jars` first")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        log4j = self.data_dir / "log4j2.xml"
        log4j.write_text(_LOG4J2.format(log=self.log_file))
        meta = self.data_dir / "logs" / "meta.properties"
        if not meta.exists():
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                uuid.uuid4().hex[:22],
                "--config",
                str(config),
                "--ignore-formatted",
                log4j=log4j,
                check=True,
            )
        process = self._java(
            "kafka.Kafka", str(config), log4j=log4j, background=True, heap=self.heap
        )
        self.pid_file.write_text(str(process.pid))
        self._wait_ready(timeout, process)

    def _wait_ready(self, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                tail = self.log_file.read_text()[-3000:] if self.log_file.exists() else ""
                raise RuntimeError(f"Kafka broker exited with {process.returncode}:\n{tail}")
            if self.answers() and self.listener_protocol == "PLAINTEXT":
                try:
                    admin = KafkaAdminClient(
                        bootstrap_servers=self.bootstrap_servers, request_timeout_ms=5000
                    )
                    try:
                        admin.describe_cluster()
                        return
                    finally:
                        admin.close()
                except KafkaError:
                    pass
            elif self.answers():
                return
            time.sleep(0.5)
        raise TimeoutError(f"Kafka broker at {self.bootstrap_servers} not ready in {timeout}s")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker if it runs (SIGTERM, then SIGKILL after ``timeout``)."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            _reap(pid)
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """kill -9, for fault tests."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            _reap(pid)

    def wait_exited(self, timeout: float = 30.0) -> None:
        """Wait until the broker process is gone (reaped if it is our child)."""
        pid = self.running_pid()
        deadline = time.monotonic() + timeout
        while pid is not None:
            _reap(pid)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka broker {pid} still running after {timeout}s")
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)

    def restart_after_kill(self, timeout: float = 90.0) -> None:
        """kill -9 the broker, then start it again on the same data dir and port."""
        self.kill()
        self.wait_exited()
        self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets but answers nothing (fault tests)."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    def _java(
        self,
        main: str,
        *args: str,
        log4j: Path,
        background: bool = False,
        check: bool = False,
        heap: str = "256m",
    ) -> subprocess.Popen[bytes]:
        command = [
            os.environ.get("JAVA", "java"),
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1" if not background else "-XX:+UseStringDeduplication",
            f"-Dlog4j2.configurationFile={log4j}",
            "-Djava.awt.headless=true",
            *self.jvm_options,
            "-cp",
            str(KAFKA_JARS / "*"),
            main,
            *args,
        ]
        if background:
            out = open(self.data_dir / "broker.stdout", "ab")  # noqa: SIM115 - owned by the child
            return subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        result = subprocess.run(command, capture_output=True, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{main} failed ({result.returncode}):\n"
                f"{result.stdout.decode()}{result.stderr.decode()}"
            )
        return subprocess.Popen(["true"])


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def broker_from_env() -> KafkaBroker:
    from cdc_iceberg.settings import Settings

    settings = Settings.from_env()
    first = settings.kafka_bootstrap_servers.split(",")[0]
    port = int(first.rsplit(":", 1)[1]) if ":" in first else 9092
    data_dir = Path(os.environ.get("KAFKA_DATA_DIR", PROJECT_ROOT / ".local" / "kafka"))
    return KafkaBroker(data_dir=data_dir, port=port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    broker = broker_from_env()
    if args.command == "up":
        broker.start()
        print(f"Kafka broker ready at {broker.bootstrap_servers} (data in {broker.data_dir})")
    elif args.command == "down":
        broker.stop()
        print("Kafka broker stopped")
    else:
        state = "running" if broker.running_pid() and broker.answers() else "stopped"
        print(f"Kafka broker at {broker.bootstrap_servers}: {state}")
        return 0 if state == "running" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
