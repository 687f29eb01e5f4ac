"""A PostgreSQL server from Debian's packages, run as a plain process on 127.0.0.1.

This is the real change source: Debezium reads its write-ahead log through a
logical replication slot, so the server runs with ``wal_level=logical``.

Usage::

    python -m cdc_iceberg.local.postgres up      # initdb if needed, start, create the schema
    python -m cdc_iceberg.local.postgres down    # stop
    python -m cdc_iceberg.local.postgres status

The server listens on ``PGHOST`` (default 127.0.0.1) at ``PGPORT`` (default
5432); the superuser is ``PGUSER`` (default postgres) with password
``PGPASSWORD`` (default postgres). Data lives in ``POSTGRES_DATA_DIR`` (default
``.local/postgres``, see :func:`default_data_dir`). Both commands are safe to repeat.

``initdb`` and the server refuse to run as root. When this runs as root, they
run as the unprivileged ``postgres`` OS user (created if missing, as Debian's
package does), which must own the data directory and be able to reach it:
every parent directory needs the execute bit for others.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import hashlib
import json
import os
import pwd
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdc_iceberg.settings import PROJECT_ROOT, check_identifier

DATABASE = "neuronews"

ARTICLES_DDL = """\
CREATE TABLE IF NOT EXISTS public.articles (
    article_id   text PRIMARY KEY,
    title        text,
    url          text,
    source       text,
    author       text,
    body         text,
    published_at timestamptz,
    updated_at   timestamptz,
    word_count   integer
)"""

# Settings of the local server. fsync and synchronous commits are off: the
# server holds throw-away development data, and a crash of the machine is not
# a scenario the local stack tests (Connect and the Spark job are the parts
# whose crashes matter, and they do not depend on these).
_SERVER_CONF = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "wal_sender_timeout": "60s",
    "max_connections": "60",
    "shared_buffers": "128MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "logging_collector": "off",
    "log_min_messages": "warning",
}

_VERSION_DIR = re.compile(r"^\d+$")


def postgres_bin_dir() -> Path:
    """``/usr/lib/postgresql/<newest>/bin`` of Debian's packages (``POSTGRES_BIN`` overrides)."""
    override = os.environ.get("POSTGRES_BIN")
    if override:
        return Path(override)
    root = Path("/usr/lib/postgresql")
    versions = (
        sorted((p for p in root.iterdir() if _VERSION_DIR.match(p.name)), key=lambda p: int(p.name))
        if root.is_dir()
        else []
    )
    for version in reversed(versions):
        if (version / "bin" / "pg_ctl").exists():
            return version / "bin"
    raise RuntimeError(
        "PostgreSQL server binaries not found under /usr/lib/postgresql: "
        "install Debian's package (apt-get install -y postgresql)"
    )


class SqlError(RuntimeError):
    """A statement run through psql failed."""


