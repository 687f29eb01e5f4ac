"""Freshness: how long a change committed in Postgres takes to show in the Iceberg table.

End to end through the product's own pieces, all local processes on 127.0.0.1::

    cd /work/main && nice -n 5 .venv/bin/python bench/freshness.py --quick
    .venv/bin/python bench/freshness.py --smoke          # one low rate, 20 s: checks every path
    .venv/bin/python bench/freshness.py --full
    .venv/bin/python bench/freshness.py --rates 100,500 --duration 90 --interval 5

What runs: a PostgreSQL server (:mod:`cdc_iceberg.local.postgres`), a KRaft
Kafka broker (:func:`bench.common.kafka_broker`), a Kafka Connect worker with
the Debezium Postgres connector (:mod:`cdc_iceberg.local.connect`), and one
Spark driver (:func:`jobs.session.build_session`) that drains.

For each rate R of the sweep, with a fresh database, connector and topics:

1. Three tables of different shapes, captured by one connector, one topic
   each: ``notes`` (text key, a text body that is TOASTed for one row in
   five), ``order_lines`` (composite key, numeric and timestamptz columns) and
   ``events`` (bigint key, double and text columns).
2. A writer thread commits one small transaction every 100 ms, R row changes a
   second in all, spread evenly over the three tables: 80 % inserts, 15 %
   updates (the ``notes`` updates leave the TOASTed body alone), 5 % deletes.
3. Meanwhile, every ``--interval`` seconds (5 s by default), the driver runs
   what a scheduled run of the ``cdc_to_iceberg`` DAG runs: the configured
   tables found by the pipelines file's topic pattern, one
   :func:`jobs.cdc_to_iceberg.drain` each (:func:`jobs.drain_tables.drain_tables`).
   The one Spark driver stays up between runs: a scheduled run would also pay
   the start of its JVM and session each time, which this leaves out. A run
   that takes longer than the interval is followed by the next at once; one
   more run follows the writer's end on the same schedule. A first run before
   the writer starts creates the Iceberg tables and is not measured.
4. Afterwards, per inserted row: lag = visible - commit, in seconds.

   * commit: the wall-clock time (ms) at which the writer's ``COMMIT``
     returned, recorded by the writer per inserted key. As a check of the two
     clocks, it is compared with Debezium's ``source.ts_ms`` (Postgres' commit
     time, stored in the live table's ``ts_ms`` column) for the rows whose
     first visible version is the insert itself: ``clock_check`` in the JSON.
   * visible: ``committed_at`` (ms) of the first snapshot of the live Iceberg
     table whose data holds the row (time travel over every snapshot listed
     in ``<table>.snapshots``; MERGE commits of copy-on-write tables are
     ``overwrite`` snapshots). A row inserted and deleted before any drain saw
     it is never visible and not measured.

   Everything runs on this machine, so both clocks are the same wall clock.
5. After the writer stops, drains run until each Iceberg table equals its
   Postgres table (keys and compared columns: every key, plus a few columns
   per table, timestamps as epoch microseconds and the body as its md5), or
   ``FINAL_TIMEOUT_S`` passes: ``tables_right`` in the JSON.

**Bounded.** The rows of a rate are split by commit time into thirds of the
writer's run. The lag of that rate is *bounded* when both hold:

* the writer achieved at least 90 % of the target rate (``WRITER_SHARE``), and
* p95 of the last third <= p95 of the first third + allowance, where the
  allowance is the larger of one drain interval and half the first third's
  p95 (``GROWTH_SHARE``).

A lag that keeps growing with the backlog fails the second test; a source the
writer cannot feed at R fails the first. The sweep stops at the first rate
that is not bounded; the JSON's ``first_unbounded_rate`` names it (null when
every rate was bounded) and ``last_bounded_rate`` the rate before it.

Where the lag goes: a sample of each topic's insert events gives the Debezium
leg (Kafka record time minus the writer's commit time); the rest is the wait
for the next drain and the drain itself (``drain_runs`` lists every run).

Writes ``bench/results/freshness-<scale>.json`` (``--rates`` or ``--duration``
given: ``freshness-custom.json``) with the machine facts, and prints a summary.
Scratch data lives in ``bench/results/tmp/freshness-<scale>`` and is deleted at
the end unless ``--keep-scratch``. Every process started here is stopped in a
``finally``, also on SIGTERM and SIGINT. The Postgres password is never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import logging
import os
import random
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the project root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SCRATCH_DIR, kafka_broker, machine_info, percentile, write_result

PARTITIONS = 3  # per topic, as the integration tests run Debezium
TICK_S = 0.1  # the writer commits one transaction this often
MIX = (("insert", 0.80), ("update", 0.15), ("delete", 0.05))
WRITER_SHARE = 0.90  # the writer must reach this share of the target rate
GROWTH_SHARE = 0.5  # allowance of the last third over the first: this share of its p95 ...
FINAL_TIMEOUT_S = 180.0  # after the writer stops, drains until the tables agree, at most this
SEED_ROWS = 3  # rows per table before the connector starts (its snapshot creates the topics)
BIG_BODY_EVERY = 5  # one notes row in this many gets a body Postgres TOASTs
TIMELINE_BUCKET_S = 10.0
TAIL_RUNS = 1  # scheduled drain runs after the writer stops


@dataclasses.dataclass(frozen=True)
class Plan:
    """One run of the benchmark: the rates swept, how long each, how often to drain."""

    name: str
    rates: tuple[int, ...]
    duration_s: float
    interval_s: float


PLANS = {
    "smoke": Plan("smoke", (50,), 20.0, 5.0),
    "quick": Plan("quick", (100, 500, 1500), 60.0, 5.0),
    "full": Plan("full", (100, 500, 1000, 2000, 4000), 180.0, 5.0),
}


# -- the statistics (pure) ----------------------------------------------------------


def lag_summary(lags: Sequence[float]) -> dict[str, Any]:
    """Rows, p50/p95/p99/max of lags in seconds (None without rows)."""

    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "rows": len(lags),
        "p50_s": r(percentile(lags, 50)),
        "p95_s": r(percentile(lags, 95)),
        "p99_s": r(percentile(lags, 99)),
        "max_s": r(max(lags) if lags else None),
    }


def row_lags(
    commit_ms: Mapping[Any, int], visible_ms: Mapping[Any, int]
) -> tuple[list[tuple[int, float]], int]:
    """(commit ms, lag s) of every committed key that became visible, by commit time,
    and how many committed keys never did."""
    points = [
        (committed, (visible_ms[key] - committed) / 1000.0)
        for key, committed in commit_ms.items()
        if key in visible_ms
    ]
    points.sort()
    return points, len(commit_ms) - len(points)


def first_visible(snapshots: Sequence[tuple[int, Sequence[Any]]]) -> dict[Any, int]:
    """Per key, the commit time of the first snapshot holding it.

    ``snapshots`` are (committed_at ms, keys the snapshot's data holds), in any
    order. The driver computes the same in Spark (:func:`_visible_times`).
    """
    seen: dict[Any, int] = {}
    for committed, keys in sorted(snapshots, key=lambda s: s[0]):
        for key in keys:
            seen.setdefault(key, committed)
    return seen


def timeline(
    points: Sequence[tuple[int, float]], start_ms: int, bucket_s: float = TIMELINE_BUCKET_S
) -> list[dict[str, Any]]:
    """The lag over the run: per bucket of commit time, its rows, p50, p95 and max."""
    buckets: dict[int, list[float]] = {}
    for committed, lag in points:
        buckets.setdefault(int((committed - start_ms) / 1000.0 // bucket_s), []).append(lag)
    return [{"from_s": round(b * bucket_s, 1), **lag_summary(buckets[b])} for b in sorted(buckets)]


def boundedness(
    points: Sequence[tuple[int, float]],
    start_ms: int,
    end_ms: int,
    interval_s: float,
    target_rate: float,
    achieved_rate: float,
) -> dict[str, Any]:
    """Whether the lag of one rate is bounded (the criterion of the module docstring)."""
    third = (end_ms - start_ms) / 3.0
    first = [lag for c, lag in points if c < start_ms + third]
    last = [lag for c, lag in points if c >= end_ms - third]
    p95_first, p95_last = percentile(first, 95), percentile(last, 95)
    reasons = []
    kept_up = achieved_rate >= WRITER_SHARE * target_rate
    if not kept_up:
        reasons.append(
            f"writer reached {achieved_rate:.0f} of {target_rate:.0f} rows/s (< {WRITER_SHARE:.0%})"
        )
    allowance = None
    grew = False
    if p95_first is None or p95_last is None:
        reasons.append("no rows measured in the first or last third")
    else:
        allowance = max(interval_s, GROWTH_SHARE * p95_first)
        grew = p95_last > p95_first + allowance
        if grew:
            reasons.append(
                f"p95 lag grew from {p95_first:.1f} s (first third) to {p95_last:.1f} s "
                f"(last third), more than the allowance of {allowance:.1f} s"
            )
    return {
        "bounded": not reasons,
        "writer_kept_up": kept_up,
        "p95_first_third_s": None if p95_first is None else round(p95_first, 3),
        "p95_last_third_s": None if p95_last is None else round(p95_last, 3),
        "allowance_s": None if allowance is None else round(allowance, 3),
        "reasons": reasons,
    }


def sweep_verdict(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The first rate whose lag was not bounded, and the highest bounded rate below it."""
    last_bounded = None
    for result in results:
        if not result["bounded"]["bounded"]:
            return {"first_unbounded_rate": result["rate"], "last_bounded_rate": last_bounded}
        last_bounded = result["rate"]
    return {"first_unbounded_rate": None, "last_bounded_rate": last_bounded}


# -- the tables ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shape:
    """One source table: its DDL, key, and the columns compared at the end."""

    name: str
    ddl: str
    key: tuple[str, ...]
    # (Postgres expression, Spark SQL expression) of each compared column
    compared: tuple[tuple[str, str], ...]

    def key_sql(self) -> str:
        """The key as one string, the same in Postgres and Spark SQL."""
        if len(self.key) == 1:
            return f"CAST({self.key[0]} AS {{text}})"
        return "concat_ws(':', " + ", ".join(f"CAST({k} AS {{text}})" for k in self.key) + ")"


def _micros(column: str) -> tuple[str, str]:
    return (f"(extract(epoch from {column}) * 1000000)::bigint", f"unix_micros({column})")


SHAPES = (
    Shape(
        "notes",
        "CREATE TABLE notes (note_id text PRIMARY KEY, title text, body text, "
        "updated_at timestamptz)",
        ("note_id",),
        (("title", "title"), ("md5(body)", "md5(body)"), _micros("updated_at")),
    ),
    Shape(
        "order_lines",
        "CREATE TABLE order_lines (order_id bigint, line_no integer, sku text NOT NULL, "
        "quantity integer NOT NULL, unit_price numeric(12,2), ordered_at timestamptz, "
        "PRIMARY KEY (order_id, line_no))",
        ("order_id", "line_no"),
        (
            ("sku", "sku"),
            ("quantity", "quantity"),
            ("unit_price::text", "CAST(unit_price AS STRING)"),
            _micros("ordered_at"),
        ),
    ),
    Shape(
        "events",
        "CREATE TABLE events (event_id bigint PRIMARY KEY, kind text, amount double precision, "
        "payload text, happened_at timestamptz)",
        ("event_id",),
        (("kind", "kind"), ("amount", "amount"), ("payload", "payload"), _micros("happened_at")),
    ),
)


def _key_string(shape: Shape, n: int) -> str:
    """The key of the writer's n-th row of ``shape``, as :meth:`Shape.key_sql` renders it."""
    if shape.name == "notes":
        return f"n-{n:09d}"
    if shape.name == "order_lines":
        return f"{n // 4}:{n % 4}"
    return str(n)


# -- the writer ---------------------------------------------------------------------


class Writer(threading.Thread):
    """Commits R row changes a second over the three tables, one transaction per tick."""

    def __init__(self, dsn: str, rate: float, duration_s: float, seed: int) -> None:
        super().__init__(name="writer", daemon=True)
        self.dsn = dsn
        self.rate = rate
        self.duration_s = duration_s
        self.random = random.Random(seed)
        self.halt = threading.Event()
        self.commits: dict[str, dict[str, int]] = {s.name: {} for s in SHAPES}
        self.counts = {"insert": 0, "update": 0, "delete": 0, "transactions": 0, "late_ticks": 0}
        self.next_n = dict.fromkeys((s.name for s in SHAPES), SEED_ROWS)
        self.live: dict[str, list[int]] = {s.name: list(range(SEED_ROWS)) for s in SHAPES}
        self.started_ms = 0
        self.ended_ms = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        import psycopg2

        try:
            with contextlib.closing(psycopg2.connect(self.dsn)) as conn:
                self._loop(conn)
        except BaseException as error:
            self.error = error

    def _loop(self, conn: Any) -> None:
        owed = 0.0
        start = time.monotonic()
        self.started_ms = _now_ms()
        tick = 0
        while not self.halt.is_set():
            due = start + tick * TICK_S
            if due >= start + self.duration_s:
                break
            wait = due - time.monotonic()
            if wait > 0:
                self.halt.wait(wait)
            elif wait < -TICK_S:
                self.counts["late_ticks"] += 1
            owed += self.rate * TICK_S
            changes = int(owed)
            owed -= changes
            if changes:
                self._transaction(conn, changes)
            tick += 1
        self.ended_ms = _now_ms()

    def _transaction(self, conn: Any, changes: int) -> None:
        from psycopg2.extras import execute_values

        plan: dict[tuple[str, str], int] = {}
        ops = [op for op, _ in MIX]
        weights = [share for _, share in MIX]
        for _ in range(changes):
            shape = self.random.choice(SHAPES).name
            op = self.random.choices(ops, weights)[0]
            # deletes run first, updates pick among the rows left: never more than there are
            taken = plan.get((shape, "delete"), 0) + plan.get((shape, "update"), 0)
            if op != "insert" and len(self.live[shape]) <= taken + 1:
                op = "insert"
            plan[(shape, op)] = plan.get((shape, op), 0) + 1
        inserted: dict[str, list[int]] = {}
        with conn.cursor() as cur:
            for (shape, op), count in sorted(plan.items()):
                if op == "insert":
                    numbers = list(range(self.next_n[shape], self.next_n[shape] + count))
                    self.next_n[shape] += count
                    execute_values(cur, _INSERT[shape], [_row(shape, n) for n in numbers])
                    inserted[shape] = numbers
                elif op == "update":
                    picked = self.random.sample(self.live[shape], count)
                    execute_values(cur, _UPDATE[shape], [_update(shape, n) for n in picked])
                else:
                    picked = self._take(shape, count)
                    execute_values(cur, _DELETE[shape], [_key_values(shape, n) for n in picked])
                self.counts[op] += count
        conn.commit()
        committed = _now_ms()
        self.counts["transactions"] += 1
        for shape, numbers in inserted.items():
            shape_of = next(s for s in SHAPES if s.name == shape)
            for n in numbers:
                self.commits[shape][_key_string(shape_of, n)] = committed
            self.live[shape].extend(numbers)

    def _take(self, shape: str, count: int) -> list[int]:
        live = self.live[shape]
        taken = []
        for _ in range(count):
            i = self.random.randrange(len(live))
            live[i], live[-1] = live[-1], live[i]
            taken.append(live.pop())
        return taken

    @property
    def changes(self) -> int:
        return self.counts["insert"] + self.counts["update"] + self.counts["delete"]


def _now_ms() -> int:
    return int(time.time() * 1000)


_INSERT = {
    "notes": "INSERT INTO notes (note_id, title, body, updated_at) VALUES %s",
    "order_lines": "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price, "
    "ordered_at) VALUES %s",
    "events": "INSERT INTO events (event_id, kind, amount, payload, happened_at) VALUES %s",
}
_UPDATE = {
    # the body is left alone: Debezium sends its TOAST placeholder, the job keeps the value
    "notes": "UPDATE notes SET title = v.title, updated_at = clock_timestamp() "
    "FROM (VALUES %s) AS v(note_id, title) WHERE notes.note_id = v.note_id",
    "order_lines": "UPDATE order_lines SET quantity = v.quantity, unit_price = v.price::numeric "
    "FROM (VALUES %s) AS v(order_id, line_no, quantity, price) "
    "WHERE order_lines.order_id = v.order_id AND order_lines.line_no = v.line_no",
    "events": "UPDATE events SET amount = v.amount, kind = v.kind "
    "FROM (VALUES %s) AS v(event_id, amount, kind) WHERE events.event_id = v.event_id",
}
_DELETE = {
    "notes": "DELETE FROM notes WHERE note_id IN (SELECT k FROM (VALUES %s) AS v(k))",
    "order_lines": "DELETE FROM order_lines WHERE (order_id, line_no) IN "
    "(SELECT o, l FROM (VALUES %s) AS v(o, l))",
    "events": "DELETE FROM events WHERE event_id IN (SELECT k FROM (VALUES %s) AS v(k))",
}


def _key_values(shape: str, n: int) -> tuple[Any, ...]:
    if shape == "notes":
        return (f"n-{n:09d}",)
    if shape == "order_lines":
        return (n // 4, n % 4)
    return (n,)


def _row(shape: str, n: int) -> tuple[Any, ...]:
    now = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime())
    if shape == "notes":
        body = os.urandom(2048).hex() if n % BIG_BODY_EVERY == 0 else f"short body {n}"
        return (f"n-{n:09d}", f"note {n}", body, now)
    if shape == "order_lines":
        return (n // 4, n % 4, f"sku-{n % 997}", 1 + n % 9, f"{n % 10000}.{n % 100:02d}", now)
    return (n, f"kind-{n % 7}", n * 0.25, f"payload {n} " + "x" * (n % 40), now)


def _update(shape: str, n: int) -> tuple[Any, ...]:
    if shape == "notes":
        return (f"n-{n:09d}", f"note {n} edited at {time.time():.3f}")
    if shape == "order_lines":
        return (n // 4, n % 4, 10 + n % 7, f"{n % 500}.{(n * 7) % 100:02d}")
    return (n, n * 0.5 + 0.125, f"kind-{(n + 1) % 7}")


# -- the stack -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Stop(Exception):
    """SIGTERM arrived: unwind, stopping everything started."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Stop(f"signal {signum}")


@contextlib.contextmanager
def _postgres(data_dir: Path) -> Iterator[Any]:
    from cdc_iceberg.local.postgres import PostgresServer

    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o755)  # as root the server runs as the postgres OS user
    server = PostgresServer(
        data_dir=data_dir, port=_free_port(), password=os.urandom(12).hex(), database="fresh_boot"
    )
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()


@contextlib.contextmanager
def _connect(data_dir: Path, bootstrap: str) -> Iterator[Any]:
    from cdc_iceberg.local.connect import ConnectWorker

    worker = ConnectWorker(
        data_dir=data_dir, bootstrap_servers=bootstrap, port=_free_port(), group="fresh-connect"
    )
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()


@contextlib.contextmanager
def _spark(settings: Any) -> Iterator[Any]:
    from jobs.session import build_session

    spark = build_session(settings, app_name="bench-freshness")
    try:
        yield spark
    finally:
        gateway = getattr(spark.sparkContext, "_gateway", None)
        spark.stop()
        process = getattr(gateway, "proc", None)
        if gateway is not None:
            with contextlib.suppress(Exception):
                gateway.shutdown()
        if process is not None and process.poll() is None:
            process.terminate()
            with contextlib.suppress(Exception):
                process.wait(timeout=20)


# -- one rate ------------------------------------------------------------------------


@dataclasses.dataclass
class Rig:
    """What every rate shares: the servers, the driver, and where things go."""

    work: Path
    postgres: Any
    connect: Any
    spark: Any
    settings: Any  # cdc_iceberg.settings.Settings without a table
    interval_s: float


def run_rate(rig: Rig, index: int, rate: int, duration_s: float) -> dict[str, Any]:
    """One rate of the sweep on a database, connector, topics and tables of its own."""
    from cdc_iceberg import pipelines
    from cdc_iceberg.local.connect import PostgresSource, connector_config
    from jobs.drain_tables import configured_tables

    began = time.monotonic()
    database, prefix, connector = f"fresh_{index}", f"fresh{index}", f"fresh-{index}"
    pg = rig.postgres
    pg.ensure_database(database)
    pg.sql(";\n".join(s.ddl for s in SHAPES) + ";", database=database)
    for shape in SHAPES:  # a few rows for the snapshot, so that every topic exists
        _insert_seed(pg, database, shape)
    source = PostgresSource(pg.host, pg.port, pg.user, pg.password, database)
    include = ",".join(f"public.{s.name}" for s in SHAPES)
    config = connector_config(
        connector, source, prefix, PARTITIONS, extra={"table.include.list": include}
    )
    rig.connect.register(connector, config)
    rig.connect.wait_running(connector)
    writer: Writer | None = None
    try:
        pipelines_file = rig.work / f"pipelines-{index}.yaml"
        pipelines_file.write_text(f"topics: {prefix}.public.*\ntables: {{}}\n")
        base = rig.settings.replace(
            kafka_consumer_group=f"fresh_{index}",
            checkpoint_location=str(rig.work / "checkpoints" / str(index)),
            pipelines_file=str(pipelines_file),
        )
        loaded = pipelines.load(pipelines_file, namespace=f"fresh{index}")
        tables = _wait_tables(base, loaded, len(SHAPES), configured_tables)
        by_shape = {t.source.split(".")[1]: t.settings(base) for t in tables}
        setup_s = time.monotonic() - began
        # the first run creates the Iceberg tables from the snapshot: outside the measure
        warm = _drain_once(rig.spark, base, tables, rig.work / "batches.jsonl")
        if warm["errors"]:
            raise RuntimeError(f"the first drain failed: {warm['errors']}")

        writer = Writer(pg.dsn(database), rate, duration_s, seed=index)
        writer.start()
        runs = _drain_while(rig, base, tables, writer)
        writer.join()
        if writer.error is not None:
            raise RuntimeError(f"the writer failed: {writer.error!r}")
        final = _converge(rig, base, tables, by_shape, database)
        analysed = time.monotonic()
        per_table, clock, kafka = {}, [], {}
        all_points: list[tuple[int, float]] = []
        for shape in SHAPES:
            settings = by_shape[shape.name]
            visible, stamps = _visible_times(rig.spark, settings, shape, writer.started_ms)
            points, unseen = row_lags(writer.commits[shape.name], visible)
            all_points.extend(points)
            clock += [
                writer.commits[shape.name][k] - ts
                for k, ts in stamps.items()
                if k in writer.commits[shape.name]
            ]
            kafka[shape.name] = _debezium_leg(settings, shape, writer.commits[shape.name])
            per_table[shape.name] = {
                **lag_summary([lag for _, lag in points]),
                "inserted": len(writer.commits[shape.name]),
                "never_visible": unseen,
                "timeline": timeline(points, writer.started_ms),
            }
        all_points.sort()
        achieved = writer.changes / max(1e-9, (writer.ended_ms - writer.started_ms) / 1000.0)
        verdict = boundedness(
            all_points, writer.started_ms, writer.ended_ms, rig.interval_s, rate, achieved
        )
        return {
            "rate": rate,
            "achieved_rate": round(achieved, 1),
            "writer": {
                **writer.counts,
                "seconds": round((writer.ended_ms - writer.started_ms) / 1000.0, 2),
            },
            "overall": {
                **lag_summary([lag for _, lag in all_points]),
                "timeline": timeline(all_points, writer.started_ms),
            },
            "bounded": verdict,
            "tables": per_table,
            "debezium_leg": kafka,
            "clock_check": {
                "what": "writer commit time - source.ts_ms, rows first visible as their insert",
                "rows": len(clock),
                "p50_ms": percentile(clock, 50),
                "min_ms": min(clock) if clock else None,
                "max_ms": max(clock) if clock else None,
            },
            "drain_runs": {
                "count": len(runs),
                "seconds": lag_summary([r["seconds"] for r in runs]),
                "over_interval": sum(r["seconds"] > rig.interval_s for r in runs),
                "runs": runs,
            },
            "final": final,
            "phases_s": {
                "setup": round(setup_s, 1),
                "first_drain": warm["seconds"],
                "analysis": round(time.monotonic() - analysed, 1),
                "total": round(time.monotonic() - began, 1),
            },
            "tables_right": final["tables_right"],
        }
    finally:
        if writer is not None:  # stopped early (a failed drain, a signal): stop writing
            writer.halt.set()
            writer.join(timeout=10)
        with contextlib.suppress(Exception):
            rig.connect.delete(connector)
        with contextlib.suppress(Exception):
            pg.drop_database(database)


def _insert_seed(pg: Any, database: str, shape: Shape) -> None:
    values = []
    for n in range(SEED_ROWS):
        cells = []
        for cell in _row(shape.name, n):
            if isinstance(cell, str):
                cells.append("'" + cell.replace("'", "''") + "'")
            else:
                cells.append(repr(cell))
        values.append("(" + ", ".join(cells) + ")")
    pg.sql(_INSERT[shape.name].replace("%s", ", ".join(values)), database=database)


def _wait_tables(
    base: Any, loaded: Any, count: int, configured: Callable[..., Any], timeout: float = 120
) -> Any:
    """The configured tables, once the connector's snapshot has created every topic."""
    deadline = time.monotonic() + timeout
    while True:
        tables = configured(base, loaded)
        if len(tables) >= count:
            return tables
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {[t.topic for t in tables]} appeared in {timeout}s")
        time.sleep(1)


def _drain_once(spark: Any, base: Any, tables: Any, log: Path) -> dict[str, Any]:
    """One scheduled run: one drain per table (jobs.drain_tables), timed."""
    from jobs.drain_tables import drain_tables

    started_ms = _now_ms()
    began = time.monotonic()
    # the job prints one JSON line per batch: kept in the scratch log, not on the console
    with open(log, "a") as out, contextlib.redirect_stdout(out):
        outcomes = drain_tables(spark, base, tables)
    done = [o for o in outcomes if o.error is None]
    return {
        "started_ms": started_ms,
        "seconds": round(time.monotonic() - began, 2),
        "events_in": {o.table.source: o.result.totals()["events_in"] for o in done},
        # per table: its batches' own time (the run's tables drain at the same time)
        "batch_s": {
            o.table.source: round(sum(b.duration_s for b in o.result.batches), 2) for o in done
        },
        "errors": {o.table.source: str(o.error)[:300] for o in outcomes if o.error is not None},
    }


def _drain_while(rig: Rig, base: Any, tables: Any, writer: Writer) -> list[dict[str, Any]]:
    """Runs every interval while the writer writes, and one more after it stops, so that
    its last rows are drained on the same schedule; the next run at once after a long one."""
    runs = []
    next_start = time.monotonic() + rig.interval_s
    after_writer = 0
    while after_writer < TAIL_RUNS:
        if not writer.is_alive():
            after_writer += 1
        wait = next_start - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        next_start = max(time.monotonic(), next_start) + rig.interval_s
        run = _drain_once(rig.spark, base, tables, rig.work / "batches.jsonl")
        run["started_s"] = round((run["started_ms"] - writer.started_ms) / 1000.0, 2)
        runs.append(run)
        if run["errors"]:
            writer.halt.set()
            raise RuntimeError(f"a drain failed: {run['errors']}")
    return runs


def _converge(
    rig: Rig, base: Any, tables: Any, by_shape: Mapping[str, Any], database: str
) -> dict[str, Any]:
    """Drain until every Iceberg table equals its Postgres table, or the timeout."""
    began = time.monotonic()
    drains = 0
    problems: dict[str, list[str]] = {}
    while True:
        run = _drain_once(rig.spark, base, tables, rig.work / "batches.jsonl")
        drains += 1
        problems = {
            s.name: _differences(rig, by_shape[s.name], s, database)
            for s in SHAPES
            if not run["errors"]
        }
        problems = {k: v for k, v in problems.items() if v} or (
            {"drain": list(run["errors"].values())} if run["errors"] else {}
        )
        if not problems or time.monotonic() - began > FINAL_TIMEOUT_S:
            break
        time.sleep(3)
    rows = {
        s.name: int(rig.postgres.scalar(f"SELECT count(*) FROM {s.name}", database=database))
        for s in SHAPES
    }
    return {
        "tables_right": not problems,
        "drains": drains,
        "seconds": round(time.monotonic() - began, 2),
        "rows": rows,
        "differences": {k: v[:10] for k, v in problems.items()},
    }


def _differences(rig: Rig, settings: Any, shape: Shape, database: str) -> list[str]:
    """Where the Iceberg table and the Postgres table disagree (keys and compared columns)."""
    pg_columns = ", ".join(pg for pg, _ in shape.compared)
    pg_key = shape.key_sql().format(text="text")
    pg_rows = rig.postgres.query(
        f"SELECT {pg_key} AS k, {pg_columns} FROM {shape.name}", database=database
    )
    expected = {r["k"]: tuple(v for k, v in r.items() if k != "k") for r in pg_rows}
    spark_columns = ", ".join(f"{sp} AS c{i}" for i, (_, sp) in enumerate(shape.compared))
    frame = rig.spark.sql(
        f"SELECT {shape.key_sql().format(text='STRING')} AS k, {spark_columns} "
        f"FROM {settings.qualified(settings.iceberg_table)}"
    )
    actual: dict[str, tuple[Any, ...]] = {}
    duplicates = 0
    for row in frame.collect():
        if row["k"] in actual:
            duplicates += 1
        actual[row["k"]] = tuple(list(row)[1:])
    out = [f"{duplicates} duplicate keys"] if duplicates else []
    out += [f"missing in Iceberg: {k}" for k in sorted(expected.keys() - actual.keys())[:5]]
    out += [f"not in Postgres: {k}" for k in sorted(actual.keys() - expected.keys())[:5]]
    out += [
        f"{k}: postgres {expected[k]!r:.120} != iceberg {actual[k]!r:.120}"
        for k in sorted(expected.keys() & actual.keys())
        if expected[k] != actual[k]
    ][:10]
    return out


def _visible_times(
    spark: Any, settings: Any, shape: Shape, since_ms: int
) -> tuple[dict[str, int], dict[str, int]]:
    """Per key, the committed_at (ms) of the first live-table snapshot holding it, and the
    ``ts_ms`` of that version when it is the insert itself (``cdc_op = 'c'``)."""
    from pyspark.sql import functions as F

    table = settings.qualified(settings.iceberg_table)
    snapshots = spark.sql(
        f"SELECT snapshot_id, unix_millis(committed_at) AS ms FROM {table}.snapshots"
    ).collect()
    # the warm-up run's snapshots hold only seed rows: start from the last one before the writer
    ordered = sorted((int(s["ms"]), int(s["snapshot_id"])) for s in snapshots)
    before = [s for s in ordered if s[0] < since_ms]
    chosen = before[-1:] + [s for s in ordered if s[0] >= since_ms]
    key = F.expr(shape.key_sql().format(text="STRING"))
    frames = [
        spark.sql(f"SELECT * FROM {table} VERSION AS OF {sid}").select(
            key.alias("k"), F.lit(ms).alias("seen"), "ts_ms", "cdc_op"
        )
        for ms, sid in chosen
    ]
    union = functools.reduce(lambda a, b: a.unionByName(b), frames)
    rows = (
        union.groupBy("k")
        .agg(
            F.min("seen").alias("seen"),
            F.min_by("ts_ms", "seen").alias("ts_ms"),
            F.min_by("cdc_op", "seen").alias("op"),
        )
        .collect()
    )
    visible = {r["k"]: int(r["seen"]) for r in rows}
    stamps = {r["k"]: int(r["ts_ms"]) for r in rows if r["op"] == "c" and r["ts_ms"] is not None}
    return visible, stamps


def _debezium_leg(
    settings: Any, shape: Shape, commits: Mapping[str, int], sample: int = 5000
) -> dict[str, Any]:
    """Kafka record time minus the writer's commit time, for a sample of insert events."""
    from kafka import TopicPartition

    from cdc_iceberg import kafka_offsets

    legs: list[float] = []
    with kafka_offsets.consumer(settings) as consumer:
        parts = [
            TopicPartition(settings.kafka_topic, p)
            for p in sorted(consumer.partitions_for_topic(settings.kafka_topic) or ())
        ]
        ends = consumer.end_offsets(parts)
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        total = sum(ends.values())
        every = max(1, total // sample)
        seen = 0
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            if time.monotonic() > deadline:
                break
            for records in consumer.poll(timeout_ms=1000, max_records=5000).values():
                for record in records:
                    seen += 1
                    if seen % every or record.value is None:
                        continue
                    value = json.loads(record.value)
                    payload = value.get("payload", value)
                    if payload.get("op") != "c":
                        continue
                    after = payload["after"]
                    key = _key_from_after(shape, after)
                    if key in commits:
                        legs.append((record.timestamp - commits[key]) / 1000.0)
    return {"what": "Kafka record time - writer commit time, sampled inserts", **lag_summary(legs)}


def _key_from_after(shape: Shape, after: Mapping[str, Any]) -> str:
    return ":".join(str(after[k]) for k in shape.key)


# -- the run -------------------------------------------------------------------------


def run(plan: Plan, keep_scratch: bool) -> dict[str, Any]:
    from cdc_iceberg.settings import Settings

    machine = machine_info()
    work = SCRATCH_DIR / f"freshness-{plan.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    work.chmod(0o755)  # as root, the postgres OS user must reach its data dir
    began = time.monotonic()
    results: list[dict[str, Any]] = []
    failure = None
    started_stack = None
    driver_memory = None
    try:
        with (
            _postgres(work / "postgres") as pg,
            kafka_broker(work / "kafka") as broker,
            _connect(work / "connect", broker.bootstrap_servers) as connect,
        ):
            settings = Settings(
                kafka_bootstrap_servers=broker.bootstrap_servers,
                iceberg_catalog_uri=f"sqlite:///{work}/catalog.db",
                iceberg_warehouse=f"file://{work}/warehouse",
                checkpoint_location=str(work / "checkpoints" / "default"),
                # Postgres sources order changes by WAL position, as the compose stack does
                sequence_order="lsn",
                # one driver stays up for every drain run of the sweep, where a scheduled
                # run is a spark-submit of its own: it keeps the state of earlier runs (the
                # Kafka source's consumers, cached blocks) while three tables drain at once;
                # the full sweep ran out of a 1 GiB heap, and at 3 GiB its old generation
                # settled at 1 to 1.5 GiB
                spark_driver_memory=os.environ.get("SPARK_DRIVER_MEMORY") or "3g",
            )
            started_stack = round(time.monotonic() - began, 1)
            with _spark(settings) as spark:
                driver_memory = spark.sparkContext.getConf().get("spark.driver.memory", None)
                rig = Rig(work, pg, connect, spark, settings, plan.interval_s)
                for index, rate in enumerate(plan.rates):
                    print(f"rate {rate} rows/s for {plan.duration_s:.0f} s ...", flush=True)
                    result = run_rate(rig, index, rate, plan.duration_s)
                    results.append(result)
                    print(_line(result), flush=True)
                    if not result["bounded"]["bounded"]:
                        break
    except (Exception, _Stop, KeyboardInterrupt) as error:
        failure = f"{type(error).__name__}: {error}"[:2000]
        print(f"stopped: {failure}", file=sys.stderr, flush=True)
    finally:
        if not keep_scratch:
            shutil.rmtree(work, ignore_errors=True)
    body = {
        "what": (
            "seconds from a row's Postgres commit (the writer's clock when COMMIT returned) "
            "to the committed_at of the first live Iceberg snapshot holding it, through "
            "Debezium, Kafka and the product's drain"
        ),
        "how": (
            "one Spark driver kept up for the whole run; every interval it runs one "
            "jobs.cdc_to_iceberg.drain per configured table (jobs.drain_tables), as a "
            "scheduled cdc_to_iceberg run does, without the JVM start a run pays each time"
        ),
        "plan": dataclasses.asdict(plan),
        "driver_memory": driver_memory,
        "writer_mix": dict(MIX),
        "tick_s": TICK_S,
        "bounded_criterion": (
            f"bounded when the writer reached >= {WRITER_SHARE:.0%} of the target rate and "
            "p95 lag of rows committed in the last third of the run <= p95 of the first third "
            f"+ max(drain interval, {GROWTH_SHARE} x p95 of the first third)"
        ),
        "stack_start_s": started_stack,
        "results": results,
        **sweep_verdict(results),
        "all_tables_right": bool(results) and all(r["tables_right"] for r in results),
        "failed": failure,
        "wall_s": round(time.monotonic() - began, 1),
    }
    body["path"] = str(write_result(f"freshness-{plan.name}", body, machine))
    return body


def _line(result: Mapping[str, Any]) -> str:
    o = result["overall"]
    verdict = "bounded" if result["bounded"]["bounded"] else "NOT bounded"
    return (
        f"  rate {result['rate']:>5}: achieved {result['achieved_rate']:>7.1f}/s  "
        f"lag p50 {o['p50_s']} p95 {o['p95_s']} p99 {o['p99_s']} max {o['max_s']} s  "
        f"({o['rows']} rows, {result['drain_runs']['count']} drain runs)  {verdict}  "
        f"tables {'right' if result['tables_right'] else 'WRONG'}"
    )


def summary(body: Mapping[str, Any]) -> str:
    lines = ["freshness: Postgres commit -> visible in Iceberg"]
    lines += [_line(r) for r in body["results"]]
    for r in body["results"]:
        if r["bounded"]["reasons"]:
            lines.append(f"  rate {r['rate']}: " + "; ".join(r["bounded"]["reasons"]))
    lines.append(
        f"first unbounded rate: {body['first_unbounded_rate']}  "
        f"last bounded rate: {body['last_bounded_rate']}  "
        f"all tables right: {body['all_tables_right']}  wall {body['wall_s']} s"
    )
    if body["failed"]:
        lines.append(f"FAILED: {body['failed']}")
    lines.append(f"written: {body['path']}")
    return "\n".join(lines)


def parse_plan(argv: Sequence[str] | None = None) -> tuple[Plan, bool]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    scale = parser.add_mutually_exclusive_group()
    for name in PLANS:
        scale.add_argument(f"--{name}", action="store_const", const=name, dest="scale")
    parser.add_argument("--rates", help="comma-separated rows/s, e.g. 100,500")
    parser.add_argument("--duration", type=float, help="seconds of writing per rate")
    parser.add_argument("--interval", type=float, help="seconds between drain runs")
    parser.add_argument("--keep-scratch", action="store_true")
    args = parser.parse_args(argv)
    plan = PLANS[args.scale or "quick"]
    if args.rates or args.duration:
        plan = dataclasses.replace(plan, name="custom")
    if args.rates:
        plan = dataclasses.replace(plan, rates=tuple(int(r) for r in args.rates.split(",")))
    if args.duration:
        plan = dataclasses.replace(plan, duration_s=args.duration)
    if args.interval:
        plan = dataclasses.replace(plan, interval_s=args.interval)
    return plan, args.keep_scratch


def main(argv: Sequence[str] | None = None) -> int:
    plan, keep = parse_plan(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    signal.signal(signal.SIGTERM, _on_sigterm)
    body = run(plan, keep)
    print(summary(body))
    return 0 if not body["failed"] and body["all_tables_right"] else 1


if __name__ == "__main__":
    sys.exit(main())
