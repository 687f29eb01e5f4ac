"""A single-node Apache Kafka broker in KRaft mode, run as a plain JVM process.

Usage::

    python -m cdc_iceberg.local.kafka_broker up      # start, wait until it answers
    python -m cdc_iceberg.local.kafka_broker down    # stop
    python -m cdc_iceberg.local.kafka_broker status
    python -m cdc_iceberg.local.kafka_broker up --brokers 3   # a three-node cluster

The broker listens on 127.0.0.1 at the port of ``KAFKA_BOOTSTRAP_SERVERS`` and
keeps its data under ``KAFKA_DATA_DIR`` (default ``.local/kafka``). Both
commands are safe to repeat. The jars come from ``jvm/kafka/pom.xml``.

With ``security=BrokerSecurity(...)`` (see :func:`make_tls`) the client
listener is SASL_SSL with SCRAM-SHA-512: a certificate signed by a CA of its
own, PEM files clients trust, and SCRAM users created when the storage is
formatted. The controller listener stays PLAINTEXT on loopback.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdc_iceberg.local import process as server_process
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
    security: BrokerSecurity | None = None
    # in a cluster (KafkaCluster): this node's id, every controller's id@host:port, the
    # cluster id the storage is formatted with, and how many copies topics keep
    node_id: int = 1
    quorum_voters: str = ""
    cluster_id: str = ""
    replication: int = 1

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
        # a write is acknowledged by two copies once there are three: one broker may fail
        min_insync = 2 if self.replication >= 3 else 1
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": (
                self.quorum_voters or f"{self.node_id}@{self.host}:{self.controller_port}"
            ),
            "listeners": (
                f"BROKER://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "advertised.listeners": f"BROKER://{self.host}:{self.advertised_port or self.port}",
            "listener.security.protocol.map": (f"BROKER:{self.protocol},CONTROLLER:PLAINTEXT"),
            "inter.broker.listener.name": "BROKER",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "default.replication.factor": str(self.replication),
            "min.insync.replicas": str(min_insync),
            "offsets.topic.replication.factor": str(self.replication),
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": str(self.replication),
            "transaction.state.log.min.isr": str(min_insync),
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": str(self.replication),
            "share.coordinator.state.topic.min.isr": str(min_insync),
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.check.interval.ms": "5000",
        }
        if self.security is not None:
            props.update(self.security.broker_properties())
        props.update(self.extra_properties)
        return props

    @property
    def protocol(self) -> str:
        """Security protocol of the client listener."""
        return "SASL_SSL" if self.security is not None else self.listener_protocol

    def client_kwargs(self) -> dict[str, Any]:
        """kafka-python arguments that reach this broker (as its first SCRAM user if secured)."""
        kwargs: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers}
        if self.security is not None:
            kwargs.update(self.security.client_kwargs())
        return kwargs

    def running_pid(self) -> int | None:
        return server_process.running_pid(self.pid_file)

    def answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def start(self, timeout: float = 90.0) -> None:
        """Start the broker unless it is already running, and wait until it serves."""
        self._wait_ready(timeout, self.launch())

    def launch(self) -> subprocess.Popen[bytes] | None:
        """Start the broker's process unless it runs already (None then); do not wait."""
        if self.running_pid() is not None:
            return None
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
                self.cluster_id or uuid.uuid4().hex[:22],
                "--config",
                str(config),
                "--ignore-formatted",
                *(self.security.format_args() if self.security is not None else ()),
                log4j=log4j,
                check=True,
            )
        process = self._java(
            "kafka.Kafka", str(config), log4j=log4j, background=True, heap=self.heap
        )
        self.pid_file.write_text(str(process.pid))
        return process

    def _wait_ready(self, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        from cdc_iceberg.kafka_offsets import closed_on_failure

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                tail = self.log_file.read_text()[-3000:] if self.log_file.exists() else ""
                raise RuntimeError(f"Kafka broker exited with {process.returncode}:\n{tail}")
            if self.answers() and self.protocol in ("PLAINTEXT", "SASL_SSL"):
                try:
                    admin = closed_on_failure(KafkaAdminClient)(
                        request_timeout_ms=5000, **self.client_kwargs()
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
        server_process.stop(self.pid_file, timeout)

    def kill(self) -> None:
        """kill -9, for fault tests."""
        server_process.kill(self.pid_file)

    def wait_exited(self, timeout: float = 30.0) -> None:
        """Wait until the broker process is gone (reaped if it is our child)."""
        pid = self.running_pid()
        if pid is not None and not server_process.wait_gone(pid, timeout):
            raise TimeoutError(f"Kafka broker {pid} still running after {timeout}s")
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


@dataclass
class KafkaCluster:
    """Brokers of one KRaft cluster on loopback, each node a broker and a controller.

    With three nodes, topics keep three copies and a write needs two
    (``min.insync.replicas=2``): any one broker may be killed and the cluster
    goes on serving. Node ``i`` listens on ``ports[i]`` (its controller on the
    port after) and keeps its data in ``data_dir/broker-<i + 1>``.
    """

    data_dir: Path
    ports: list[int]
    host: str = "127.0.0.1"
    heap: str = "512m"
    brokers: list[KafkaBroker] = field(init=False)

    def __post_init__(self) -> None:
        voters = ",".join(f"{n}@{self.host}:{p + 1}" for n, p in enumerate(self.ports, 1))
        id_file = self.data_dir / "cluster.id"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex[:22])
        cluster_id = id_file.read_text().strip()
        self.brokers = [
            KafkaBroker(
                data_dir=self.data_dir / f"broker-{n}",
                port=port,
                host=self.host,
                heap=self.heap,
                node_id=n,
                quorum_voters=voters,
                cluster_id=cluster_id,
                replication=len(self.ports),
            )
            for n, port in enumerate(self.ports, 1)
        ]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(b.bootstrap_servers for b in self.brokers)

    def broker(self, node_id: int) -> KafkaBroker:
        return self.brokers[node_id - 1]

    def start(self, timeout: float = 120.0) -> None:
        """Start every node, then wait until each serves (the quorum needs a majority up)."""
        processes = [b.launch() for b in self.brokers]
        for broker, process in zip(self.brokers, processes, strict=True):
            broker._wait_ready(timeout, process)

    def stop(self) -> None:
        """Stop every node at once: one by one, the last would wait for a quorum gone."""
        import threading

        def stop(broker: KafkaBroker) -> None:
            broker.resume()  # a frozen broker cannot act on SIGTERM
            broker.stop()

        threads = [threading.Thread(target=stop, args=(b,)) for b in self.brokers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


@dataclass(frozen=True)
class TlsMaterial:
    """PEM files of a test CA and a broker certificate signed by it."""

    ca_file: Path
    """The CA certificate: the truststore of clients (``KAFKA_SSL_CAFILE``)."""
    keystore_file: Path
    """The broker's private key (PKCS#8, unencrypted) followed by its certificate chain."""


def make_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsMaterial:
    """Create a self-signed CA and a broker certificate for ``hosts`` (names or IP addresses)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30))

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("cdc-iceberg test CA"))
        .issuer_name(name("cdc-iceberg test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    keystore = directory / "broker-keystore.pem"
    keystore.touch(mode=0o600)
    keystore.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(pem)
        + ca_cert.public_bytes(pem)
    )
    return TlsMaterial(ca_file=ca_file, keystore_file=keystore)


@dataclass
class BrokerSecurity:
    """A SASL_SSL client listener with SCRAM users.

    ``users`` maps user names to passwords; the first one is also the broker's
    own (inter-broker) identity. The users are created when the storage is
    formatted (``kafka-storage format --add-scram``), so a broker whose data
    directory already exists keeps the users it was formatted with.
    """

    tls: TlsMaterial
    users: dict[str, str]
    mechanism: str = "SCRAM-SHA-512"

    def __post_init__(self) -> None:
        if not self.users:
            raise ValueError("a SASL listener needs at least one SCRAM user")
        for user, password in self.users.items():
            # the StorageTool's [name=...,password=...] syntax and the JAAS quoting
            if not user.isidentifier() or any(c in password for c in '",[]=\\ '):
                raise ValueError(f"SCRAM user {user!r}: use letters, digits and _ only")

    @property
    def broker_user(self) -> tuple[str, str]:
        return next(iter(self.users.items()))

    def broker_properties(self) -> dict[str, str]:
        user, password = self.broker_user
        module = "org.apache.kafka.common.security.scram.ScramLoginModule"
        prefix = f"listener.name.broker.{self.mechanism.lower()}"
        return {
            "sasl.enabled.mechanisms": self.mechanism,
            "sasl.mechanism.inter.broker.protocol": self.mechanism,
            f"{prefix}.sasl.jaas.config": (
                f'{module} required username="{user}" password="{password}";'
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.tls.keystore_file),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.tls.ca_file),
            "ssl.endpoint.identification.algorithm": "https",
            "ssl.client.auth": "none",
        }

    def format_args(self) -> list[str]:
        args: list[str] = []
        for user, password in self.users.items():
            args += ["--add-scram", f"{self.mechanism}=[name={user},password={password}]"]
        return args

    def client_kwargs(self) -> dict[str, Any]:
        user, password = self.broker_user
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": user,
            "sasl_plain_password": password,
            "ssl_cafile": str(self.tls.ca_file),
        }


def _ports_from_env() -> list[int]:
    from cdc_iceberg.settings import Settings

    servers = Settings.from_env().kafka_bootstrap_servers.split(",")
    return [int(s.rsplit(":", 1)[1]) if ":" in s else 9092 for s in servers]


def _data_dir() -> Path:
    return Path(os.environ.get("KAFKA_DATA_DIR", PROJECT_ROOT / ".local" / "kafka"))


def broker_from_env() -> KafkaBroker:
    """The one broker at the first address of ``KAFKA_BOOTSTRAP_SERVERS``."""
    return KafkaBroker(data_dir=_data_dir(), port=_ports_from_env()[0])


def cluster_from_env(brokers: int) -> KafkaCluster:
    """``brokers`` nodes at the addresses of ``KAFKA_BOOTSTRAP_SERVERS`` (one each)."""
    ports = _ports_from_env()
    if len(ports) != brokers:
        raise SystemExit(
            f"KAFKA_BOOTSTRAP_SERVERS names {len(ports)} address(es), not {brokers}: give "
            "each broker its own (e.g. 127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096; "
            "each takes the port after its own for its controller)"
        )
    return KafkaCluster(data_dir=_data_dir() / "cluster", ports=ports)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--brokers", type=int, default=1, help="nodes of a KRaft cluster (3: replication 3)"
    )
    args = parser.parse_args(argv)
    cluster = cluster_from_env(args.brokers) if args.brokers > 1 else None
    nodes = cluster.brokers if cluster else [broker_from_env()]
    where = ",".join(b.bootstrap_servers for b in nodes)
    if args.command == "up":
        cluster.start() if cluster else nodes[0].start()
        print(f"Kafka ready at {where} (data in {nodes[0].data_dir})")
    elif args.command == "down":
        cluster.stop() if cluster else nodes[0].stop()
        print("Kafka stopped")
    else:
        running = all(b.running_pid() and b.answers() for b in nodes)
        print(f"Kafka at {where}: {'running' if running else 'stopped'}")
        return 0 if running else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
