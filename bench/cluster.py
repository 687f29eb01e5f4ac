"""The product's drain on four topologies: local, a Spark standalone cluster, and S3.

Run (SPARK_LOCAL_IP is set to 127.0.0.1 when absent)::

    cd /work/main && nice -n 19 .venv/bin/python bench/cluster.py --quick   # make bench-cluster
    cd /work/main && nice -n 19 .venv/bin/python bench/cluster.py --smoke   # checks every path
    cd /work/main && nice -n 19 .venv/bin/python bench/cluster.py --full --only local,cluster2

The same W1-shaped events (``bench.workload``) are drained from one topic into
a preloaded table of each topology, each drain in a fresh worker process (a
fresh Spark driver) and, on a cluster, a freshly started cluster:

* ``local``: ``local[2]``, ``file://`` warehouse and checkpoint (as ``bench/run.py``);
* ``cluster1``, ``cluster2``: a Spark standalone master with 1 or 2 workers
  (1 core, 1 GiB each; ``cdc_iceberg.local.spark_cluster``), the driver in the
  bench's worker process, the same ``file://`` warehouse;
* ``s3``: 2 workers, the warehouse at ``s3://`` and the checkpoint at ``s3a://``
  on the local S3 server (moto, ``cdc_iceberg.local.object_store``).

Figures: events/s of the drain, batches, seconds per batch (Spark's
``triggerExecution``: median, p95) and, for ``s3``, the S3 requests per
committed batch by method and by prefix (checkpoint or warehouse), counted from
the server's request log between the drain's start and end. Every server
(broker, cluster, S3) is on loopback and stopped at the end; the figure is
``bench/results/cluster-<scale>.json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    SCALES,
    SCRATCH_DIR,
    TOPIC,
    Scale,
    free_port_pair,
    kafka_broker,
    machine_info,
    run_task,
    write_result,
)
from bench.run import _interrupted, _log, _require, _spec, contender_summary
from bench.workload import produce_workload
from cdc_iceberg.local.object_store import ObjectStore
from cdc_iceberg.local.spark_cluster import SparkCluster
from cdc_iceberg.settings import Settings

# W1's shape at three sizes: events over keys into a preloaded table. A cluster's first
# batch waits for its executors (40 s or more on 2 cores): the smoke run drains in 2 batches.
SIZES: dict[str, Scale] = {
    "smoke": dataclasses.replace(SCALES["smoke"], batch=1_700),
    "quick": dataclasses.replace(
        SCALES["medium"],
        name="quick",
        events=100_000,
        keys=25_000,
        preload_w1=100_000,
        batch=25_000,
        task_timeout_s=1800,
    ),
    "full": SCALES["full"],
}
BUCKET = "bench"
METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE", "LIST")
PREFIXES = {"checkpoint": "checkpoints/", "warehouse": "warehouse/"}


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str
    label: str
    workers: int  # 0: local[2], executors in the driver's JVM
    s3: bool = False


TOPOLOGIES = (
    Topology("local", "local[2], file://", 0),
    Topology("cluster1", "standalone 1 worker, file://", 1),
    Topology("cluster2", "standalone 2 workers, file://", 2),
    Topology("s3", "standalone 2 workers, s3:// + s3a://", 2, s3=True),
)


# -- servers ----------------------------------------------------------------------------


@contextlib.contextmanager
def object_store(work: Path) -> Iterator[ObjectStore]:
    """moto's S3 server on a free loopback port with the bench's bucket, always stopped."""
    store = ObjectStore(data_dir=work / "object-store", port=free_port_pair())
    try:
        store.start()
        store.create_bucket(BUCKET)
        yield store
    finally:
        store.stop()


@contextlib.contextmanager
def spark_cluster(work: Path, topology: Topology) -> Iterator[SparkCluster | None]:
    """A master and the topology's workers (none for ``local[2]``), always stopped."""
    if not topology.workers:
        yield None
        return
    cluster = SparkCluster(data_dir=work / f"spark-{topology.name}", workers=topology.workers)
    try:
        started = time.monotonic()
        cluster.start()
        _log(f"{topology.name}: {cluster.master_url} up in {time.monotonic() - started:.1f} s")
        yield cluster
    finally:
        cluster.stop()


# -- object-store requests ----------------------------------------------------------------

# werkzeug's request line in moto's log: 127.0.0.1 - - [date] "PUT /bucket/key HTTP/1.1" 200 -
# (with ANSI colours for some answers: 206 of a ranged GET, 404 of a HEAD probe...)
_REQUEST = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})')
_COLOUR = re.compile(r"\x1b\[[\d;]*m")


