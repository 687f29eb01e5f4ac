"""One measured task in a process of its own: a contender, the preload, the idle check.

``bench/run.py`` writes a JSON spec and starts::

    python -m bench.worker SPEC.json

The worker appends JSON lines to ``spec["out"]`` as it goes (one per batch,
then ``done``), so a task stopped at its time limit still leaves its batches.
Tasks:

* ``preload``: create the contenders' tables and append the preloaded rows.
* ``product``: this project's job, :func:`jobs.cdc_to_iceberg.drain`, unchanged
  (with ``spec["request_log"]``, the object store's request log: its size before
  and after the drain, so that the requests of the drain alone can be counted).
* ``naive``: the original design document's pattern (see :mod:`bench.contenders`).
* ``append``: the ceiling, same Kafka read and parse, append only.
* ``pyiceberg``: kafka-python consumer and ``Transaction.upsert``, no Spark.
* ``series``: the product's job several times (batch-size sweep), one session.
* ``layout``: the product's job on copy-on-write and merge-on-read tables, with a
  full-scan read after a number of batches.
* ``idle``: the check the Airflow drain operator makes before it starts Spark.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import contenders
from bench.common import BODY_BYTES

PROCESS_STARTED = time.monotonic()


class Out:
    """Appends one JSON line per event to the task's output file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, default=str)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")


def _settings(spec: dict[str, Any]) -> Any:
    from cdc_iceberg.settings import Settings

    return Settings(**spec)


def _session(settings: Any, name: str, out: Out) -> Any:
    from jobs.session import build_session

    started = time.monotonic()
    spark = build_session(settings, app_name=f"bench-{name}")
    out(
        "session",
        session_s=round(time.monotonic() - started, 2),
        since_process_start_s=round(time.monotonic() - PROCESS_STARTED, 2),
    )
    return spark


def task_preload(spec: dict[str, Any], out: Out) -> None:
    from bench.workload import preload_frame

    base = _settings(spec["settings"])
    spark = _session(base, "preload", out)
    try:
        for target in spec["targets"]:
            settings = _settings(target["settings"])
            started = time.monotonic()
            table = contenders.create_table(spark, settings, target["kind"])
            rows = int(target.get("rows", spec["rows"]))
            if rows:
                frame = preload_frame(spark, rows, int(spec.get("body_bytes", BODY_BYTES)))
                columns = [f.name for f in spark.table(table).schema.fields]
                frame.select(*columns).writeTo(table).append()
            out(
                "preloaded",
                kind=target["kind"],
                table=table,
                rows=rows,
                seconds=round(time.monotonic() - started, 2),
            )
    finally:
        spark.stop()
    out("done")


def task_spark_contender(spec: dict[str, Any], out: Out) -> None:
    settings = _settings(spec["settings"])
    kind = spec["task"]
    if kind == "naive":
        settings = settings.replace(spark_shuffle_partitions=200)  # Spark's default
    spark = _session(settings, spec["name"], out)
    try:
        if kind == "naive":
            contenders.reset_to_spark_defaults(spark)
        run = {
            "product": contenders.run_product,
            "naive": contenders.run_naive,
            "append": contenders.run_append,
        }[kind]
        log_start = _size(spec.get("request_log"))
        started = time.monotonic()
        batches = run(spark, settings, out)
        drain_s = time.monotonic() - started
        log_end = _size(spec.get("request_log"))
        for batch in batches:
            out("batch", **batch)
        tables = contenders.tables_of(settings, kind)
        written = contenders.bytes_by_batch(spark, tables, contenders.batch_key(kind))
        started = time.monotonic()
        rows = spark.table(settings.qualified(settings.iceberg_table)).count()
        count_s = time.monotonic() - started
        started = time.monotonic()
        contenders.full_scan(spark, settings.qualified(settings.iceberg_table))
        scan_s = time.monotonic() - started
        out(
            "done",
            drain_s=round(drain_s, 3),
            batches=len(batches),
            written=written,
            rows_after=rows,
            count_s=round(count_s, 2),
            full_scan_s=round(scan_s, 2),
            files=contenders.file_counts(spark, settings.qualified(settings.iceberg_table)),
            request_log=[log_start, log_end],
        )
    finally:
        spark.stop()


def _size(path: str | None) -> int | None:
    """Bytes in a log file (None without one): where the drain's requests start and end."""
    return Path(path).stat().st_size if path else None


def task_pyiceberg(spec: dict[str, Any], out: Out) -> None:
    settings = _settings(spec["settings"])
    started = time.monotonic()
    batches = contenders.run_pyiceberg(settings, int(spec["batch"]), out)
    drain_s = time.monotonic() - started
    written = contenders.pyiceberg_bytes_by_batch(settings)
    out(
        "done",
        drain_s=round(drain_s, 3),
        batches=len(batches),
        written=written,
        rows_after=contenders.pyiceberg_count(settings),
    )


