"""Run a job of the project with ``spark-submit``, configured from the environment.

Usage::

    python -m cdc_iceberg.submit                      # one drain (make drain)
    python -m cdc_iceberg.submit --job iceberg_maintenance
    python -m cdc_iceberg.submit --job dlq_replay -- --table public.articles --apply
    python -m cdc_iceberg.submit -- --dry-run         # arguments after -- go to the job

The command line comes from :mod:`cdc_iceberg.spark_conf`, the one builder of
Spark settings; secrets in it are masked when printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from cdc_iceberg.settings import PROJECT_ROOT, Settings
from cdc_iceberg.spark_conf import spark_env, spark_submit_command

_SECRET_MARKERS = ("password", "jaas.config", "secret")


def masked(command: list[str]) -> str:
    """The command as text with secret values replaced."""
    out = []
    for part in command:
        key, sep, _value = part.partition("=")
        out.append(
            f"{key}=******" if sep and any(m in key.lower() for m in _SECRET_MARKERS) else part
        )
    return " ".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="spark-submit a job of this project")
    parser.add_argument(
        "--job",
        default="cdc_to_iceberg",
        choices=["cdc_to_iceberg", "iceberg_maintenance", "dlq_replay"],
    )
    parser.add_argument("job_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    command = spark_submit_command(settings, PROJECT_ROOT / "jobs" / f"{args.job}.py")
    command += [a for a in args.job_args if a != "--"]
    print(masked(command), file=sys.stderr, flush=True)
    env = spark_env()
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return subprocess.call(command, env=env, cwd=os.getcwd())


if __name__ == "__main__":
    sys.exit(main())
