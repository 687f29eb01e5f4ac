"""An Iceberg REST catalog server, run as a plain JVM process on this machine.

The server is Iceberg's own REST catalog (``org.apache.iceberg.rest.RESTCatalogServer``,
fetched by ``jvm/rest-catalog/pom.xml`` into ``build/jars/rest-catalog``). It serves
the REST protocol on top of a JdbcCatalog: a SQLite file in its data directory by
default, or a Postgres database. Spark and pyiceberg reach it with
``ICEBERG_CATALOG_TYPE=rest`` and ``ICEBERG_CATALOG_URI=http://127.0.0.1:<port>``.

Usage::

    python -m cdc_iceberg.local.rest_catalog up      # start (if not running) and wait
    python -m cdc_iceberg.local.rest_catalog down    # stop
    python -m cdc_iceberg.local.rest_catalog status

It listens on ``REST_CATALOG_PORT`` (default 8181) and keeps its pid, log and
SQLite file in ``REST_CATALOG_DATA_DIR`` (default ``.local/rest-catalog``). Table
files go to ``ICEBERG_WAREHOUSE``. ``REST_CATALOG_BACKEND_URI`` names another
backing database (``jdbc:postgresql://host:port/db``) with ``REST_CATALOG_BACKEND_USER``
and ``REST_CATALOG_BACKEND_PASSWORD``; the password reaches the server through a
password file readable by its owner only, never its command line, environment or log.
The server binds every interface (the fixture takes no address): keep its port
closed to other machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from cdc_iceberg.local import process as server_process
from cdc_iceberg.settings import PROJECT_ROOT, Settings

REST_CATALOG_JARS = PROJECT_ROOT / "build" / "jars" / "rest-catalog"
MAIN_CLASS = "org.apache.iceberg.rest.RESTCatalogServer"
DEFAULT_PORT = 8181


@dataclass
class RestCatalogServer:
    """One REST catalog server: its port, warehouse and backing JDBC database."""

    data_dir: Path
    warehouse: str
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"
    # JDBC URL of the backing catalog database; empty: a SQLite file in data_dir
    backend_uri: str = ""
    backend_user: str = ""
    backend_password: str = field(default="", repr=False)
    heap: str = "256m"

    @property
    def uri(self) -> str:
        """What ICEBERG_CATALOG_URI says to reach this server."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "rest-catalog.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "rest-catalog.log"

    @property
    def _passfile(self) -> Path:
        return self.data_dir / "backend.pgpass"

    def settings(self, base: Settings) -> Settings:
        """``base`` pointed at this server (catalog type rest, its URI and warehouse)."""
        return base.replace(
            iceberg_catalog_type="rest",
            iceberg_catalog_uri=self.uri,
            iceberg_warehouse=self.warehouse,
        )

    # -- process ----------------------------------------------------------

    def running_pid(self) -> int | None:
        return server_process.running_pid(self.pid_file)

    def answers(self) -> bool:
        """Whether the server answers the REST protocol's config request."""
        try:
            with urllib.request.urlopen(f"{self.uri}/v1/config", timeout=2) as response:
                return bool(response.status == 200 and "defaults" in json.load(response))
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def _environment(self) -> dict[str, str]:
        """The server's environment: its configuration as ``CATALOG_*`` variables.

        The fixture turns ``CATALOG_A_B__C`` into the catalog property ``a.b-c``
        and prints the properties it got when it starts: the backing database's
        password is not among them (see :meth:`_write_passfile`).
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CATALOG_", "PG"))}
        backend = self.backend_uri or f"jdbc:sqlite:{self.data_dir / 'catalog.db'}"
        env.update(
            CATALOG_URI=backend,
            CATALOG_WAREHOUSE=self.warehouse,
            CATALOG_REST_PORT=str(self.port),
            # Iceberg's newer JdbcCatalog tables (with views), as Spark's JdbcCatalog can read
            CATALOG_JDBC_SCHEMA__VERSION="V1",
        )
        if self.backend_user:
            env["CATALOG_JDBC_USER"] = self.backend_user
        if self.backend_password:
            env["PGPASSFILE"] = str(self._write_passfile())
        return env

    def _write_passfile(self) -> Path:
        """The backing Postgres password in a libpq password file (mode 0600) the JDBC
        driver reads: it never appears in the catalog properties the server logs."""
        parsed = urlparse(self.backend_uri.removeprefix("jdbc:"))
        database = parsed.path.lstrip("/") or "*"

        def quoted(value: str) -> str:
            return value.replace("\\", "\\\\").replace(":", "\\:")

        line = ":".join(
            quoted(part)
            for part in (
                parsed.hostname or "*",
                str(parsed.port or 5432),
                database,
                self.backend_user or "*",
                self.backend_password,
            )
        )
        fd = os.open(self._passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(line + "\n")
        return self._passfile

    def start(self, timeout: float = 60.0) -> None:
        """Start the server unless it runs, and wait until it answers."""
        if self.running_pid() is not None and self.answers():
            return
        jars = sorted(REST_CATALOG_JARS.glob("*.jar"))
        if not any(j.name.startswith("iceberg-open-api") for j in jars):
            raise RuntimeError(
                f"REST catalog jars missing in {REST_CATALOG_JARS}: run `make jars` first"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.warehouse.startswith("file://"):
            Path(urlparse(self.warehouse).path).mkdir(parents=True, exist_ok=True)
        command = [
            os.environ.get("JAVA", "java"),
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            "-cp",
            str(REST_CATALOG_JARS / "*"),
            MAIN_CLASS,
        ]
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._environment(),
                cwd=self.data_dir,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + timeout
        while not self.answers():
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise RuntimeError(
                    f"REST catalog server exited with {process.returncode}:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"REST catalog at {self.uri} not ready in {timeout}s:\n{self._log_tail()}"
                )
            time.sleep(0.3)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server if it runs (SIGTERM, then SIGKILL after ``timeout``)."""
        server_process.stop(self.pid_file, timeout)
        self._passfile.unlink(missing_ok=True)

    def _log_tail(self) -> str:
        return self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""


def server_from_env() -> RestCatalogServer:
    """The local server as the ``REST_CATALOG_*`` variables and ICEBERG_WAREHOUSE describe it."""
    env = os.environ
    return RestCatalogServer(
        data_dir=Path(env.get("REST_CATALOG_DATA_DIR") or PROJECT_ROOT / ".local" / "rest-catalog"),
        warehouse=Settings.from_env().iceberg_warehouse,
        port=int(env.get("REST_CATALOG_PORT") or DEFAULT_PORT),
        backend_uri=env.get("REST_CATALOG_BACKEND_URI", ""),
        backend_user=env.get("REST_CATALOG_BACKEND_USER", ""),
        backend_password=env.get("REST_CATALOG_BACKEND_PASSWORD", ""),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    server = server_from_env()
    if args.command == "up":
        server.start()
        print(
            f"Iceberg REST catalog ready at {server.uri} (warehouse {server.warehouse}): "
            f"ICEBERG_CATALOG_TYPE=rest ICEBERG_CATALOG_URI={server.uri}"
        )
    elif args.command == "down":
        server.stop()
        print("Iceberg REST catalog stopped")
    else:
        state = "running" if server.running_pid() is not None and server.answers() else "stopped"
        print(f"Iceberg REST catalog at {server.uri}: {state}")
        return 0 if state == "running" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