def count_requests(log: Path, start: int, end: int) -> dict[str, dict[str, int]]:
    """Requests logged between two byte offsets, per prefix and per method.

    Path-style addressing: ``/<bucket>/<key>``. A GET of the bucket itself is a
    listing (``LIST``), placed by its ``prefix`` parameter; a request on neither
    prefix (the bucket's HEAD) counts as ``other``.
    """
    with open(log, "rb") as handle:
        handle.seek(start)
        text = _COLOUR.sub("", handle.read(end - start).decode(errors="replace"))
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for method, target, _status in _REQUEST.findall(text):
        url = urlsplit(target)
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        query = parse_qs(url.query, keep_blank_values=True)
        if method == "GET" and not key and not {"location", "versioning", "acl"} & query.keys():
            method, key = "LIST", query.get("prefix", [""])[0]
        where = next((n for n, p in PREFIXES.items() if bucket == BUCKET and key.startswith(p)), "")
        counts[where or "other"][method] += 1
    return {where: dict(sorted(c.items())) for where, c in sorted(counts.items())}


def requests_per_commit(counts: dict[str, dict[str, int]], commits: int) -> dict[str, Any]:
    """Per prefix (and ``all``), requests per method and in total: counted and per commit."""
    every = sum((collections.Counter(c) for c in counts.values()), collections.Counter[str]())
    table = {
        where: {m: per.get(m, 0) for m in METHODS} | {"total": sum(per.values())}
        for where, per in {**counts, "all": every}.items()
    }
    per_commit = {
        w: {k: round(v / max(1, commits), 1) for k, v in r.items()} for w, r in table.items()
    }
    return {"commits": commits, "requests": table, "per_commit": per_commit if commits else None}


# -- the benchmark -----------------------------------------------------------------------


def _settings(base: Settings, work: Path, topology: Topology, batch: int) -> Settings:
    checkpoint = (
        f"s3a://{BUCKET}/{PREFIXES['checkpoint']}{topology.name}"
        if topology.s3
        else str(work / "checkpoints" / topology.name)
    )
    return base.replace(
        kafka_consumer_group=f"bench_{topology.name}",
        iceberg_table=f"bench.{topology.name}",
        checkpoint_location=checkpoint,
        max_offsets_per_trigger=batch,
    )


def bench_cluster(scale: Scale, topologies: list[Topology], keep: bool) -> dict[str, Any]:
    work = SCRATCH_DIR / f"cluster-{scale.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        with contextlib.ExitStack() as servers:
            broker = servers.enter_context(kafka_broker(work / "kafka"))
            base = Settings(
                kafka_bootstrap_servers=broker.bootstrap_servers,
                kafka_topic=TOPIC,
                iceberg_catalog_uri=f"sqlite:///{work}/catalog.db",
                iceberg_warehouse=f"file://{work}/warehouse",
                checkpoint_location=str(work / "checkpoints" / "default"),
                spark_master="local[2]",
            )
            bases = {False: base}
            store = None
            if any(t.s3 for t in topologies):
                store = servers.enter_context(object_store(work))
                bases[True] = base.replace(
                    iceberg_catalog_uri=f"sqlite:///{work}/s3-catalog.db",
                    iceberg_warehouse=f"s3://{BUCKET}/{PREFIXES['warehouse'].rstrip('/')}",
                    iceberg_s3_endpoint=store.endpoint,
                )
            _log(f"broker on {broker.bootstrap_servers}; producing {scale.events} events")
            workload = produce_workload(base, events=scale.events, keys=scale.keys)
            per = {t.name: _settings(bases[t.s3], work, t, scale.batch) for t in topologies}
            preloads = []
            for s3 in sorted({t.s3 for t in topologies}):  # one catalog (and warehouse) each
                names = [t.name for t in topologies if t.s3 == s3]
                _log(f"preloading {scale.preload_w1} rows into {', '.join(names)}")
                preload = run_task(
                    {
                        "name": f"preload-{'s3' if s3 else 'file'}",
                        "task": "preload",
                        "settings": _spec(bases[s3]),
                        "rows": scale.preload_w1,
                        "targets": [{"kind": "product", "settings": _spec(per[n])} for n in names],
                    },
                    work,
                    scale.task_timeout_s,
                )
                _require(preload, f"preload of {', '.join(names)}")
                preloads.append(preload)
            expected_rows = scale.preload_w1 + workload.live_keys
            results: dict[str, Any] = {}
            for topology in topologies:
                try:
                    with spark_cluster(work, topology) as cluster:
                        master = cluster.master_url if cluster else "local[2]"
                        spec = {"name": topology.name, "task": "product", "batch": scale.batch}
                        spec["settings"] = _spec(per[topology.name].replace(spark_master=master))
                        if store is not None and topology.s3:
                            spec["request_log"] = str(store.log_file)
                        run = run_task(spec, work, scale.task_timeout_s)
                except Exception as error:  # a topology that cannot start must not lose the others
                    results[topology.name] = {"label": topology.label, "status": f"failed: {error}"}
                    _log(f"{topology.name} failed: {error}")
                    continue
                # records per batch: the job's own count (the Kafka records it read), which
                # needs no offset log read back from the checkpoint (an s3a:// one is not)
                for batch in run.all("batch"):
                    batch["records"] = batch.get("events_in", batch.get("records"))
                results[topology.name] = summary = {
                    "label": topology.label,
                    "workers": topology.workers,
                    "master": master,
                    **contender_summary(run, workload),
                }
                summary["rows_correct"] = summary["rows_after"] == expected_rows
                done = run.last("done") or {}
                window = done.get("request_log") or [None, None]
                if store is not None and topology.s3 and None not in window:
                    counts = count_requests(store.log_file, *window)
                    summary["s3_requests"] = requests_per_commit(counts, summary["batches"])
                _log(
                    f"{topology.name}: {summary['status']} drain {summary['drain_s']} s, "
                    f"{summary['events_per_s']} events/s, {summary['batches']} batches"
                )
            return {
                "scale": dataclasses.asdict(scale),
                "preload_rows": scale.preload_w1,
                "batch_records": scale.batch,
                "workload": workload.as_dict(),
                "rows_expected": expected_rows,
                "topologies": results,
                "preload_s": [p.wall_s for p in preloads],
            }
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