@dataclass
class PostgresServer:
    """One local cluster with the ``neuronews`` database and its ``articles`` table."""

    data_dir: Path
    port: int = 5432
    host: str = "127.0.0.1"
    user: str = "postgres"
    password: str = "postgres"
    database: str = DATABASE
    os_user: str = "postgres"

    # -- paths and identity --------------------------------------------

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _run_as(self) -> dict[str, Any]:
        """``subprocess`` keyword arguments that drop root for the server's own commands."""
        if not self._as_root():
            return {}
        entry = pwd.getpwnam(self.os_user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _ensure_os_user(self) -> None:
        if not self._as_root():
            return
        try:
            pwd.getpwnam(self.os_user)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    self.os_user,
                ],
                check=True,
                capture_output=True,
            )

    def _chown(self, path: Path) -> None:
        if not self._as_root():
            return
        entry = pwd.getpwnam(self.os_user)
        group = grp.getgrgid(entry.pw_gid).gr_gid
        for root, dirs, files in os.walk(path):
            os.chown(root, entry.pw_uid, group)
            for name in (*dirs, *files):
                os.chown(os.path.join(root, name), entry.pw_uid, group, follow_symlinks=False)

    def _check_reachable(self) -> None:
        """Fail early, with the reason, when the server's user cannot reach its directory."""
        if not self._as_root():
            return
        for parent in self.data_dir.resolve().parents:
            if not _searchable_by_others(parent):
                raise RuntimeError(
                    f"{parent} is not searchable by other users, so the {self.os_user!r} OS user "
                    f"cannot reach {self.data_dir}: choose a data directory outside it "
                    "(POSTGRES_DATA_DIR) or chmod o+x the directory"
                )

    # -- server commands ------------------------------------------------

    def _server_cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        result = subprocess.run(
            [str(postgres_bin_dir() / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            cwd=self.data_dir,
            env=env,
            check=False,
            **self._run_as(),
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return result

    def running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        return (
            self._server_cmd("pg_ctl", "status", "-D", str(self.pgdata), check=False).returncode
            == 0
        )

    def _initdb(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        os.chmod(self.pgdata, 0o700)
        pwfile = self.data_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._chown(self.data_dir)
        try:
            self._server_cmd(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = self.pgdata / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write("\n# the local CDC stack's settings\ninclude_if_exists = 'cdc.conf'\n")

    def _write_conf(self) -> None:
        settings = {
            **_SERVER_CONF,
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            # no Unix socket: /var/run/postgresql may not exist, and clients use TCP
            "unix_socket_directories": "''",
        }
        path = self.pgdata / "cdc.conf"
        path.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        self._chown(path)

    def start(self, timeout: float = 60.0) -> None:
        """Start the server unless it runs, then create the database and table if missing."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_os_user()
        self._check_reachable()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        if not self.running():
            self._write_conf()
            self._chown(self.data_dir)
            result = self._server_cmd(
                "pg_ctl",
                "start",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(int(timeout)),
                check=False,
            )
            if result.returncode != 0:
                tail = self.log_file.read_text()[-3000:] if self.log_file.exists() else ""
                raise RuntimeError(
                    f"PostgreSQL did not start ({result.returncode}):\n{result.stderr}\n{tail}"
                )
        self._wait_ready(timeout)
        self.ensure_database(self.database)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                self.sql("SELECT 1", database="postgres")
                return
            except SqlError as error:
                last = str(error)
            time.sleep(0.3)
        raise TimeoutError(f"PostgreSQL at {self.host}:{self.port} not ready in {timeout}s: {last}")

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the server if it runs (fast shutdown: open sessions are disconnected)."""
        if not self.running():
            return
        self._server_cmd(
            "pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", str(int(timeout))
        )

    # -- SQL --------------------------------------------------------------

    def dsn(self, database: str | None = None) -> str:
        return (
            f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/"
            f"{database or self.database}"
        )

    def sql(self, statements: str, database: str | None = None) -> str:
        """Run SQL through ``psql`` (stops at the first error) and return its unaligned output.

        ``psql`` ships with the server package, so the stack needs no Python
        driver; rows come back one a line, fields separated by ``|``.
        """
        env = dict(os.environ)
        env.update(
            PGHOST=self.host,
            PGPORT=str(self.port),
            PGUSER=self.user,
            PGPASSWORD=self.password,
            PGDATABASE=database or self.database,
            PGCONNECT_TIMEOUT="5",
            PGCLIENTENCODING="UTF8",
        )
        result = subprocess.run(
            [str(postgres_bin_dir() / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
            input=statements,
            capture_output=True,
            text=True,
            encoding="utf-8",
            env=env,
            check=False,
        )
        if result.returncode != 0:
            raise SqlError(result.stderr.strip() or f"psql exited with {result.returncode}")
        return result.stdout

    def query(self, select: str, database: str | None = None) -> list[dict[str, Any]]:
        """Rows of a SELECT as dicts, through JSON so that types and NULLs survive."""
        text = self.sql(
            f"SELECT coalesce(json_agg(q), '[]'::json) FROM ({select}) q", database=database
        )
        rows: list[dict[str, Any]] = json.loads(text)
        return rows

    def scalar(self, select: str, database: str | None = None) -> str:
        return self.sql(select, database=database).strip()

    def ensure_database(self, name: str) -> None:
        """Create the database (if missing) with the ``articles`` table: safe to repeat."""
        check_identifier(name, "database name")
        exists = self.scalar(
            f"SELECT 1 FROM pg_database WHERE datname = '{name}'", database="postgres"
        )
        if not exists:
            self.sql(f'CREATE DATABASE "{name}"', database="postgres")
        self.sql(ARTICLES_DDL, database=name)

    def drop_database(self, name: str, timeout: float = 30.0) -> None:
        """Drop a database with the replication slots that point into it.

        A slot cannot be dropped while a walsender still streams from it (a
        connector that was just deleted lets go asynchronously), and a
        database cannot be dropped while it has slots: end those senders
        first, then retry until the slots are gone.
        """
        check_identifier(name, "database name")
        deadline = time.monotonic() + timeout
        while True:
            self.sql(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                f"WHERE database = '{name}' AND active_pid IS NOT NULL",
                database="postgres",
            )
            # a slot can become active again between the two statements: then try again
            with contextlib.suppress(SqlError):
                self.sql(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    f"WHERE database = '{name}' AND NOT active",
                    database="postgres",
                )
            left = self.scalar(
                f"SELECT count(*) FROM pg_replication_slots WHERE database = '{name}'",
                database="postgres",
            )
            if left == "0":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"replication slots of database {name} still in use")
            time.sleep(0.5)
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', database="postgres")


def _searchable_by_others(path: Path) -> bool:
    return bool(os.stat(path).st_mode & 0o001)


def default_data_dir() -> Path:
    """``.local/postgres`` in the project, unless the server's OS user could not reach it.

    As root, the server runs as ``postgres``, which cannot enter a checkout
    under a private directory (such as ``/root``): then the data lives in the
    system temp directory, in a folder named after the checkout.
    """
    preferred = PROJECT_ROOT / ".local" / "postgres"
    if os.geteuid() != 0 or all(_searchable_by_others(p) for p in PROJECT_ROOT.parents):
        return preferred
    tag = hashlib.sha1(str(PROJECT_ROOT).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"cdc-postgres-{tag}"


def server_from_env() -> PostgresServer:
    """The local server as the standard libpq variables describe it."""
    env = os.environ
    data_dir = Path(env.get("POSTGRES_DATA_DIR") or default_data_dir())
    return PostgresServer(
        data_dir=data_dir,
        host=env.get("PGHOST") or "127.0.0.1",
        port=int(env.get("PGPORT") or 5432),
        user=env.get("PGUSER") or "postgres",
        password=env.get("PGPASSWORD") or "postgres",
        database=env.get("PGDATABASE") or DATABASE,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    server = server_from_env()
    where = f"{server.host}:{server.port}"
    if args.command == "up":
        server.start()
        print(
            f"PostgreSQL ready at {where}, database {server.database} (data in {server.data_dir})"
        )
    elif args.command == "down":
        server.stop()
        print("PostgreSQL stopped")
    else:
        state = "running" if server.running() else "stopped"
        print(f"PostgreSQL at {where}: {state}")
        return 0 if state == "running" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
