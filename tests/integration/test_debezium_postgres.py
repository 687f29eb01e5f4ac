"""Real change capture end to end: Postgres -> Debezium -> Kafka -> the job -> Iceberg.

The generator's events are a model of what Debezium writes; these tests check
the model against the real thing. A real PostgreSQL server (``wal_level =
logical``) and a real Kafka Connect worker with the Debezium Postgres connector
run next to the suite's broker. A workload of plain SQL runs in Postgres, the
job drains the connector's topic, and ``SELECT * FROM articles`` must equal
the Iceberg table read back with pyiceberg, column by column (the job's
metadata columns aside; timestamps as UTC instants).

Every test captures its own database through its own connector, replication
slot and topic prefix, so topics and slots never collide. The server and the
worker are shared by the module and started and stopped here.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from articles import ARTICLE_KEY

from cdc_iceberg import kafka_offsets, pipelines, table_state
from cdc_iceberg.local.connect import (
    ConnectWorker,
    PostgresSource,
    connector_config,
    slot_name,
    topic_for,
)
from cdc_iceberg.local.postgres import PostgresServer
from cdc_iceberg.schema import RESERVED
from cdc_iceberg.settings import Settings
from jobs.cdc_to_iceberg import drain

pytestmark = pytest.mark.integration

# 20k rows keep the suite fast; the 100k variant runs under the `faults` marker
# (test_workload_with_a_100k_bulk_load_matches_postgres).
BULK_ROWS = 20_000
BULK_ROWS_FAULTS = 100_000
PARTITIONS = 3

# A body of ~9.9 kB of random hex: too big to stay inline and incompressible,
# so Postgres moves it out of line (TOAST), and an UPDATE that does not touch
# it logs no value for it.
BIG_BODY = "(SELECT string_agg(md5(random()::text || {seed}), ' ') FROM generate_series(1, 300))"


def _free_port() -> int:
    """A free loopback port, so the module never collides with a server already running."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lit(value: object) -> str:
    """A SQL literal (standard_conforming_strings is on: only quotes need doubling)."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def big(seed: object) -> str:
    """SQL for a TOASTed body; ``seed`` makes bodies of one statement differ."""
    return BIG_BODY.format(seed=lit(str(seed)))


# -- servers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on a free port.

    Run as root, the server runs as the ``postgres`` OS user, which cannot
    enter pytest's private temp directories: its data goes to a directory of
    its own under the system temp dir.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="cdc-postgres-"))
    data_dir.chmod(0o755)
    server = PostgresServer(data_dir=data_dir, port=_free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def connect(kafka_broker: Any, work_dir: Path) -> Iterator[ConnectWorker]:
    """A real Kafka Connect worker (distributed mode) on the suite's broker."""
    group = "connect_" + uuid.uuid4().hex[:8]
    worker = ConnectWorker(
        data_dir=work_dir / group,
        bootstrap_servers=kafka_broker.bootstrap_servers,
        port=_free_port(),
        group=group,
    )
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()


# -- one capture: database, connector, topic, pipeline -------------------------


def _source(postgres: PostgresServer, database: str) -> PostgresSource:
    """What a connector reads: ``database`` on the module's server."""
    return PostgresSource(
        host=postgres.host,
        port=postgres.port,
        user=postgres.user,
        password=postgres.password,
        database=database,
    )