def task_series(spec: dict[str, Any], out: Out) -> None:
    """The product's job once per settings of ``spec["series"]``, in one Spark session."""
    runs = [(item["label"], _settings(item["settings"])) for item in spec["series"]]
    spark = _session(runs[0][1], spec["name"], out)
    try:
        for label, settings in runs:
            started = time.monotonic()
            batches = contenders.run_product(spark, settings)
            drain_s = time.monotonic() - started
            for batch in batches:
                out("batch", label=label, **batch)
            tables = contenders.tables_of(settings, "product")
            out(
                "series_done",
                label=label,
                drain_s=round(drain_s, 3),
                batches=len(batches),
                written=contenders.bytes_by_batch(spark, tables, contenders.batch_key("product")),
            )
    finally:
        spark.stop()
    out("done")


def task_layout(spec: dict[str, Any], out: Out) -> None:
    """Product job on CoW and MoR tables; full-scan read after each phase."""
    from bench.common import PARTITIONS, SEED
    from cdc_iceberg.generator import ArticleSource, produce
    from cdc_iceberg.kafka_offsets import ensure_topic

    modes = {mode: _settings(s) for mode, s in spec["modes"].items()}
    first = next(iter(modes.values()))
    batch = int(spec["batch"])
    ensure_topic(first, partitions=PARTITIONS)
    source = ArticleSource(seed=SEED, partitions=PARTITIONS, wrapper=False, body_bytes=BODY_BYTES)
    spark = _session(first, spec["name"], out)
    done_batches = 0
    applied = dict.fromkeys(modes, 0)
    try:
        for target in spec["reads_after"]:
            records = (int(target) - done_batches) * batch
            messages: list[Any] = []
            while len(messages) < records:
                messages += source.random_history(
                    min(records, 25_000), int(spec["keys"]), **spec.get("history", {})
                )
                source._emitted.clear()  # history kept only for redelivery (off)
            produce(first, messages[:records])
            done_batches = int(target)
            for mode, settings in modes.items():
                batches = contenders.run_product(spark, settings)
                for item in batches:
                    out("batch", mode=mode, **item)
                applied[mode] += len(batches)
                table = settings.qualified(settings.iceberg_table)
                reads = []
                for _ in range(int(spec.get("read_repeats", 2))):
                    started = time.monotonic()
                    contenders.full_scan(spark, table)
                    reads.append(round(time.monotonic() - started, 3))
                out(
                    "read",
                    mode=mode,
                    after_batches=done_batches,
                    batches_applied=applied[mode],
                    seconds=reads,
                    files=contenders.file_counts(spark, table),
                )
        for mode, settings in modes.items():
            tables = contenders.tables_of(settings, "product")
            out(
                "written",
                mode=mode,
                written=contenders.bytes_by_batch(spark, tables, contenders.batch_key("product")),
            )
    finally:
        spark.stop()
    out("done")


def task_idle(spec: dict[str, Any], out: Out) -> None:
    """Time what the drain operator does before deciding to skip Spark."""
    started = time.monotonic()
    from cdc_iceberg import kafka_offsets, table_state

    import_s = time.monotonic() - started
    settings = _settings(spec["settings"])
    checks = []
    skipped = []
    for _ in range(int(spec.get("repeats", 5))):
        started = time.monotonic()
        end = kafka_offsets.end_offsets(settings)
        recorded = table_state.committed_offsets(settings)
        pending = kafka_offsets.lag(end, recorded) if recorded else end
        skip = bool(recorded) and sum(pending.values()) == 0
        checks.append(round(time.monotonic() - started, 4))
        skipped.append(skip)
    out(
        "done",
        import_s=round(import_s, 3),
        checks_s=checks,
        first_check_s=checks[0],
        process_to_first_decision_s=round(time.monotonic() - PROCESS_STARTED - sum(checks[1:]), 3),
        would_skip=all(skipped),
        pyspark_imported="pyspark" in sys.modules,
    )


TASKS: dict[str, Callable[[dict[str, Any], Out], None]] = {
    "preload": task_preload,
    "product": task_spark_contender,
    "naive": task_spark_contender,
    "append": task_spark_contender,
    "pyiceberg": task_pyiceberg,
    "series": task_series,
    "layout": task_layout,
    "idle": task_idle,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("py4j", "kafka", "pyiceberg"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = Out(spec["out"])
    try:
        TASKS[spec["task"]](spec, out)
    except Exception as error:
        with contextlib.suppress(Exception):
            out("failed", error=f"{type(error).__name__}: {str(error)[:2000]}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
