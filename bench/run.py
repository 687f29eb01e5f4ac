"""Benchmarks: the CDC job against the naive pattern, pyiceberg and an append-only ceiling.

Run (SPARK_LOCAL_IP is set to 127.0.0.1 when absent)::

    cd /work/main && nice -n 19 .venv/bin/python bench/run.py --quick     # scaled down
    cd /work/main && nice -n 19 .venv/bin/python bench/run.py --medium    # product vs naive
    cd /work/main && nice -n 19 .venv/bin/python bench/run.py --full      # the full sizes
    cd /work/main && nice -n 19 .venv/bin/python bench/run.py --quick --only w1,idle

Benchmarks (each starts its own Kafka broker on a free loopback port and stops
it; scratch data lives in ``bench/results/tmp`` and is removed afterwards):

* ``w1``: change events over a keyspace into a preloaded table, every contender.
* ``w2``: the same events against a table ten times bigger.
* ``w3``: the same events against a table fifty times bigger, of narrow rows.
* ``fixed``: the fixed cost of a batch: batches of 1k records into the W2-sized
  table, with the Spark jobs each batch runs.
* ``sweep``: the product's job at three micro-batch sizes.
* ``layout``: copy-on-write vs merge-on-read, full-scan read after N batches.

Figures derived from them: ``merge_scaling`` (cost per batch as the table grows,
W1 -> W2 -> W3, product and naive),
``idle_run`` (a scheduled run with nothing new, measured after W1),
``session_start`` (every Spark start of the run) and ``targets``. Each figure
is ``bench/results/<figure>-<scale>.json`` (with the machine it ran on) and a
PNG chart beside it. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import charts
from bench.common import (
    ALL_CONTENDERS,
    BODY_BYTES,
    PARTITIONS,
    RESULTS_DIR,
    SCALES,
    SCRATCH_DIR,
    TOPIC,
    Scale,
    TaskRun,
    kafka_broker,
    machine_info,
    percentile,
    run_task,
    write_result,
)
from bench.workload import Workload, produce_workload
from cdc_iceberg.settings import Settings

BENCHMARKS = ("w1", "w2", "w3", "fixed", "sweep", "layout")
LAYOUT_HISTORY: dict[str, float] = {}  # the W1 mix: deletes and key changes included
GIB = 1024.0


# -- settings ---------------------------------------------------------------------


def _base_settings(work: Path, bootstrap: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        kafka_topic=TOPIC,
        iceberg_catalog_uri=f"sqlite:///{work}/catalog.db",
        iceberg_warehouse=f"file://{work}/warehouse",
        checkpoint_location=str(work / "checkpoints" / "default"),
    )


def _settings_for(base: Settings, work: Path, name: str, batch: int | None) -> Settings:
    return base.replace(
        kafka_consumer_group=f"bench_{name}",
        iceberg_table=f"bench.{name}",
        checkpoint_location=str(work / "checkpoints" / name),
        max_offsets_per_trigger=batch,
    )


def _spec(settings: Settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def _scratch(figure: str, scale: Scale) -> Path:
    work = SCRATCH_DIR / f"{figure}-{scale.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def _require(run: TaskRun, what: str) -> None:
    if not run.ok:
        failed = run.last("failed") or {}
        raise RuntimeError(
            f"{what} did not finish (exit {run.exit_code}, timed out {run.timed_out}): "
            f"{failed.get('error', '')}\n{run.log[-2000:]}"
        )


# -- summaries ------------------------------------------------------------------------


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    return {
        "mean": round(sum(values) / len(values), 3),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values),
    }


def _latency(batch: dict[str, Any]) -> float:
    """Wall time of one micro-batch: Spark's triggerExecution, else the batch function's."""
    return float(batch.get("trigger_s") or batch.get("duration_s") or 0.0)


def _merge_s(steps: dict[str, float]) -> float:
    """Time spent writing the tables: the MERGEs and the tombstone append."""
    return round(sum(v for k, v in steps.items() if k.startswith(("merge", "append"))), 3)


def _status(run: TaskRun) -> str:
    if run.ok:
        return "ok"
    if run.timed_out:
        return "timeout"
    failed = run.last("failed") or {}
    return f"failed: {failed.get('error', 'exit ' + str(run.exit_code))[:2000]}"


def _partial_batches(run: TaskRun) -> list[dict[str, Any]]:
    """Batches of a run stopped before its end: Spark's progress lines plus the job's steps."""
    steps = {line["batch_id"]: line["steps"] for line in run.all("steps")}
    out = []
    for line in run.all("progress"):
        batch = dict(line)
        if batch["batch_id"] in steps:
            batch["steps"] = steps[batch["batch_id"]]
        out.append(batch)
    return out


def contender_summary(run: TaskRun, workload: Workload) -> dict[str, Any]:
    done = run.last("done") or {}
    batches = run.all("batch") or _partial_batches(run)
    batches = [b for b in batches if not b.get("skipped")]
    session = run.last("session") or {}
    latencies = [_latency(b) for b in batches]
    records = [int(b.get("records") or b.get("events_in") or 0) for b in batches]
    drain_s = done.get("drain_s")
    written = done.get("written") or []
    per_batch_bytes = [int(w["added_bytes"]) for w in written]
    changes_per_record = workload.changes / max(1, workload.records)
    steady = slice(1, None) if len(batches) > 2 else slice(0, None)
    steady_s = sum(latencies[steady])
    sustained = sum(records[steady]) / steady_s if steady_s else None
    summary: dict[str, Any] = {
        "status": _status(run),
        "session_start_s": session.get("session_s"),
        "drain_s": drain_s,
        "events_per_s": round(workload.changes / drain_s, 1) if drain_s else None,
        "records_per_s": round(workload.records / drain_s, 1) if drain_s else None,
        "sustained_records_per_s": round(sustained, 1) if sustained else None,
        "sustained_events_per_s": round(sustained * changes_per_record, 1) if sustained else None,
        "batches": len(batches),
        "records_processed": sum(records),
        "batch_latency_s": {**_stats(latencies), "per_batch": latencies},
        "peak_mem_mib": run.peak_mem_mib,
        "peak_mem_by_process_mib": run.peak_mem_by_process_mib,
        "mean_mem_mib": run.mean_mem_mib,
        "bytes_written_per_batch": {
            **_stats([float(b) for b in per_batch_bytes]),
            "total": sum(per_batch_bytes),
            "per_batch": per_batch_bytes,
        },
        "rows_after": done.get("rows_after"),
        "full_scan_s": done.get("full_scan_s"),
        "files_after": done.get("files"),
        "process_wall_s": run.wall_s,
        "per_batch": batches,
    }
    if run.timed_out:
        # stopped at the limit: the drain took at least this long (after its session start)
        started = session.get("since_process_start_s") or 0
        summary["drain_at_least_s"] = round(run.wall_s - started, 1)
    jobs = [int(b["spark_jobs"]) for b in batches if "spark_jobs" in b]
    if jobs:
        # the Spark jobs each micro-batch ran, and their summed wall time (status store)
        summary["spark_jobs_per_batch"] = {**_stats([float(j) for j in jobs]), "per_batch": jobs}
        summary["spark_job_s_per_batch"] = _stats(
            [float(b["spark_job_s"]) for b in batches if "spark_job_s" in b]
        )
    steady_latencies = latencies[steady]
    summary["batch_latency_after_first_s"] = _stats(steady_latencies)
    steps = [b.get("steps") for b in batches if b.get("steps")]
    if steps:
        names = sorted({k for s in steps for k in s})
        summary["steps_median_s"] = {
            n: percentile([s.get(n, 0.0) for s in steps], 50) for n in names
        }
        summary["merge_s_per_batch"] = [_merge_s(s) for s in steps]
    return summary


# -- W1 / W2 ---------------------------------------------------------------------------


def bench_workload(
    figure: str,
    scale: Scale,
    preload_rows: int,
    names: tuple[str, ...],
    machine: dict[str, Any],
    measure_idle: bool,
    keep: bool,
    body_bytes: int | None = None,
) -> dict[str, Any]:
    work = _scratch(figure, scale)
    try:
        with kafka_broker(work / "kafka") as broker:
            base = _base_settings(work, broker.bootstrap_servers)
            _log(f"{figure}: broker on {broker.bootstrap_servers}; producing {scale.events} events")
            workload = produce_workload(base, events=scale.events, keys=scale.keys)
            per = {n: _settings_for(base, work, n, scale.batch) for n in names}
            targets = [
                {"kind": n, "settings": _spec(per[n]), **({"rows": 0} if n == "append" else {})}
                for n in names
            ]
            _log(f"{figure}: preloading {preload_rows} rows into {len(targets)} tables")
            preload = run_task(
                {
                    "name": f"{figure}-preload",
                    "task": "preload",
                    "settings": _spec(base),
                    "rows": preload_rows,
                    "targets": targets,
                    **({"body_bytes": body_bytes} if body_bytes else {}),
                },
                work,
                scale.task_timeout_s,
            )
            _require(preload, f"{figure} preload")
            results: dict[str, Any] = {}
            idle: dict[str, Any] | None = None
            sessions = [preload]
            for name in names:
                _log(f"{figure}: {name}")
                run = run_task(
                    {
                        "name": f"{figure}-{name}",
                        "task": name,
                        "settings": _spec(per[name]),
                        "batch": scale.batch,
                    },
                    work,
                    scale.task_timeout_s,
                )
                sessions.append(run)
                results[name] = contender_summary(run, workload)
                _log(
                    f"{figure}: {name} {results[name]['status']} drain {results[name]['drain_s']} s"
                    f" peak {results[name]['peak_mem_mib']} MiB"
                )
                if name == "product" and measure_idle:
                    idle = _idle(per["product"], work, scale)
            product_rows_expected = preload_rows + workload.live_keys
            return {
                "scale": dataclasses.asdict(scale),
                "preload_rows": preload_rows,
                "preload_body_bytes": body_bytes or BODY_BYTES,
                "batch_records": scale.batch,
                "broker_start_s": getattr(broker, "start_s", None),
                "workload": workload.as_dict(),
                "preload": [x for x in preload.lines if x.get("event") == "preloaded"],
                "contenders": results,
                "product_rows_expected": product_rows_expected,
                "product_rows_correct": (
                    results.get("product", {}).get("rows_after") == product_rows_expected
                ),
                "idle": idle,
                "sessions": _sessions(sessions),
            }
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def bench_fixed(scale: Scale, machine: dict[str, Any], keep: bool) -> dict[str, Any]:
    """Batches of ``fixed_batch`` records into a table of ``fixed_preload`` rows.

    What a batch costs whatever its size: the Spark jobs it runs, the metadata
    it reads and commits. About one record in eleven is a Kafka tombstone, so
    ``fixed_batches`` batches take that many batches' worth of events.
    """
    events = scale.fixed_batch * scale.fixed_batches * 10 // 11
    sized = dataclasses.replace(
        scale, events=events, keys=max(50, events // 3), batch=scale.fixed_batch
    )
    result = bench_workload(
        "fixed_cost",
        sized,
        scale.fixed_preload,
        ("product", "naive"),
        machine,
        False,
        keep,
    )
    result["fixed"] = {
        name: {
            "batches": summary.get("batches"),
            "batch_s_after_first": summary.get("batch_latency_after_first_s"),
            "spark_jobs_per_batch": summary.get("spark_jobs_per_batch"),
            "spark_job_s_per_batch": summary.get("spark_job_s_per_batch"),
            "steps_median_s": summary.get("steps_median_s"),
        }
        for name, summary in result["contenders"].items()
    }
    return result


def _idle(settings: Settings, work: Path, scale: Scale) -> dict[str, Any]:
    run = run_task(
        {
            "name": "idle",
            "task": "idle",
            "settings": _spec(settings),
            "repeats": scale.idle_repeats,
        },
        work,
        300,
    )
    done = run.last("done") or {}
    return {
        "status": _status(run),
        "process_wall_s": run.wall_s,
        "peak_mem_mib": run.peak_mem_mib,
        **done,
    }


def _sessions(runs: list[TaskRun]) -> list[dict[str, Any]]:
    out = []
    for run in runs:
        for line in run.all("session"):
            out.append(
                {
                    "task": run.task,
                    "session_s": line["session_s"],
                    "since_process_start_s": line["since_process_start_s"],
                }
            )
    return out


# -- batch-size sweep ----------------------------------------------------------------------


def bench_sweep(scale: Scale, machine: dict[str, Any], keep: bool) -> dict[str, Any]:
    work = _scratch("batch_sweep", scale)
    try:
        with kafka_broker(work / "kafka") as broker:
            base = _base_settings(work, broker.bootstrap_servers)
            _log(f"sweep: producing {scale.sweep_events} events")
            workload = produce_workload(base, events=scale.sweep_events, keys=scale.sweep_keys)
            per = {
                size: _settings_for(base, work, f"sweep_{size}", size)
                for size in scale.sweep_batches
            }
            preload = run_task(
                {
                    "name": "sweep-preload",
                    "task": "preload",
                    "settings": _spec(base),
                    "rows": scale.sweep_preload,
                    "targets": [{"kind": "product", "settings": _spec(s)} for s in per.values()],
                },
                work,
                scale.task_timeout_s,
            )
            _require(preload, "sweep preload")
            _log(f"sweep: batch sizes {scale.sweep_batches}")
            run = run_task(
                {
                    "name": "sweep",
                    "task": "series",
                    "series": [
                        {"label": str(size), "settings": _spec(s)} for size, s in per.items()
                    ],
                },
                work,
                scale.task_timeout_s * max(1, len(per)),
            )
            sizes = []
            for size in scale.sweep_batches:
                label = str(size)
                batches = [b for b in run.all("batch") if b.get("label") == label]
                done = next((d for d in run.all("series_done") if d.get("label") == label), {})
                latencies = [_latency(b) for b in batches]
                drain_s = done.get("drain_s")
                steps = [b.get("steps", {}) for b in batches if b.get("steps")]
                names = sorted({k for s in steps for k in s})
                written = [int(w["added_bytes"]) for w in done.get("written", [])]
                sizes.append(
                    {
                        "batch_records": size,
                        "status": "ok" if done else _status(run),
                        "batches": len(batches),
                        "drain_s": drain_s,
                        "events_per_s": round(workload.changes / drain_s, 1) if drain_s else None,
                        "batch_latency_s": {**_stats(latencies), "per_batch": latencies},
                        "steps_mean_s": {
                            n: round(sum(s.get(n, 0.0) for s in steps) / len(steps), 3)
                            for n in names
                        }
                        if steps
                        else {},
                        "bytes_written_per_batch": {
                            **_stats([float(w) for w in written]),
                            "total": sum(written),
                        },
                    }
                )
            return {
                "scale": dataclasses.asdict(scale),
                "workload": workload.as_dict(),
                "preload_rows": scale.sweep_preload,
                "run_order": [str(s) for s in scale.sweep_batches],
                "note": "all sizes in one Spark session, in run_order; each has its own table",
                "sizes": sizes,
                "peak_mem_mib": run.peak_mem_mib,
                "sessions": _sessions([preload, run]),
            }
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


# -- copy-on-write vs merge-on-read --------------------------------------------------------


def bench_layout(scale: Scale, machine: dict[str, Any], keep: bool) -> dict[str, Any]:
    work = _scratch("layout", scale)
    try:
        with kafka_broker(work / "kafka") as broker:
            base = _base_settings(work, broker.bootstrap_servers)
            # a few records of slack: Spark rounds each partition's share of the limit
            # down, which would leave a straggler batch of a handful of records per phase
            limit = scale.layout_batch + PARTITIONS
            modes = {
                "merge-on-read": _settings_for(base, work, "layout_mor", limit).replace(
                    iceberg_write_mode="merge-on-read"
                ),
                "copy-on-write": _settings_for(base, work, "layout_cow", limit).replace(
                    iceberg_write_mode="copy-on-write"
                ),
            }
            _log(f"layout: preloading {scale.layout_preload} rows into 2 tables")
            preload = run_task(
                {
                    "name": "layout-preload",
                    "task": "preload",
                    "settings": _spec(base),
                    "rows": scale.layout_preload,
                    "targets": [{"kind": "product", "settings": _spec(s)} for s in modes.values()],
                },
                work,
                scale.task_timeout_s,
            )
            _require(preload, "layout preload")
            _log(f"layout: batches of {scale.layout_batch}, reads after {scale.layout_reads_after}")
            run = run_task(
                {
                    "name": "layout",
                    "task": "layout",
                    "batch": scale.layout_batch,
                    "keys": max(1_000, scale.layout_events // 5),
                    "reads_after": list(scale.layout_reads_after),
                    "history": LAYOUT_HISTORY,
                    "modes": {m: _spec(s) for m, s in modes.items()},
                },
                work,
                scale.task_timeout_s * 2,
            )
            out: dict[str, Any] = {}
            for mode in modes:
                batches = [b for b in run.all("batch") if b.get("mode") == mode]
                reads = [r for r in run.all("read") if r.get("mode") == mode]
                written = next((w["written"] for w in run.all("written") if w["mode"] == mode), [])
                out[mode] = {
                    "batch_latency_s": {
                        **_stats([_latency(b) for b in batches]),
                        "per_batch": [_latency(b) for b in batches],
                    },
                    "merge_s_per_batch": [_merge_s(b.get("steps", {})) for b in batches],
                    "bytes_written_per_batch": {
                        **_stats([float(w["added_bytes"]) for w in written]),
                        "per_batch": [int(w["added_bytes"]) for w in written],
                    },
                    "reads": [
                        {
                            "after_batches": r["after_batches"],
                            "batches_applied": r.get("batches_applied"),
                            "seconds": min(r["seconds"]),
                            "all_seconds": r["seconds"],
                            "files": r["files"],
                        }
                        for r in reads
                    ],
                }
            return {
                "scale": dataclasses.asdict(scale),
                "status": _status(run),
                "preload_rows": scale.layout_preload,
                "batch_records": scale.layout_batch,
                "reads_after": list(scale.layout_reads_after),
                "workload": {
                    "history": LAYOUT_HISTORY,
                    "keys": max(1_000, scale.layout_events // 5),
                },
                "modes": out,
                "peak_mem_mib": run.peak_mem_mib,
                "sessions": _sessions([preload, run]),
            }
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


# -- derived figures ---------------------------------------------------------------------


def merge_scaling(
    w1: dict[str, Any], w2: dict[str, Any], w3: dict[str, Any] | None = None
) -> dict[str, Any]:
    def side(result: dict[str, Any]) -> dict[str, Any]:
        product = result["contenders"].get("product", {})
        merges = product.get("merge_s_per_batch") or []
        latencies = product.get("batch_latency_s", {}).get("per_batch") or []
        return {
            "preload_rows": result["preload_rows"],
            "batch_records": result["batch_records"],
            "merge_s_per_batch": merges,
            "merge_s_median": percentile(merges, 50),
            "batch_s_median": percentile(latencies, 50),
            "steps_median_s": product.get("steps_median_s", {}),
        }

    small, big = side(w1), side(w2)
    ratio = None
    if small["merge_s_median"] and big["merge_s_median"]:
        ratio = round(big["merge_s_median"] / small["merge_s_median"], 2)
    batch_ratio = None
    if small["batch_s_median"] and big["batch_s_median"]:
        batch_ratio = round(big["batch_s_median"] / small["batch_s_median"], 2)
    return {
        "w1": small,
        "w2": big,
        "merge_ratio_w2_over_w1": ratio,
        "batch_ratio_w2_over_w1": batch_ratio,
        "growth": growth_curve({"w1": w1, "w2": w2, **({"w3": w3} if w3 else {})}),
    }


def growth_curve(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per table size, each contender's drain and median batch: how cost grows with the table."""
    curve = []
    for name, result in sorted(results.items(), key=lambda item: item[1]["preload_rows"]):
        point: dict[str, Any] = {"workload": name, "preload_rows": result["preload_rows"]}
        for contender in ("product", "naive"):
            summary = result["contenders"].get(contender)
            if not summary:
                continue
            point[contender] = {
                "drain_s": summary.get("drain_s"),
                "batch_s_median": summary.get("batch_latency_s", {}).get("p50"),
                "merge_s_median": percentile(summary.get("merge_s_per_batch") or [], 50),
            }
        curve.append(point)
    base = curve[0] if curve else {}
    for point in curve:
        for contender in ("product", "naive"):
            first = (base.get(contender) or {}).get("drain_s")
            here = point.get(contender) or {}
            if first and here.get("drain_s"):
                here["drain_vs_smallest"] = round(here["drain_s"] / first, 2)
    return curve


