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
    source = ArticleSource(
        seed=7 + already,
        partitions=3,
        event_format=settings.event_format,
        start_ms=int(time.time() * 1000) - 60_000,  # recent changes: freshness reads true
    )
    messages = source.random_history(
        events, keys, snapshot_rows=keys // 4, toast_share=0.1, redelivery_share=0.02
    )
    produce(settings, messages)
    return len(messages)


SQL_WORKLOAD = """
INSERT INTO public.articles (article_id, title, url, source, author, body, published_at,
                             updated_at, word_count)
SELECT 'pg-' || g || '-' || {run}, 'Article ' || g, 'https://news.example/' || g, 'AP',
       CASE WHEN g % 7 = 0 THEN NULL ELSE 'Zoë Ångström' END, repeat('body text ', 1200),
       now() - (g || ' minutes')::interval, now(), 2400
FROM generate_series(1, 500) AS g;
UPDATE public.articles SET title = title || ' (updated)', updated_at = now()
 WHERE article_id LIKE 'pg-%-{run}' AND split_part(article_id, '-', 2)::int % 3 = 0;
BEGIN;
UPDATE public.articles SET word_count = word_count + 1 WHERE article_id = 'pg-1-{run}';
UPDATE public.articles SET word_count = word_count + 1 WHERE article_id = 'pg-1-{run}';
COMMIT;
DELETE FROM public.articles
 WHERE article_id LIKE 'pg-%-{run}' AND split_part(article_id, '-', 2)::int % 10 = 0;
UPDATE public.articles SET article_id = 'pg-renamed-{run}' WHERE article_id = 'pg-2-{run}';

-- a composite key, and the Postgres types: their schema comes from the events
CREATE TABLE IF NOT EXISTS public.order_lines (
    order_id bigint, line_no integer, sku text NOT NULL, quantity integer NOT NULL,
    unit_price numeric(12,2), PRIMARY KEY (order_id, line_no));
INSERT INTO public.order_lines
SELECT {run}::bigint * 1000 + o, l, 'sku-' || o || '-' || l, l, o + l / 100.0
FROM generate_series(1, 100) AS o, generate_series(1, 3) AS l;
UPDATE public.order_lines SET quantity = quantity * 10 WHERE order_id % 4 = 0;
DELETE FROM public.order_lines WHERE order_id % 10 = 0 AND line_no = 2;
UPDATE public.order_lines SET line_no = 9 WHERE order_id = {run}::bigint * 1000 + 1 AND line_no = 1;
CREATE TABLE IF NOT EXISTS public.typed_rows (
    id uuid PRIMARY KEY, amount numeric(10,2), ratio numeric, day date,
    at timestamptz, doc jsonb, tags text[], scores integer[], raw bytea);
INSERT INTO public.typed_rows
SELECT md5({run} || '-' || g)::uuid, g * 1.25, 1.0 / g, DATE '2026-01-01' + g,
       now() - (g || ' minutes')::interval, jsonb_build_object('n', g, 'even', g % 2 = 0),
       ARRAY['t' || g, 'demo'], ARRAY[g, g * g], decode(md5(g::text), 'hex')
FROM generate_series(1, 200) AS g;
UPDATE public.typed_rows SET amount = amount + 1 WHERE day < DATE '2026-02-01';
"""

# the tables the SQL workload writes besides articles (pipelines.yaml's topic pattern)
DEMO_TABLES = ("order_lines", "typed_rows")


def _feed_postgres(settings: Settings) -> set[str]:
    """Run a SQL workload on the local Postgres and wait until Debezium has delivered it."""
    from cdc_iceberg.local.postgres import server_from_env

    server = server_from_env()
    run = int(time.time())
    server.sql(SQL_WORKLOAD.format(run=run), database="neuronews")
    topics = [settings.kafka_topic] + [
        settings.kafka_topic.rsplit(".", 1)[0] + f".{t}" for t in DEMO_TABLES
    ]
    stable_since, last, deadline = time.monotonic(), -1, time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            total = sum(sum(kafka_offsets.end_offsets(settings, t).values()) for t in topics)
        except kafka_offsets.TopicMissingError:
            total = -1
        if total != last:
            stable_since, last = time.monotonic(), total
        elif total > 0 and time.monotonic() - stable_since > 5:
            break
        time.sleep(1)
    rows = server.query("SELECT article_id FROM public.articles", database="neuronews")
    return {str(r["article_id"]) for r in rows}


def _show_other_tables(settings: Settings) -> None:
    """Rows of the workload's other tables in Postgres and in Iceberg."""
    from cdc_iceberg import pipelines
    from cdc_iceberg.local.postgres import server_from_env

    server = server_from_env()
    config = pipelines.load(settings.pipelines_file)
    topics = kafka_offsets.topics(settings) if config.topics else set()
    for name in DEMO_TABLES:
        try:
            table = config.table_settings(settings, f"public.{name}", topics)
        except pipelines.PipelinesError as error:
            print(f"   {name}: {error}")
            continue
        in_postgres = server.scalar(f"SELECT count(*) FROM public.{name}", database="neuronews")
        in_iceberg = (
            table_state.table_stats(table, since_ms=0).rows
            if table_state.table_exists(table)
            else "no table yet"
        )
        print(f"== {table.iceberg_table}: {in_iceberg} rows in Iceberg, {in_postgres} in Postgres")
        for row in table_state.sample_rows(table, limit=2):
            print("   " + json.dumps(row, default=str, ensure_ascii=False)[:200])


def main() -> int:
    settings = Settings.from_env()
    source_rows = None
    if os.environ.get("SOURCE", "generator") == "postgres":
        print("== running a SQL workload on Postgres public.articles (captured by Debezium)")
        source_rows = _feed_postgres(settings)
        print(f"   Postgres now holds {len(source_rows)} rows; Debezium delivered the changes")
    else:
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
    if source_rows is not None:
        keys = set(
            table_state.catalog(settings)
            .load_table(settings.iceberg_table)
            .scan(selected_fields=("article_id",))
            .to_arrow()
            .column("article_id")
            .to_pylist()
        )
        missing, extra = source_rows - keys, keys - source_rows
        print(
            f"   Postgres keys missing from Iceberg: {len(missing)}; Iceberg keys not in "
            f"Postgres: {len(extra)}"
            + (" (rows from generated events on the same topic)" if extra else "")
        )
        _show_other_tables(settings)

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
