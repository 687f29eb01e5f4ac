"""``make demo``: feed changes, run the cdc_to_iceberg DAG once, show the result.

Expects the broker (``make kafka-up``) and the Airflow database
(``make airflow-init``); the Makefile starts both first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cdc_iceberg import kafka_offsets, table_state
from cdc_iceberg.checks import evaluate_lag, validate
from cdc_iceberg.generator import ArticleSource, produce
from cdc_iceberg.settings import Settings


def _feed(settings: Settings, events: int, keys: int) -> int:
    kafka_offsets.ensure_topic(settings, partitions=3)
    already = sum(kafka_offsets.end_offsets(settings).values())
    # a new seed per run, so a second demo adds fresh changes instead of repeating old ones
    source = ArticleSource(seed=7 + already, partitions=3, event_format=settings.event_format)
    messages = source.random_history(
        events, keys, snapshot_rows=keys // 4, toast_share=0.1, redelivery_share=0.02
    )
    produce(settings, messages)
    return len(messages)


def main() -> int:
    settings = Settings.from_env()
    events = int(os.environ.get("DEMO_EVENTS", "5000"))
    print(f"== feeding Debezium change events into {settings.kafka_topic}")
    sent = _feed(settings, events, keys=max(10, events // 10))
    print(f"   {sent} records written to {settings.kafka_bootstrap_servers}")

    print("== running the cdc_to_iceberg DAG once (airflow dags test)")
    started_ms = int(time.time() * 1000)
    log_path = Path(os.environ.get("AIRFLOW_HOME", ".")) / "demo-dag-test.log"
    with open(log_path, "w") as log:
        code = subprocess.call(
            [sys.executable, "-m", "airflow", "dags", "test", "cdc_to_iceberg"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    text = log_path.read_text(errors="replace")
    finished = [line for line in text.splitlines() if "DagRun Finished" in line]
    succeeded = code == 0 and bool(finished) and "state=success" in finished[-1]
    code = 0 if succeeded else 1
    print(f"   DAG run {'succeeded' if succeeded else 'FAILED'} (log: {log_path})")
    for line in text.splitlines():
        if '"event": "cdc_batch"' in line or "validation " in line or "consumer lag" in line:
            print("   " + line[line.find("{") if "{" in line else 0 :][:220])

    print(f"== Iceberg table {settings.iceberg_table} (read back with pyiceberg)")
    rows = table_state.sample_rows(settings, limit=5)
    for row in rows:
        print("   " + json.dumps(row, default=str, ensure_ascii=False)[:200])
    stats = table_state.table_stats(settings, since_ms=started_ms)
    print(f"   row count: {stats.rows}")

    report = validate(
        stats, now_ms=int(time.time() * 1000), max_staleness_s=None, max_new_dead_letters=0
    )
    print("== validation")
    print("   " + report.message())

    end = kafka_offsets.end_offsets(settings)
    committed = kafka_offsets.committed_offsets(settings)
    lag = evaluate_lag(end, committed, max_lag_per_partition=1000)
    print(f"== consumer lag of group {settings.kafka_consumer_group}")
    print("   " + lag.message + f" (per partition: {lag.per_partition})")

    print(
        "== Airflow UI on this data\n"
        "   make airflow-ui     # airflow standalone on http://localhost:8080\n"
        f"   log in as admin with the password in {os.environ.get('AIRFLOW_HOME', '.')}/"
        "simple_auth_manager_passwords.json.generated,\n"
        "   then trigger cdc_backfill from its form (dry run is on by default)."
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