def targets(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(
        name: str, measured: float | None, goal: float, higher_is_better: bool, detail: str
    ) -> None:
        met = None
        if measured is not None:
            met = measured >= goal if higher_is_better else measured <= goal
        rows.append(
            {
                "target": name,
                "measured": measured,
                "goal": goal,
                "higher_is_better": higher_is_better,
                "met": met,
                "detail": detail,
            }
        )

    def speedup(figure: str) -> tuple[float | None, str]:
        contenders = results.get(figure, {}).get("contenders", {})
        product = contenders.get("product", {}).get("drain_s")
        naive = contenders.get("naive", {}).get("drain_s")
        at_least = contenders.get("product", {}).get("drain_at_least_s")
        if naive and not product and at_least:
            return round(naive / at_least, 2), (
                f"upper bound: product stopped at the time limit after {at_least} s of drain, "
                f"naive {naive} s"
            )
        if not (product and naive):
            return None, "not measured"
        return round(naive / product, 2), f"naive {naive} s / product {product} s"

    for figure, goal in (("w1", 1.5), ("w2", 2.0), ("w3", 3.0)):
        if figure in results:
            value, detail = speedup(figure)
            rows_before = results[figure].get("preload_rows")
            add(
                f"{figure.upper()} ({rows_before:,} rows): product >= {goal}x naive's events/s",
                value,
                goal,
                True,
                detail,
            )
    if "merge_scaling" in results:
        scaling = results["merge_scaling"]
        add(
            "MERGE per batch, big table / small table <= 1.5",
            scaling["merge_ratio_w2_over_w1"],
            1.5,
            False,
            f"median MERGE s per batch of {scaling['w1']['batch_records']} records: "
            f"{scaling['w2']['merge_s_median']} at {scaling['w2']['preload_rows']} rows vs "
            f"{scaling['w1']['merge_s_median']} at {scaling['w1']['preload_rows']} rows",
        )
    if "w1" in results:
        contenders = results["w1"]["contenders"]
        product = contenders.get("product", {}).get("sustained_events_per_s")
        ceiling = contenders.get("append", {}).get("sustained_events_per_s")
        value = round(product / ceiling, 2) if product and ceiling else None
        add(
            "sustained events/s >= 0.8 x append-only ceiling",
            value,
            0.8,
            True,
            f"product {product} /s vs append-only {ceiling} /s (batches after the first)",
        )
        idle = results["w1"].get("idle") or {}
        first = idle.get("process_to_first_decision_s")
        spark_free = idle.get("pyspark_imported") is False and idle.get("would_skip") is True
        add(
            "scheduled run with nothing new < 5 s, no Spark",
            first if spark_free else None,
            5.0,
            False,
            f"fresh process to skip decision {first} s; check alone "
            f"{idle.get('first_check_s')} s; pyspark imported: {idle.get('pyspark_imported')}; "
            f"would skip: {idle.get('would_skip')}",
        )
        peak = contenders.get("product", {}).get("peak_mem_mib")
        add(
            "W1 driver (JVM + Python) peak memory <= 2 GiB",
            round(peak / GIB, 2) if peak else None,
            2.0,
            False,
            f"{peak} MiB (PSS sum over the process tree, sampled every 0.5 s)",
        )
    if "fixed" in results:
        fixed = results["fixed"]
        product = fixed["contenders"].get("product", {})
        median = (product.get("batch_latency_after_first_s") or {}).get("p50")
        jobs = (product.get("spark_jobs_per_batch") or {}).get("p50")
        naive = fixed["contenders"].get("naive", {}).get("batch_latency_after_first_s") or {}
        add(
            f"batch of {fixed['batch_records']:,} records into {fixed['preload_rows']:,} rows "
            "< 2 s",
            median,
            2.0,
            False,
            f"median triggerExecution of the batches after the first; {jobs} Spark jobs a "
            f"batch (median); naive {naive.get('p50')} s",
        )
    return rows


# -- main ----------------------------------------------------------------------------------


# Figures are compared only when measured on the same kind of machine: the same
# benchmark on another CPU can take half or twice as long.
MACHINE_KEYS = ("cpu_model", "nproc", "memory_gib")


def same_machine(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Two runs' ``machine`` facts name the same CPU, core count and memory."""
    if not a or not b:
        return False
    return all(a.get(k) is not None and a.get(k) == b.get(k) for k in MACHINE_KEYS)


def _machine_name(machine: dict[str, Any] | None) -> str:
    machine = machine or {}
    return ", ".join(f"{k} {machine.get(k)}" for k in MACHINE_KEYS)


WORKLOAD_FIGURES = {
    "w1": "w1_throughput",
    "w2": "w2_throughput",
    "w3": "w3_throughput",
    "fixed": "fixed_cost",
}


def _read_stored(scale: Scale, key: str) -> dict[str, Any] | None:
    """The stored W1 or W2 result at this scale, whatever machine it ran on."""
    path = RESULTS_DIR / f"{WORKLOAD_FIGURES[key]}-{scale.name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _stored(scale: Scale, wanted: set[str], machine: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """W1/W2 results of an earlier run at this scale on this machine, for figures that need both.

    A stored result measured on another machine is left out (and said so): a
    ratio of figures from two machines measures the machines.
    """
    out = {}
    for key in sorted(wanted):
        stored = _read_stored(scale, key)
        if stored is None:
            continue
        if same_machine(stored.get("machine"), machine):
            out[key] = stored
        else:
            _log(
                f"stored {key} result is from another machine "
                f"({_machine_name(stored.get('machine'))}): not used"
            )
    return out


def carry_over(
    stored: dict[str, Any] | None, fresh: dict[str, Any], machine: dict[str, Any]
) -> list[str]:
    """Keep the stored contenders of an earlier run that this run (``--contenders``) left out.

    Each carried contender is marked with the run it comes from (``from_run``)
    and the machine it ran on, so a figure never passes one run's numbers off as
    another's. Only contenders measured on this machine are carried; the names of
    those left behind are returned.
    """
    if not stored:
        return []
    ran = fresh.setdefault("contenders", {})
    left: list[str] = []
    for name, figures in stored.get("contenders", {}).items():
        if name in ran:
            continue
        measured_on = figures.get("machine") or stored.get("machine")
        if not same_machine(measured_on, machine):
            left.append(name)
            continue
        ran[name] = {
            **figures,
            "from_run": figures.get("from_run", stored.get("written_at")),
            "machine": measured_on,
        }
    return left


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group(required=True)
    for name in SCALES:
        size.add_argument(f"--{name}", dest="scale", action="store_const", const=name)
    parser.add_argument("--only", default="", help=f"comma list of {','.join(BENCHMARKS)}")
    parser.add_argument(
        "--contenders",
        default="",
        help=f"comma list of {','.join(ALL_CONTENDERS)} (default: the scale's own)",
    )
    parser.add_argument("--keep-scratch", action="store_true", help="keep bench/results/tmp")
    parser.add_argument(
        "--derived-only",
        action="store_true",
        help="run nothing: recompute merge_scaling and targets from stored W1/W2 results",
    )
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # a stop (SIGTERM, or SIGINT even when started in the background) unwinds through the
    # finally blocks: the running worker's process group and the broker are stopped
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupted)
    chosen = [b for b in (args.only.split(",") if args.only else BENCHMARKS) if b]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}")
    if args.derived_only:
        chosen = []
    if args.contenders:
        picked = [c for c in args.contenders.split(",") if c]
        if set(picked) - set(ALL_CONTENDERS):
            parser.error(f"unknown contender(s) {sorted(set(picked) - set(ALL_CONTENDERS))}")
        scale = dataclasses.replace(
            scale,
            w1_contenders=tuple(c for c in scale.w1_contenders if c in picked),
            w2_contenders=tuple(c for c in scale.w2_contenders if c in picked),
            w3_contenders=tuple(c for c in scale.w3_contenders if c in picked),
        )
    if not scale.sweep_batches:
        chosen = [b for b in chosen if b != "sweep"]
    if not scale.layout_reads_after:
        chosen = [b for b in chosen if b != "layout"]
    if not (scale.preload_w3 and scale.w3_contenders):
        chosen = [b for b in chosen if b != "w3"]
    if not scale.fixed_batches:
        chosen = [b for b in chosen if b != "fixed"]

    started = time.monotonic()
    machine = machine_info()
    _log(
        f"{scale.name}: {', '.join(chosen)} on {machine['nproc']} cores, "
        f"load {machine['load_average_at_start']}"
    )
    results: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for bench in chosen:
        bench_started = time.monotonic()
        try:
            if bench in ("w1", "w2", "w3"):
                results[bench] = bench_workload(
                    bench,
                    scale,
                    getattr(scale, f"preload_{bench}"),
                    getattr(scale, f"{bench}_contenders"),
                    machine,
                    bench == "w1",  # the idle run, after W1's product drain
                    args.keep_scratch,
                    body_bytes=scale.w3_body_bytes if bench == "w3" else None,
                )
            elif bench == "fixed":
                results["fixed"] = bench_fixed(scale, machine, args.keep_scratch)
            elif bench == "sweep":
                results["sweep"] = bench_sweep(scale, machine, args.keep_scratch)
            elif bench == "layout":
                results["layout"] = bench_layout(scale, machine, args.keep_scratch)
        except Exception as error:  # one broken benchmark must not lose the others
            failures.append(f"{bench}: {type(error).__name__}: {error}")
            _log(f"{bench} failed: {error}")
            continue
        if bench in ("w1", "w2", "w3") and args.contenders:
            left = carry_over(_read_stored(scale, bench), results[bench], machine)
            if left:
                _log(f"{bench}: stored figures of {left} are from another machine: not kept")
        results[bench]["wall_s"] = round(time.monotonic() - bench_started, 1)
        _log(f"{bench} done in {results[bench]['wall_s']} s")

    stored = _stored(scale, {"w1", "w2", "w3"} - set(results), machine)
    if stored:
        _log(f"derived figures also use stored results: {sorted(stored)}")
    both = {**stored, **results}
    if "w1" in both and "w2" in both:
        results["merge_scaling"] = merge_scaling(both["w1"], both["w2"], both.get("w3"))
    if "w1" in results and results["w1"].get("idle"):
        results["idle_run"] = {"idle": results["w1"]["idle"]}
    sessions = [s for r in results.values() for s in r.get("sessions", [])]
    if sessions:
        values = [s["session_s"] for s in sessions]
        results["session_start"] = {"samples": sessions, "session_s": _stats(values)}
    results["targets"] = {
        "targets": targets({**stored, **results}),
        "failures": failures,
        "sources": {
            k: both[k].get("written_at", "this run") for k in ("w1", "w2", "w3") if k in both
        },
        "total_wall_s": round(time.monotonic() - started, 1),
    }

    files = {
        **WORKLOAD_FIGURES,
        "sweep": "batch_sweep",
        "layout": "layout_cow_vs_mor",
        "merge_scaling": "merge_scaling",
        "idle_run": "idle_run",
        "session_start": "session_start",
        "targets": "targets",
    }
    for key, data in results.items():
        if key == "targets" and not (data["targets"] or data["failures"]):
            continue  # nothing measured that a target needs (e.g. --only layout)
        name = f"{files[key]}-{scale.name}"
        data = {"scale_name": scale.name, **data}
        path = write_result(name, data, machine)
        try:
            charts.draw(key, json.loads(path.read_text()), RESULTS_DIR / f"{name}.png")
        except Exception as error:  # a chart must not lose the numbers
            _log(f"chart {name} failed: {error}")
        _log(f"wrote {path.relative_to(RESULTS_DIR.parent.parent)}")
    _print_targets(results["targets"])
    _log(f"total {results['targets']['total_wall_s']} s")
    return 1 if failures else 0


def _print_targets(summary: dict[str, Any]) -> None:
    for row in summary["targets"]:
        mark = {True: "met", False: "MISSED", None: "n/a"}[row["met"]]
        print(
            f"  {mark:6} {row['target']}: {row['measured']} (goal {row['goal']}) - {row['detail']}"
        )
    for failure in summary["failures"]:
        print(f"  FAILED {failure}")


if __name__ == "__main__":
    sys.exit(main())
