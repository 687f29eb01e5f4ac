"""An S3-compatible object store on loopback: moto's S3 server run as a plain process.

Usage::

    python -m cdc_iceberg.local.object_store up      # start, wait until it answers, make the bucket
    python -m cdc_iceberg.local.object_store down    # stop
    python -m cdc_iceberg.local.object_store status

The server listens at ``ICEBERG_S3_ENDPOINT`` (``http://127.0.0.1:<port>``) and
``up`` creates the bucket of ``ICEBERG_WAREHOUSE`` (``s3://<bucket>/...``) and of
an ``s3a://`` ``CHECKPOINT_LOCATION``. It speaks the S3 REST API over HTTP with
path-style addressing, as MinIO does in ``docker-compose.yaml``; it keeps its
objects in memory, so ``down`` loses them. Its pid and log file are kept under
``OBJECT_STORE_DATA_DIR`` (default ``.local/object-store``). Both commands are
safe to repeat.

Clients sign their requests with ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
from their environment; the server accepts any pair.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cdc_iceberg.local import process as server_process
from cdc_iceberg.settings import PROJECT_ROOT, Settings


@dataclass
class ObjectStore:
    """One S3 server process on ``host:port``; its pid and log live in ``data_dir``."""

    data_dir: Path
    port: int = 9000
    host: str = "127.0.0.1"

    @property
    def endpoint(self) -> str:
        """What ``ICEBERG_S3_ENDPOINT`` must be for clients of this store."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "s3.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "s3.log"

    def running_pid(self) -> int | None:
        return server_process.running_pid(self.pid_file)

    def answers(self) -> bool:
        """The server answers an S3 request (its bucket listing)."""
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float = 60.0) -> None:
        """Start the server unless it runs already, and wait until it answers."""
        process = self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                tail = self.log_file.read_text()[-3000:] if self.log_file.exists() else ""
                raise RuntimeError(f"S3 server exited with {process.returncode}:\n{tail}")
            if self.answers():
                return
            time.sleep(0.2)
        raise TimeoutError(f"S3 server at {self.endpoint} not ready in {timeout}s")

    def launch(self) -> subprocess.Popen[bytes] | None:
        """Start the server's process unless it runs already (None then); do not wait."""
        if self.running_pid() is not None:
            return None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.pid_file.write_text(str(process.pid))
        return process

    def client(self) -> Any:
        """A boto3 S3 client of this store (credentials from the environment, or any)."""
        import boto3
        from botocore.config import Config

        session = boto3.Session()
        # the server checks no signature: placeholders when the environment has no credentials
        keys = {}
        if session.get_credentials() is None:
            keys = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
        return session.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=session.region_name or "us-east-1",
            config=Config(s3={"addressing_style": "path"}),
            **keys,
        )

    def create_bucket(self, name: str) -> None:
        """Create ``name`` unless it exists."""
        client = self.client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if name not in existing:
            client.create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in ``bucket``, sorted."""
        paginator = self.client().get_paginator("list_objects_v2")
        found: list[str] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            found += [o["Key"] for o in page.get("Contents", [])]
        return sorted(found)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many were deleted."""
        client = self.client()
        keys = self.keys(bucket, prefix)
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
        return len(keys)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server if it runs (SIGTERM, then SIGKILL after ``timeout``)."""
        server_process.stop(self.pid_file, timeout, group=True)


def buckets(settings: Settings) -> list[str]:
    """Buckets the settings store data in: the warehouse's and an ``s3a://`` checkpoint's."""
    found = []
    for location in (settings.iceberg_warehouse, settings.checkpoint_location):
        parsed = urlparse(location)
        if parsed.scheme in ("s3", "s3a") and parsed.netloc and parsed.netloc not in found:
            found.append(parsed.netloc)
    return found


def store_from_env() -> tuple[ObjectStore, Settings]:
    """The store at ``ICEBERG_S3_ENDPOINT`` (a loopback ``http://`` address)."""
    settings = Settings.from_env()
    endpoint = urlparse(settings.iceberg_s3_endpoint or "http://127.0.0.1:9000")
    if endpoint.scheme != "http" or endpoint.hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit(
            f"ICEBERG_S3_ENDPOINT={settings.iceberg_s3_endpoint!r}: the local object store "
            "serves http:// on 127.0.0.1"
        )
    data_dir = Path(
        os.environ.get("OBJECT_STORE_DATA_DIR", PROJECT_ROOT / ".local" / "object-store")
    )
    return ObjectStore(data_dir, port=endpoint.port or 80, host=endpoint.hostname), settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    store, settings = store_from_env()
    if args.command == "up":
        store.start()
        for bucket in buckets(settings):
            store.create_bucket(bucket)
        print(f"S3 ready at {store.endpoint} (buckets: {', '.join(buckets(settings)) or 'none'})")
    elif args.command == "down":
        store.stop()
        print("S3 stopped")
    else:
        running = store.running_pid() is not None and store.answers()
        print(f"S3 at {store.endpoint}: {'running' if running else 'stopped'}")
        return 0 if running else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