@dataclass
class Capture:
    """One database captured by one connector into one topic, drained into one table."""

    postgres: PostgresServer
    connect: ConnectWorker
    database: str
    connector: str
    prefix: str
    settings: Settings
    drains: list[dict[str, Any]] = field(default_factory=list)

    @property
    def topic(self) -> str:
        return self.settings.kafka_topic

    def sql(self, statements: str) -> str:
        return self.postgres.sql(statements, database=self.database)

    def start_capture(self, **extra: str) -> None:
        """Register the connector (snapshot of what exists, then streaming) and wait for it."""
        source = _source(self.postgres, self.database)
        config = connector_config(
            self.connector, source, topic_prefix=self.prefix, partitions=PARTITIONS, extra=extra
        )
        self.connect.register(self.connector, config)
        self.connect.register(self.connector, config)  # registering twice changes nothing
        self.connect.wait_running(self.connector)

    def wait_delivered(self, timeout: float = 300.0) -> None:
        """Wait until Debezium has written every change committed so far to the topic.

        A marker row is committed last. One connector task writes the WAL in
        commit order, so once the marker is the newest record of its partition
        and no partition's end offset moves any more, everything before it is
        in Kafka (a redelivery after a crash ends with the marker again).
        """
        marker = f"~marker-{uuid.uuid4().hex[:8]}"
        self.sql(
            f"INSERT INTO articles (article_id, title) VALUES ({lit(marker)}, 'delivery marker')"
        )
        deadline = time.monotonic() + timeout
        previous: dict[int, int] | None = None
        with kafka_offsets.consumer(self.settings) as consumer:
            while time.monotonic() < deadline:
                ends, last_keys = _tail(consumer, self.topic)
                if marker in last_keys.values() and ends == previous:
                    return
                previous = ends if marker in last_keys.values() else None
                time.sleep(1.5)
        raise TimeoutError(
            f"Debezium did not deliver marker {marker} to {self.topic} in {timeout}s:\n"
            f"{self.connect.log_tail()}"
        )

    def drain(self, spark: Any) -> dict[str, Any]:
        """Deliver everything, then run the job once."""
        self.wait_delivered()
        totals = drain(spark, self.settings).totals()
        self.drains.append(totals)
        return totals

    # -- comparison --------------------------------------------------------

    def postgres_rows(self) -> tuple[list[str], dict[str, dict[str, Any]]]:
        types = {
            r["column_name"]: r["data_type"]
            for r in self.postgres.query(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = 'articles'",
                database=self.database,
            )
        }
        rows = self.postgres.query("SELECT * FROM articles", database=self.database)
        stamps = {c for c, t in types.items() if t == "timestamp with time zone"}

        def normal(column: str, value: Any) -> Any:
            if column in stamps and value is not None:
                return datetime.fromisoformat(value).astimezone(UTC)
            return value

        by_key = {r[ARTICLE_KEY]: {c: normal(c, v) for c, v in r.items()} for r in rows}
        return sorted(types), by_key

    def _catalog(self) -> Any:
        return table_state.catalog(self.settings)

    def iceberg_rows(self) -> tuple[list[str], dict[str, dict[str, Any]]]:
        table = self._catalog().load_table(self.settings.iceberg_table)
        columns = sorted(f.name for f in table.schema().fields if f.name not in RESERVED)

        def normal(value: Any) -> Any:
            return value.astimezone(UTC) if isinstance(value, datetime) else value

        rows = table.scan().to_arrow().to_pylist()
        return columns, {r[ARTICLE_KEY]: {c: normal(r[c]) for c in columns} for r in rows}

    def dead_letters(self) -> list[dict[str, Any]]:
        table = self._catalog().load_table(self.settings.iceberg_dlq_table)
        return list(table.scan(selected_fields=("kafka_offset", "reason")).to_arrow().to_pylist())

    def differences(self, key_prefix: str = "") -> list[str]:
        """Where the Iceberg table and ``SELECT * FROM articles`` disagree (keys by prefix)."""
        pg_columns, expected = self.postgres_rows()
        ice_columns, actual = self.iceberg_rows()
        expected = {k: v for k, v in expected.items() if k.startswith(key_prefix)}
        actual = {k: v for k, v in actual.items() if k.startswith(key_prefix)}
        problems: list[str] = []
        if ice_columns != pg_columns:
            problems.append(f"columns: postgres {pg_columns} != iceberg {ice_columns}")
        problems += [f"missing in Iceberg: {k}" for k in sorted(expected.keys() - actual.keys())]
        problems += [f"not in Postgres: {k}" for k in sorted(actual.keys() - expected.keys())]
        for key in sorted(expected.keys() & actual.keys()):
            for column in pg_columns:
                want, got = expected[key][column], actual[key].get(column)
                if want != got:
                    problems.append(
                        f"{key}.{column}: postgres {_short(want)} != iceberg {_short(got)}"
                    )
        return problems

    def assert_tables_agree(self, key_prefix: str = "") -> None:
        assert self.dead_letters() == [], "the job dead-lettered real Debezium output"
        problems = self.differences(key_prefix)
        assert not problems, f"{len(problems)} differences (drains: {self.drains}):\n" + "\n".join(
            problems[:25]
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 70 else f"{text[:40]}...({len(text)} chars)"


def _article_id(raw_key: bytes | None) -> str | None:
    if raw_key is None:
        return None
    key = json.loads(raw_key)
    payload = key.get("payload", key)
    return str(payload.get(ARTICLE_KEY))


def _tail(consumer: Any, topic: str) -> tuple[dict[int, int], dict[int, str | None]]:
    """End offsets of ``topic`` and the row key of the newest record in each partition."""
    from kafka import TopicPartition

    partitions = sorted(consumer.partitions_for_topic(topic) or ())
    tps = [TopicPartition(topic, p) for p in partitions]
    if not tps:
        return {}, {}
    ends = consumer.end_offsets(tps)
    keys: dict[int, str | None] = {}
    for tp in tps:
        if ends[tp] == 0:
            continue
        consumer.assign([tp])
        consumer.seek(tp, ends[tp] - 1)
        for _ in range(10):
            records = consumer.poll(timeout_ms=1000).get(tp, [])
            if records:
                keys[tp.partition] = _article_id(records[-1].key)
                break
    return {tp.partition: offset for tp, offset in ends.items()}, keys


def _all_records(settings: Settings) -> list[Any]:
    """Every record of the topic (to count what Debezium wrote more than once)."""
    from kafka import TopicPartition

    records: list[Any] = []
    with kafka_offsets.consumer(settings) as consumer:
        parts = sorted(consumer.partitions_for_topic(settings.kafka_topic) or ())
        tps = [TopicPartition(settings.kafka_topic, p) for p in parts]
        ends = consumer.end_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, "reading the topic back took too long"
            for batch in consumer.poll(timeout_ms=1000, max_records=5000).values():
                records.extend(batch)
    return records


@contextmanager
def _capture(
    postgres: PostgresServer, connect: ConnectWorker, pipeline: Settings
) -> Iterator[Capture]:
    """A fresh database, connector, slot and topic prefix, named after the pipeline's table."""
    name = pipeline.iceberg_table.split(".")[1]
    database = f"cdc_{name}"
    prefix = f"pg_{name}"
    postgres.ensure_database(database)
    rig = Capture(
        postgres=postgres,
        connect=connect,
        database=database,
        connector=f"articles-{name}",
        prefix=prefix,
        # Postgres sources order changes by LSN (CDC_SEQUENCE=lsn, as the compose stack does)
        settings=pipeline.replace(kafka_topic=topic_for(prefix), sequence_order="lsn"),
    )
    try:
        yield rig
    finally:
        if connect.running_pid() is not None:
            connect.delete(rig.connector)
        postgres.drop_database(database)


@pytest.fixture
def capture(
    postgres: PostgresServer, connect: ConnectWorker, pipeline: Settings
) -> Iterator[Capture]:
    """A fresh database with ``public.articles`` and a pipeline reading its Debezium topic."""
    with _capture(postgres, connect, pipeline) as rig:
        yield rig


# -- the workload ----------------------------------------------------------------


def _row_sql(
    key: str,
    title: object,
    *,
    body: str | None = None,
    big_body: bool = False,
    author: object = "Ada Lovelace",
    count: object = 120,
    published: str = "now() - interval '3 hours'",
) -> str:
    body_sql = big(key) if big_body else lit(body if body is not None else f"Body of {key}.")
    return (
        "INSERT INTO articles (article_id, title, url, source, author, body, published_at, "
        f"updated_at, word_count) VALUES ({lit(key)}, {lit(title)}, "
        f"{lit('https://news.example/' + key)}, 'Reuters', {lit(author)}, {body_sql}, "
        f"{published}, now(), {lit(count)});"
    )


def _snapshot_rows(capture: Capture) -> None:
    """Rows that exist before the connector: Debezium reads them as a snapshot (op r)."""
    capture.sql(
        "INSERT INTO articles SELECT 'snap-' || lpad(i::text, 4, '0'), 'Snapshot title ' || i, "
        "'https://news.example/snap/' || i, 'Reuters', "
        "CASE WHEN i % 3 = 0 THEN NULL ELSE 'Zoë Ångström' END, "
        f"CASE WHEN i % 5 = 0 THEN {big('i')} ELSE 'short body ' || i END, "
        "now() - i * interval '1 hour', now(), i FROM generate_series(1, 60) i;"
    )


def _first_phase(capture: Capture, bulk_rows: int) -> None:
    """Streamed changes of every kind, all drained in one batch."""
    sql = capture.sql
    # unicode, quoting, NULLs and empty strings, timestamp edges, integer edges
    sql(
        _row_sql(
            "uni-1",
            "東京で桜が満開 🌸",
            author="李雷",
            body="Ça va? «quotes» 'single' \"double\" back\\slash\ttab\nnew line",
            published="'1950-06-15 12:00:00.5+02'",
        )
        + _row_sql(
            "uni-2",
            "Cafe\u0301 👩‍💻 مرحبا",
            author="José Núñez",
            count=2147483647,
            published="'1999-12-31 23:59:59.999999-08'",
        )
        + _row_sql("uni-3", "", author="", body="", count=0, published="'1970-01-01 00:00:00+00'")
        + "INSERT INTO articles (article_id) VALUES ('null-1');"
        + _row_sql("null-2", None, author=None, count=None, published="NULL")
        + _row_sql("neg-1", "negative count", count=-1, published="'2038-01-19 03:14:08+00'")
    )
    # plain inserts, one in ten with a TOASTed body
    sql(
        "INSERT INTO articles SELECT 'gen-' || lpad(i::text, 4, '0'), 'Generated ' || i, "
        "'https://news.example/gen/' || i, 'AP', 'Ivan Petrov', "
        f"CASE WHEN i % 10 = 0 THEN {big('i')} ELSE 'generated body ' || i END, "
        "now() - interval '1 day', now(), i * 3 FROM generate_series(1, 200) i;"
    )
    # one row updated in 30 separate transactions (several in the same millisecond)
    sql(
        "".join(
            f"UPDATE articles SET title = 'across tx {n}', word_count = {n}, updated_at = now() "
            "WHERE article_id = 'gen-0001';"
            for n in range(30)
        )
    )
    # one row updated 50 times in one transaction: one commit time, rising LSNs
    sql(
        "BEGIN;"
        + "".join(
            f"UPDATE articles SET title = 'in tx {n}', word_count = word_count + 1 "
            "WHERE article_id = 'gen-0002';"
            for n in range(50)
        )
        + "COMMIT;"
    )
    # born, changed and gone in one transaction; born and changed in one transaction
    sql(
        "BEGIN;"
        + _row_sql("tx-1", "ephemeral")
        + "UPDATE articles SET title = 'still ephemeral' WHERE article_id = 'tx-1';"
        + "DELETE FROM articles WHERE article_id = 'tx-1';"
        + _row_sql("tx-2", "first")
        + "UPDATE articles SET title = 'second' WHERE article_id = 'tx-2';"
        + "COMMIT;"
    )
    # deletes: streamed rows and a snapshot row
    sql(
        "DELETE FROM articles WHERE article_id BETWEEN 'gen-0011' AND 'gen-0019';"
        "DELETE FROM articles WHERE article_id = 'snap-0001';"
    )
    # delete then re-insert the same key: in two transactions, and in one
    sql(
        "DELETE FROM articles WHERE article_id = 'gen-0021';"
        + _row_sql("gen-0021", "re-inserted after delete", count=7)
        + "BEGIN; DELETE FROM articles WHERE article_id = 'gen-0022';"
        + _row_sql("gen-0022", "re-inserted in the same transaction", count=8)
        + "COMMIT;"
    )
    # primary-key changes (delete + create at one LSN); the old key comes back later
    sql(
        "UPDATE articles SET article_id = 'gen-0031-renamed' WHERE article_id = 'gen-0031';"
        "UPDATE articles SET title = 'renamed and edited' WHERE article_id = 'gen-0031-renamed';"
        + _row_sql("gen-0031", "old key re-used")
        + "UPDATE articles SET article_id = 'gen-0032-renamed', title = 'renamed in one go' "
        "WHERE article_id = 'gen-0032';"
    )
    # updates leaving the TOASTed body untouched (the body arrives earlier in the same batch)
    sql(
        "UPDATE articles SET title = 'toast kept, snapshot row' WHERE article_id = 'snap-0005';"
        "UPDATE articles SET title = 'toast kept, new row', word_count = 1 "
        "WHERE article_id = 'gen-0040';"
        "BEGIN;"
        "UPDATE articles SET title = 'toast kept 1' WHERE article_id = 'gen-0050';"
        "UPDATE articles SET title = 'toast kept 2' WHERE article_id = 'gen-0050';"
        "COMMIT;"
    )
    # the same with REPLICA IDENTITY FULL: Debezium then has the old body to send
    sql(
        "ALTER TABLE articles REPLICA IDENTITY FULL;"
        "UPDATE articles SET title = 'full identity' WHERE article_id = 'snap-0010';"
        "UPDATE articles SET title = 'full identity, new row' WHERE article_id = 'gen-0060';"
        "DELETE FROM articles WHERE article_id = 'gen-0070';"
        "ALTER TABLE articles REPLICA IDENTITY DEFAULT;"
    )
    # a column added mid-stream, set by later changes
    sql(
        "ALTER TABLE articles ADD COLUMN category text;"
        "ALTER TABLE articles ADD COLUMN read_minutes integer;"
        "UPDATE articles SET category = 'culture', read_minutes = 4 WHERE article_id = 'uni-1';"
        "UPDATE articles SET category = 'tech' WHERE article_id = 'gen-0080';"
        + "INSERT INTO articles (article_id, title, category, read_minutes) "
        "VALUES ('col-1', 'born with the new columns', 'économie', 12);"
    )
    # a bulk load in one transaction
    sql(
        "INSERT INTO articles SELECT 'bulk-' || lpad(i::text, 6, '0'), 'Bulk ' || i, "
        "'https://news.example/bulk/' || i, 'NHK', NULL, 'bulk body ' || i, "
        "timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second', now(), i, "
        f"CASE WHEN i % 2 = 0 THEN 'bulk' END, i % 30 FROM generate_series(1, {bulk_rows}) i;"
    )
    toast_bytes = capture.postgres.scalar(
        "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = 'articles'",
        database=capture.database,
    )
    assert int(toast_bytes) > 0, "the big bodies must be stored out of line (TOAST)"


def _second_phase(capture: Capture) -> None:
    """Changes whose earlier state is only in the table (a later batch)."""
    sql = capture.sql
    # TOASTed body untouched: the stored value must stay
    sql(
        "UPDATE articles SET title = 'toast kept across batches' WHERE article_id = 'snap-0015';"
        "BEGIN;"
        "UPDATE articles SET title = 'tx toast 1' WHERE article_id = 'gen-0090';"
        "UPDATE articles SET word_count = 99 WHERE article_id = 'gen-0090';"
        "COMMIT;"
        # a new big body, then an update that leaves it untouched: the newer body wins
        f"UPDATE articles SET body = {big('new-0100')} WHERE article_id = 'gen-0100';"
        "UPDATE articles SET title = 'after a new body' WHERE article_id = 'gen-0100';"
    )
    # keys deleted in the first batch come back (their tombstones are older)
    sql(
        _row_sql("gen-0011", "back after a delete in an earlier batch")
        + "UPDATE articles SET article_id = 'gen-0032' WHERE article_id = 'gen-0032-renamed';"
    )
    # delete and re-insert a key the table holds
    sql(
        "DELETE FROM articles WHERE article_id = 'gen-0041';"
        + _row_sql("gen-0041", "replaced", big_body=True)
    )
    # the bulk rows: some deleted, some updated, one column dropped to NULL
    sql(
        "DELETE FROM articles WHERE article_id LIKE 'bulk-00001%';"
        "UPDATE articles SET title = title || ' (edited)', category = NULL "
        "WHERE article_id LIKE 'bulk-00002%';"
    )
    # more columns, of other types, mid-stream
    sql(
        "ALTER TABLE articles ADD COLUMN pages smallint, ADD COLUMN breaking boolean;"
        "UPDATE articles SET pages = 3, breaking = true WHERE article_id = 'gen-0003';"
        "UPDATE articles SET breaking = false, category = 'sport' WHERE article_id = 'gen-0004';"
        + _row_sql("late-1", "after the second schema change", count=5)
    )


def _run_workload(capture: Capture, spark: Any, bulk_rows: int) -> None:
    _snapshot_rows(capture)
    capture.start_capture()
    _first_phase(capture, bulk_rows)
    first = capture.drain(spark)
    capture.assert_tables_agree()
    assert first["events_in"] > bulk_rows

    _second_phase(capture)
    capture.drain(spark)
    capture.assert_tables_agree()


def test_workload_matches_postgres(spark: Any, capture: Capture) -> None:
    _run_workload(capture, spark, BULK_ROWS)


@pytest.mark.faults
def test_workload_with_a_100k_bulk_load_matches_postgres(spark: Any, capture: Capture) -> None:
    _run_workload(capture, spark, BULK_ROWS_FAULTS)


# -- a crash of the connector ----------------------------------------------------------


class Churn(threading.Thread):
    """Random inserts, updates, deletes and key changes until told to stop."""

    def __init__(self, capture: Capture, seed: int) -> None:
        super().__init__(daemon=True)
        self.capture = capture
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.transactions = 0
        self.error: BaseException | None = None

    def _statement(self) -> str:
        rng = self.rng
        key = f"churn-{rng.randrange(300):04d}"
        step = self.transactions
        roll = rng.random()
        if roll < 0.35:
            body = big(f"{key}-{step}") if rng.random() < 0.1 else lit(f"body {step}")
            return (
                "INSERT INTO articles (article_id, title, body, updated_at, word_count) "
                f"VALUES ({lit(key)}, {lit(f'churn {step}')}, {body}, now(), {step}) "
                "ON CONFLICT (article_id) DO UPDATE SET title = excluded.title, "
                "updated_at = excluded.updated_at, word_count = excluded.word_count;"
            )
        if roll < 0.70:
            return (
                f"UPDATE articles SET title = {lit(f'update {step}')}, word_count = {step} "
                f"WHERE article_id = {lit(key)};"
            )
        if roll < 0.82:
            return f"DELETE FROM articles WHERE article_id = {lit(key)};"
        if roll < 0.92:
            return (
                "BEGIN;"
                + "".join(
                    f"UPDATE articles SET title = {lit(f'burst {step}.{n}')} "
                    f"WHERE article_id = {lit(key)};"
                    for n in range(5)
                )
                + "COMMIT;"
            )
        # key changes of rows with an inline body only: a TOASTed body loses its value on a
        # key change (test_primary_key_change_of_a_toasted_row)
        return (
            f"UPDATE articles SET article_id = {lit(f'{key}-m{step}')} "
            f"WHERE article_id = {lit(key)} AND coalesce(length(body), 0) < 1000;"
        )

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                statements = []
                for _ in range(20):
                    statements.append(self._statement())
                    self.transactions += 1
                statements.append("SELECT pg_sleep(0.15);")
                self.capture.sql("\n".join(statements))
        except BaseException as error:
            self.error = error

    def finish(self) -> int:
        self.stop_event.set()
        self.join(timeout=60)
        if self.error is not None:
            raise self.error
        return self.transactions


def test_connect_killed_mid_workload_still_agrees(
    spark: Any, capture: Capture, connect: ConnectWorker
) -> None:
    """kill -9 the worker while changes stream: Debezium redelivers, the table still agrees."""
    capture.sql(
        "INSERT INTO articles (article_id, title, body, updated_at, word_count) "
        "SELECT 'churn-' || lpad(i::text, 4, '0'), 'seed ' || i, 'seed body', now(), i "
        "FROM generate_series(0, 299, 2) i;"
    )
    capture.start_capture()
    churn = Churn(capture, seed=17)
    churn.start()
    try:
        time.sleep(6)
        connect.kill()
        time.sleep(2)
        connect.start()
        connect.wait_running(capture.connector)
        time.sleep(4)
    finally:
        transactions = churn.finish()
    capture.drain(spark)

    capture.assert_tables_agree()
    assert transactions > 200
    records = _all_records(capture.settings)
    changes = Counter(
        (
            r.partition,
            r.key,
            json.loads(r.value)["payload"]["source"]["lsn"],
            json.loads(r.value)["payload"]["op"],
        )
        for r in records
        if r.value is not None
    )
    redelivered = sum(n - 1 for n in changes.values() if n > 1)
    assert redelivered > 0, "the crash should have made Debezium write some changes twice"


# -- hard cases of real capture: one captured database, one drain, one test per case ----------


@dataclass
class DefectRun:
    """The capture behind the defect tests (shared: one drain serves them all)."""

    capture: Capture
    totals: dict[str, Any]


@pytest.fixture(scope="module")
def defect_run(
    postgres: PostgresServer,
    connect: ConnectWorker,
    spark: Any,
    base_settings: Settings,
    work_dir: Path,
) -> Iterator[DefectRun]:
    """Scenarios on disjoint keys in one database, drained once.

    * ``race-*``: rows changed after the replication slot exists but before the
      snapshot reads them (``snapshot.delay.ms`` holds the snapshot back).
    * ``pk-*``: a primary-key change of a row whose body is TOASTed.
    * ``num-*``: ``double precision`` and ``real`` columns added mid-stream.
    """
    name = "d" + uuid.uuid4().hex[:10]
    pipeline = base_settings.replace(
        kafka_topic=f"neuronews.public.{name}",
        kafka_consumer_group=f"group_{name}",
        iceberg_table=f"neuronews.{name}",
        checkpoint_location=str(work_dir / "checkpoints" / name),
    )
    with _capture(postgres, connect, pipeline) as capture:
        capture.sql("".join(_row_sql(f"race-{i}", f"before {i}") for i in range(1, 5)))
        source = _source(postgres, capture.database)
        # the task creates the slot (exporting the snapshot it will read) when it
        # starts; the snapshot itself waits snapshot.delay.ms
        connect.register(
            capture.connector,
            connector_config(
                capture.connector,
                source,
                topic_prefix=capture.prefix,
                partitions=PARTITIONS,
                extra={"snapshot.delay.ms": "5000"},
            ),
        )
        slot = slot_name(capture.connector)
        deadline = time.monotonic() + 60
        while not postgres.scalar(
            f"SELECT 1 FROM pg_replication_slots WHERE slot_name = {lit(slot)}",
            database="postgres",
        ):
            assert time.monotonic() < deadline, "the connector never created its slot"
            time.sleep(0.1)
        capture.sql(
            "UPDATE articles SET title = 'changed while the snapshot waited' "
            "WHERE article_id = 'race-1';"
            "DELETE FROM articles WHERE article_id = 'race-2';"
        )
        connect.wait_running(capture.connector)
        capture.sql(
            _row_sql("pk-1", "big body, key changed later", big_body=True)
            + "UPDATE articles SET article_id = 'pk-1-renamed' WHERE article_id = 'pk-1';"
        )
        capture.sql(
            "ALTER TABLE articles ADD COLUMN score double precision, ADD COLUMN ratio real;"
            + _row_sql("num-1", "with a score")
            + "UPDATE articles SET score = 0.1, ratio = 0.5 WHERE article_id = 'num-1';"
            + _row_sql("num-2", "with a big score")
            + "UPDATE articles SET score = -2.5e10 WHERE article_id = 'num-2';"
        )
        totals = capture.drain(spark)
        yield DefectRun(capture, totals)


def test_change_committed_while_the_snapshot_runs(defect_run: DefectRun) -> None:
    """The snapshot sends the row as of the slot's creation, stamped with the slot's LSN.

    The change streams afterwards with that same LSN (race-1) or a higher one
    (race-2) and an earlier commit time: under ``CDC_SEQUENCE=lsn`` the table
    must end with the change (title updated, race-2 deleted).
    """
    defect_run.capture.assert_tables_agree("race-")


def test_primary_key_change_of_a_toasted_row(defect_run: DefectRun) -> None:
    """A key change is delete + create; the create's body is ``__debezium_unavailable_value``.

    Under the default replica identity Postgres does not log the unchanged body;
    the job takes it from the old key named in the ``__debezium.oldkey`` header.
    """
    defect_run.capture.assert_tables_agree("pk-")


def test_floating_point_columns_added_mid_stream(defect_run: DefectRun) -> None:
    """``double precision`` and ``real`` columns must arrive as double and float."""
    defect_run.capture.assert_tables_agree("num-")


# -- any table: composite keys and Postgres types, through real Debezium --------------

ANY_TABLES_DDL = """\
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE order_lines (
    order_id   bigint,
    line_no    integer,
    sku        text NOT NULL,
    quantity   integer NOT NULL,
    unit_price numeric(12,2),
    note       text,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE typed_rows (
    id        uuid PRIMARY KEY,
    c_small   smallint,
    c_big     bigint,
    c_bool    boolean,
    c_real    real,
    c_double  double precision,
    c_num     numeric(10,2),
    c_wide    numeric(38,10),
    c_free    numeric,
    c_money   money,
    c_date    date,
    c_time    time,
    c_ts      timestamp,
    c_tstz    timestamptz,
    c_iv      interval,
    c_json    json,
    c_jsonb   jsonb,
    c_xml     xml,
    c_mood    mood,
    c_char    char(6),
    c_bytea   bytea,
    c_inet    inet,
    c_ints    integer[],
    c_texts   text[],
    c_nums    numeric(10,2)[],
    c_big_text text
);
"""


def _typed_row(i: int) -> str:
    uid = f"00000000-0000-4000-8000-{i:012d}"
    return (
        "INSERT INTO typed_rows VALUES ("
        f"'{uid}', {i % 300 - 150}, {i * 10_000_000_007}, {str(i % 2 == 0).lower()}, "
        f"{i}.25, {i}.000001, {i}.05, 12345678901234567890.{i:010d}, "
        f"{'-' if i % 3 else ''}{i}.{'0' * (i % 7)}1, {i}.99, "
        f"DATE '2026-01-01' + {i}, TIME '10:11:12.123456' + interval '{i} minutes', "
        f"TIMESTAMP '2026-03-04 05:06:07.654321' + interval '{i} seconds', "
        f"TIMESTAMPTZ '2026-03-04 05:06:07.5+02' + interval '{i} hours', "
        f"interval '{i} days 3 hours', "
        f'\'{{"a": {i}, "b": [1, 2]}}\', \'{{"z": "ü{i}", "a": null}}\', '
        f"'<r n=\"{i}\"/>', '{['sad', 'ok', 'happy'][i % 3]}', 'c{i}', "
        f"'\\x{i:04x}ff00', '10.0.{i % 250}.1/24', "
        f"ARRAY[{i}, NULL, -{i}], ARRAY['x{i}', 'y, \"z\"'], ARRAY[{i}.10, 0.01]::numeric(10,2)[], "
        f"{big(i)});"
    )


def _decimal(value: Any) -> Any:
    from decimal import Decimal

    return None if value is None else Decimal(str(value))


def _json_text(value: Any) -> Any:
    return None if value is None else json.loads(value)


def _pg_list(value: Any) -> Any:
    return None if value is None else [_decimal(v) for v in value]


def _same(value: Any) -> Any:
    return value


def _pg_date(value: Any) -> Any:
    return None if value is None else date.fromisoformat(value)


def _pg_local(value: Any) -> Any:
    """A Postgres ``timestamp`` (no zone) as a naive datetime."""
    return None if value is None else datetime.fromisoformat(value)


def _pg_instant(value: Any) -> Any:
    """A Postgres ``timestamptz`` as an aware UTC datetime."""
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


def _utc(value: Any) -> Any:
    return None if value is None else value.astimezone(UTC)


def _micros(expression: str) -> str:
    """SQL: microseconds since midnight of a ``time`` (or ``interval``) expression."""
    return f"(extract(epoch from {expression}) * 1000000)::bigint"


# column -> (Postgres expression, its value as Python, the Iceberg value as Python)
TYPED_COMPARISON: dict[str, tuple[str, Any, Any]] = {
    **{
        c: (c, _same, _same)
        for c in (
            "c_small",
            "c_big",
            "c_bool",
            "c_real",
            "c_double",
            "c_xml",
            "c_mood",
            "c_char",
            "c_inet",
            "c_ints",
            "c_texts",
            "c_big_text",
        )
    },
    "c_num": ("c_num::text", _decimal, _same),
    "c_wide": ("c_wide::text", _decimal, _same),
    "c_free": ("c_free::text", _decimal, _decimal),
    "c_money": ("c_money::numeric::text", _decimal, _same),
    "c_nums": ("c_nums::text[]", _pg_list, _same),
    "c_date": ("c_date", _pg_date, _same),
    "c_time": (_micros("c_time"), _same, _same),
    "c_ts": ("c_ts", _pg_local, _same),
    "c_tstz": ("c_tstz", _pg_instant, _utc),
    "c_iv": (_micros("c_iv"), _same, _same),
    "c_json": ("c_json", _same, _json_text),
    "c_jsonb": ("c_jsonb", _same, _json_text),
    "c_bytea": ("c_bytea", lambda v: v and bytes.fromhex(v[2:]), _same),
    "c_added": ("c_added::text", _decimal, _same),
}


def _table_differences(
    postgres: PostgresServer,
    database: str,
    settings: Settings,
    table: str,
    key: tuple[str, ...],
    comparison: dict[str, tuple[str, Any, Any]],
) -> list[str]:
    """Where the Iceberg table and ``table`` in Postgres disagree.

    ``comparison`` maps each column to its Postgres expression and how each side's
    value reads as Python; a key column it names is compared through it too, so keys
    of any type match. The Iceberg table must hold exactly ``key`` and ``comparison``'s
    columns besides the job's own.
    """
    plain_key = [k for k in key if k not in comparison]
    select = ", ".join([*plain_key, *(f"{expr} AS {c}" for c, (expr, _, _) in comparison.items())])

    def keyed(rows: list[dict[str, Any]], side: int) -> dict[tuple[Any, ...], dict[str, Any]]:
        out = {}
        for r in rows:
            values = {c: comparison[c][side](r.get(c)) for c in comparison}
            out[tuple(values[k] if k in comparison else r[k] for k in key)] = values
        return out

    expected = keyed(postgres.query(f"SELECT {select} FROM {table}", database=database), 1)
    iceberg = table_state.catalog(settings).load_table(settings.iceberg_table)
    actual = keyed(iceberg.scan().to_arrow().to_pylist(), 2)
    columns = {f.name for f in iceberg.schema().fields} - RESERVED
    problems = []
    if columns != {*key, *comparison}:
        problems.append(
            f"{table} columns: iceberg {sorted(columns)} != {sorted({*key, *comparison})}"
        )
    problems += [
        f"missing in Iceberg: {k}" for k in sorted(expected.keys() - actual.keys(), key=repr)
    ]
    problems += [f"not in Postgres: {k}" for k in sorted(actual.keys() - expected.keys(), key=repr)]
    for k in sorted(expected.keys() & actual.keys(), key=repr):
        for c in comparison:
            if expected[k][c] != actual[k][c]:
                problems.append(
                    f"{table}{k}.{c}: postgres {_short(expected[k][c])} "
                    f"!= iceberg {_short(actual[k][c])}"
                )
    return problems


def _wait_stable(settings: Settings, topics: list[str], counts: dict[str, int]) -> None:
    """Wait until each topic holds at least ``counts`` records and stops growing."""
    deadline = time.monotonic() + 240
    previous: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            now = {t: sum(kafka_offsets.end_offsets(settings, t).values()) for t in topics}
        except kafka_offsets.TopicMissingError:  # Connect creates it with the first record
            now = {}
        if now and all(now[t] >= counts[t] for t in topics) and now == previous:
            return
        previous = now
        time.sleep(2)
    raise TimeoutError(f"Debezium did not deliver {counts} records to {topics}: {previous}")


def test_composite_keys_and_every_type_match_postgres(
    spark: Any, postgres: PostgresServer, connect: ConnectWorker, pipeline: Settings, work_dir: Path
) -> None:
    """Tables with a composite key and with the Postgres types, schema from the events:
    inserts, updates, deletes, a key change, TOAST and a column added mid-stream."""
    from articles import write_pipelines

    from jobs.drain_tables import configured_tables, drain_tables

    name = pipeline.iceberg_table.split(".")[1]
    database, prefix = f"cdc_any_{name}", f"pg_any_{name}"
    postgres.ensure_database(database)
    connector = f"any-{name}"
    try:
        postgres.sql(ANY_TABLES_DDL, database=database)
        rows = "".join(_typed_row(i) for i in range(1, 13))
        lines = "".join(
            f"INSERT INTO order_lines VALUES ({o}, {n}, 'sku-{o}-{n}', {n}, {o}.{n:02d}, "
            f"{lit('note ' * n) if n % 2 else 'NULL'});"
            for o in range(1, 6)
            for n in range(1, 4)
        )
        postgres.sql(rows + lines, database=database)  # read by the snapshot
        source = _source(postgres, database)
        config = connector_config(
            connector,
            source,
            topic_prefix=prefix,
            partitions=PARTITIONS,
            extra={"table.include.list": "public.order_lines,public.typed_rows"},
        )
        connect.register(connector, config)
        connect.wait_running(connector)
        postgres.sql(
            "".join(_typed_row(i) for i in range(13, 20))
            + "UPDATE typed_rows SET c_num = c_num + 1, c_jsonb = '{\"k\": [true, 1.5]}' "
            "WHERE c_small % 2 = 0;"  # c_big_text unchanged: TOAST placeholder
            + "DELETE FROM typed_rows WHERE id = '00000000-0000-4000-8000-000000000003';"
            + "UPDATE order_lines SET quantity = quantity * 10 WHERE order_id = 2;"
            + "DELETE FROM order_lines WHERE order_id = 3 AND line_no = 2;"
            + "UPDATE order_lines SET line_no = 9 WHERE order_id = 1 AND line_no = 1;"
            + "UPDATE typed_rows SET id = '00000000-0000-4000-8000-000000000099' "
            "WHERE id = '00000000-0000-4000-8000-000000000004';"  # key change, TOAST kept
            + "ALTER TABLE typed_rows ADD COLUMN c_added numeric(8,3);"
            + "UPDATE typed_rows SET c_added = 12.345 WHERE c_small % 3 = 0;"
            + "UPDATE typed_rows SET c_ints = ARRAY[7], c_free = NULL "
            "WHERE id = '00000000-0000-4000-8000-000000000005';",
            database=database,
        )
        topics = [f"{prefix}.public.order_lines", f"{prefix}.public.typed_rows"]
        _wait_stable(pipeline, topics, {topics[0]: 15 + 5, topics[1]: 19 + 10})

        path = write_pipelines(work_dir / "pipelines" / f"{name}-any.yaml", {})
        Path(path).write_text(f"topics: {prefix}.public.*\ntables: {{}}\n", encoding="utf-8")
        base = pipeline.replace(pipelines_file=path, sequence_order="lsn")
        tables = configured_tables(base, pipelines.load(path))
        assert [t.source for t in tables] == ["public.order_lines", "public.typed_rows"]
        outcomes = drain_tables(spark, base, tables)
        assert [o.error for o in outcomes] == [None, None]
        by_source = {t.source: t.settings(base) for t in tables}
        lines_settings, typed_settings = (
            by_source["public.order_lines"],
            by_source["public.typed_rows"],
        )
        line_columns = {c: (c, _same, _same) for c in ("sku", "quantity", "note")} | {
            "unit_price": ("unit_price::text", _decimal, _same)
        }
        problems = _table_differences(
            postgres,
            database,
            lines_settings,
            "order_lines",
            ("order_id", "line_no"),
            line_columns,
        )
        problems += _table_differences(
            postgres, database, typed_settings, "typed_rows", ("id",), TYPED_COMPARISON
        )
        assert not problems, "\n".join(problems[:30])
        for settings in (lines_settings, typed_settings):
            letters = _dlq(settings)
            assert letters == [], letters
    finally:
        if connect.running_pid() is not None:
            connect.delete(connector)
        postgres.drop_database(database)


def _dlq(settings: Settings) -> list[dict[str, Any]]:
    catalog = table_state.catalog(settings)
    if not catalog.table_exists(settings.iceberg_dlq_table):
        return []
    table = catalog.load_table(settings.iceberg_dlq_table)
    return list(table.scan(selected_fields=("kafka_offset", "reason")).to_arrow().to_pylist())


# -- connector settings: decimal.handling.mode and time.precision.mode -----------------

MODES_DDL = """\
CREATE TABLE {table} (
    day       date,
    region    smallint,
    amount    numeric(10,2),
    c_num     numeric(12,4),
    c_free    numeric,
    c_money   money,
    c_nums    numeric(10,2)[],
    c_date    date,
    c_time    time,
    c_time3   time(3),
    c_timetz  timetz,
    c_ts      timestamp,
    c_ts3     timestamp(3),
    c_ts0     timestamp(0),
    c_tstz    timestamptz,
    c_tstz3   timestamptz(3),
    note      text,
    PRIMARY KEY ({key})
);
"""
MODES_COLUMNS = (
    "day, region, amount, c_num, c_free, c_money, c_nums, c_date, c_time, c_time3, c_timetz, "
    "c_ts, c_ts3, c_ts0, c_tstz, c_tstz3, note"
)
# time zone offsets of the timetz values: a quarter hour, the extremes, UTC
TIMETZ_OFFSETS = ("+05:45", "-08", "+14", "-02", "+00", "-12", "+09:30")


def _mode_key(i: int) -> tuple[str, str]:
    """The SQL of row ``i``'s day (shared by several rows) and signed amount (its own):
    together they single the row out, whichever of them the table's key holds."""
    sign = "-" if i % 2 else ""
    return f"DATE '2026-01-01' + {i % 3}", f"{sign}{i * 11}.{i:02d}"


def _mode_where(i: int) -> str:
    day, amount = _mode_key(i)
    return f"WHERE day = {day} AND amount = {amount}"


def _mode_row(table: str, i: int, added: str | None = None) -> str:
    """Row ``i``: exact decimals of every size, instants before and after 1970, and
    fractions of a second finer than a millisecond."""
    day, amount = _mode_key(i)
    sign = "-" if i % 2 else ""
    back = -1 if i % 2 else 1
    free = (
        "123456789012345678901234567890.123456789012345",  # 45 digits
        f"{sign}0.{'0' * (i + 10)}{i}",
        f"{sign}{i}",
        f"{i}.{'5' * i}",
    )[i % 4]
    # Debezium reads money through a double: values of at most 15 digits come out exact
    money = f"{sign}{i * 1000003}.{i:02d}"
    values = [
        day,
        str(i),
        amount,
        f"{sign}{i * 1234567}.{i * 7:04d}",
        free,
        f"CAST({money} AS money)",
        f"ARRAY[{i}.10, NULL, -0.01, {sign}99999999.99]::numeric(10,2)[]",
        f"DATE '1969-12-31' + {back * i * 400}",
        f"TIME '00:00:00.000001' + {i} * interval '1 hour 59 minutes 58.987654 seconds'",
        f"TIME '23:59:59.9994' - {i} * interval '1 hour 0.0015 seconds'",
        f"'{(i * 7) % 24:02d}:{(i * 13) % 60:02d}:{(i * 17) % 60:02d}.{i * 12345:06d}"
        f"{TIMETZ_OFFSETS[i % len(TIMETZ_OFFSETS)]}'::timetz",
        f"TIMESTAMP '1969-12-31 23:59:59.999999' + {back * i} * interval '1 day 1.000001 seconds'",
        f"TIMESTAMP '1969-12-31 23:59:59.123456' + {back * i} * interval '1 hour 0.0007 seconds'",
        f"TIMESTAMP '2000-02-29 12:00:00.6' + {i} * interval '1 day 0.4 seconds'",
        f"TIMESTAMPTZ '1969-12-31 23:59:59.999999+01' + {back * i} * interval '37 days 0.000123s'",
        f"TIMESTAMPTZ '2026-03-04 05:06:07.1234-07' + {i} * interval '1.0006 seconds'",
        lit(f"row {i}"),
    ]
    columns = MODES_COLUMNS if added is None else f"{MODES_COLUMNS}, c_added"
    if added is not None:
        values.append(added)
    return f"INSERT INTO {table} ({columns}) VALUES ({', '.join(values)});"


def _mode_changes(table: str) -> str:
    """Streamed changes: inserts, updates, key changes, deletes, a decimal column added."""
    return (
        "".join(_mode_row(table, i) for i in range(7, 13))
        + f"UPDATE {table} SET c_num = -c_num, c_free = c_free * 3, c_money = c_money * 2, "
        "c_nums = ARRAY[1.05]::numeric(10,2)[], c_timetz = '23:59:59.999999-01', "
        "c_ts3 = c_ts3 + interval '1.001 seconds', note = 'updated' "
        + _mode_where(2)
        + ";"
        + f"UPDATE {table} SET c_time = '12:34:56.789999', c_tstz = NULL, note = 'updated' "
        + _mode_where(8)
        + ";"
        + f"UPDATE {table} SET amount = amount + 1000 {_mode_where(3)};"
        + f"UPDATE {table} SET day = day + 100, note = 'moved' {_mode_where(9)};"
        + f"DELETE FROM {table} {_mode_where(4)};"
        + f"DELETE FROM {table} {_mode_where(10)};"
        + f"ALTER TABLE {table} ADD COLUMN c_added numeric(14,6);"
        + f"UPDATE {table} SET c_added = -12345678.123456 {_mode_where(1)};"
        + f"UPDATE {table} SET c_added = 0.000001 {_mode_where(7)};"
        + _mode_row(table, 13, added="98765.4321")
    )


def _held_as(kind: type, convert: Any = _same) -> Any:
    """An Iceberg value read as ``convert`` would, if it has the Python type ``kind``;
    otherwise a text naming its type, which equals no Postgres value."""

    def read(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is not kind:
            return f"<{type(value).__name__}> {value!r}"
        return convert(value)

    return read


def _naive(value: Any) -> Any:
    """A timestamp_ntz value: a naive datetime."""
    if value is None or (isinstance(value, datetime) and value.tzinfo is None):
        return value
    return f"<not a local timestamp> {value!r}"


def _aware(value: Any) -> Any:
    """A timestamp (with time zone) value: an aware datetime, in UTC."""
    if value is None or (isinstance(value, datetime) and value.tzinfo is not None):
        return _utc(value)
    return f"<not an instant> {value!r}"


def _each(read: Any) -> Any:
    return lambda value: None if value is None else [read(v) for v in value]


def _pg_decimals(value: Any) -> Any:
    return None if value is None else [_decimal(v) for v in value]


# the columns every connector setting here sends alike: ZonedTime (UTC time of day) and
# ZonedTimestamp, in microseconds whatever time.precision.mode says
MODES_COMMON: dict[str, tuple[str, Any, Any]] = {
    "day": ("day", _pg_date, _same),
    "region": ("region", _same, _held_as(int)),
    "c_date": ("c_date", _pg_date, _same),
    "c_timetz": (_micros("(c_timetz AT TIME ZONE 'UTC')::time"), _same, _held_as(int)),
    "c_tstz": ("c_tstz", _pg_instant, _aware),
    "c_tstz3": ("c_tstz3", _pg_instant, _aware),
    "note": ("note", _same, _same),
}
# decimal.handling.mode=string: every numeric and money as its exact text
DECIMALS_AS_TEXT: dict[str, tuple[str, Any, Any]] = {
    **{
        c: (f"{c}::text", _decimal, _held_as(str, _decimal))
        for c in ("amount", "c_num", "c_free", "c_added")
    },
    "c_money": ("c_money::numeric::text", _decimal, _held_as(str, _decimal)),
    "c_nums": ("c_nums::text[]", _pg_decimals, _held_as(list, _each(_held_as(str, _decimal)))),
}
# decimal.handling.mode=double: the double nearest each value, as Postgres casts it
DECIMALS_AS_DOUBLE: dict[str, tuple[str, Any, Any]] = {
    **{
        c: (f"{c}::float8", _same, _held_as(float))
        for c in ("amount", "c_num", "c_free", "c_added")
    },
    "c_money": ("c_money::numeric::float8", _same, _held_as(float)),
    "c_nums": ("c_nums::float8[]", _same, _held_as(list, _each(_held_as(float)))),
}
# time.precision.mode=connect: Connect's Time and Timestamp, milliseconds (truncated)
TIMES_IN_MILLIS: dict[str, tuple[str, Any, Any]] = {
    **{
        c: (_micros(f"date_trunc('milliseconds', {c}::interval)"), _same, _held_as(int))
        for c in ("c_time", "c_time3")
    },
    **{
        c: (f"date_trunc('milliseconds', {c})", _pg_local, _naive)
        for c in ("c_ts", "c_ts3", "c_ts0")
    },
}
# time.precision.mode=adaptive: MicroTime/MicroTimestamp, or Time/Timestamp up to (3)
TIMES_AS_DECLARED: dict[str, tuple[str, Any, Any]] = {
    **{c: (_micros(c), _same, _held_as(int)) for c in ("c_time", "c_time3")},
    **{c: (c, _pg_local, _naive) for c in ("c_ts", "c_ts3", "c_ts0")},
}


@dataclass(frozen=True)
class ConnectorMode:
    """One connector's settings, the table it captures and how its values compare."""

    table: str
    key: tuple[str, ...]
    settings: dict[str, str]
    comparison: dict[str, tuple[str, Any, Any]]

    @property
    def records(self) -> int:
        """What Debezium writes for the workload: snapshot reads, inserts, updates,
        deletes and tombstones; a key change is delete, tombstone and create."""
        key_changes = 1 + ("amount" in self.key)
        return 6 + 6 + 2 + (2 - key_changes) + 3 * key_changes + 2 * 2 + 2 + 1


CONNECTOR_MODES = (
    ConnectorMode(
        "ledger_string",
        ("day", "amount"),
        {"decimal.handling.mode": "string", "time.precision.mode": "connect"},
        MODES_COMMON | DECIMALS_AS_TEXT | TIMES_IN_MILLIS,
    ),
    # its decimals are doubles: a key with a double (no Iceberg identifier field)
    ConnectorMode(
        "ledger_double",
        ("day", "amount"),
        {"decimal.handling.mode": "double", "time.precision.mode": "adaptive"},
        MODES_COMMON | DECIMALS_AS_DOUBLE | TIMES_AS_DECLARED,
    ),
)


def test_decimal_and_time_precision_modes_match_postgres(
    spark: Any, postgres: PostgresServer, connect: ConnectWorker, pipeline: Settings, work_dir: Path
) -> None:
    """Connectors with decimal.handling.mode string and double, time.precision.mode
    connect and adaptive: each value is the Postgres value as the mode promises it
    (exact text, the nearest double, milliseconds truncated, as declared), after
    snapshot reads, inserts, updates, changes of a composite key (a date with a
    decimal, then with a double), deletes and a decimal column added mid-stream."""
    from articles import write_pipelines

    from jobs.drain_tables import configured_tables, drain_tables

    name = pipeline.iceberg_table.split(".")[1]
    database = f"cdc_modes_{name}"
    postgres.ensure_database(database)
    connectors = [f"{mode.table}-{name}" for mode in CONNECTOR_MODES]
    prefixes = [f"pg_{mode.table}_{name}" for mode in CONNECTOR_MODES]
    topics = [f"{p}.public.{m.table}" for p, m in zip(prefixes, CONNECTOR_MODES, strict=True)]
    try:
        postgres.sql(
            "".join(
                MODES_DDL.format(table=m.table, key=", ".join(m.key))
                + "".join(_mode_row(m.table, i) for i in range(1, 7))
                for m in CONNECTOR_MODES
            ),
            database=database,
        )  # read by the snapshots
        for mode, connector, prefix in zip(CONNECTOR_MODES, connectors, prefixes, strict=True):
            extra = {"table.include.list": f"public.{mode.table}", **mode.settings}
            config = connector_config(
                connector,
                _source(postgres, database),
                topic_prefix=prefix,
                partitions=PARTITIONS,
                extra=extra,
            )
            connect.register(connector, config)
        for connector in connectors:
            connect.wait_running(connector)
        postgres.sql("".join(_mode_changes(m.table) for m in CONNECTOR_MODES), database=database)
        _wait_stable(
            pipeline, topics, {t: m.records for t, m in zip(topics, CONNECTOR_MODES, strict=True)}
        )

        entries = {
            f"public.{m.table}": {"topic": topic, "iceberg_table": f"neuronews.{name}_{m.table}"}
            for m, topic in zip(CONNECTOR_MODES, topics, strict=True)
        }
        path = write_pipelines(work_dir / "pipelines" / f"{name}-modes.yaml", entries)
        base = pipeline.replace(pipelines_file=path, sequence_order="lsn")
        tables = configured_tables(base, pipelines.load(path))
        outcomes = drain_tables(spark, base, tables)
        assert [o.error for o in outcomes] == [None] * len(CONNECTOR_MODES)
        problems: list[str] = []
        for mode, table in zip(CONNECTOR_MODES, tables, strict=True):
            settings = table.settings(base)
            problems += _table_differences(
                postgres, database, settings, mode.table, mode.key, mode.comparison
            )
            problems += [f"{mode.table} dead letter: {d}" for d in _dlq(settings)]
        assert not problems, "\n".join(problems[:40])
    finally:
        if connect.running_pid() is not None:
            for connector in connectors:
                connect.delete(connector)
        postgres.drop_database(database)