# -- output ---------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"


def print_tables(result: dict[str, Any]) -> None:
    rows = [("topology", "drain s", "events/s", "sustained", "batches", "p50 s", "p95 s", "rows")]
    for name, t in result["topologies"].items():
        latency = t.get("batch_latency_s", {})
        rows.append(
            (
                f"{name} ({t['label']})",
                *(_cell(t.get(k)) for k in ("drain_s", "events_per_s", "sustained_events_per_s")),
                _cell(t.get("batches")),
                *(_cell(latency.get(k)) for k in ("p50", "p95")),
                _rows(t),
            )
        )
    _print(rows)
    for name, t in result["topologies"].items():
        if t["status"] != "ok":
            print(f"{name}: {t['status'][:500]}")
        requests = t.get("s3_requests")
        if requests and requests["per_commit"]:
            print(f"\n{name}: S3 requests per commit ({requests['commits']} commits)")
            rows = [("prefix", *METHODS, "total")]
            rows += [(w, *map(_cell, c.values())) for w, c in requests["per_commit"].items()]
            _print(rows)


def _rows(t: dict[str, Any]) -> str:
    """Preload plus the workload's live keys, or what the table holds instead."""
    if t.get("rows_after") is None:
        return "-"
    return "right" if t["rows_correct"] else f"wrong: {t['rows_after']:,}"


def _print(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = zip(row, widths, strict=True)
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group(required=True)
    for name in SIZES:
        size.add_argument(f"--{name}", dest="scale", action="store_const", const=name)
    names = [t.name for t in TOPOLOGIES]
    parser.add_argument("--only", default="", help=f"comma list of {','.join(names)}")
    parser.add_argument("--keep-scratch", action="store_true", help="keep bench/results/tmp")
    args = parser.parse_args(argv)
    chosen = [n for n in args.only.split(",") if n] or names
    if set(chosen) - set(names):
        parser.error(f"unknown topology(ies) {sorted(set(chosen) - set(names))}")
    scale = SIZES[args.scale]
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # the local store takes any key pair: the bench's own, so that no key of the user's
    # reaches it; the driver and the cluster's executors find them in their environment
    os.environ.update(
        AWS_ACCESS_KEY_ID="local-bench", AWS_SECRET_ACCESS_KEY="local-bench", AWS_REGION="us-east-1"
    )
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(name, None)
    # a stop (SIGTERM, SIGINT) unwinds through the finally blocks: worker, cluster, S3, broker
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupted)
    started = time.monotonic()
    machine = machine_info()
    _log(f"cluster-{scale.name}: {', '.join(chosen)} on {machine['nproc']} cores")
    result = bench_cluster(scale, [t for t in TOPOLOGIES if t.name in chosen], args.keep_scratch)
    result["total_wall_s"] = round(time.monotonic() - started, 1)
    path = write_result(f"cluster-{scale.name}", {"scale_name": scale.name, **result}, machine)
    print_tables(result)
    _log(f"wrote {path.relative_to(path.parent.parent.parent)} in {result['total_wall_s']} s")
    return 0 if all(t["status"] == "ok" for t in result["topologies"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
