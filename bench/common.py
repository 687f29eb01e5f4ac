"""Shared pieces of the benchmark harness: scales, machine facts, processes, results.

Not run by itself; ``bench/run.py`` uses it::

    cd /work/main && nice -n 19 .venv/bin/python bench/run.py --quick

Every measured contender runs in a worker process of its own (``python -m
bench.worker SPEC.json``), started in a new process group so that the harness
can sample its memory (the Python process and the JVM it starts) and stop all
of it, by its process-group id, when it overruns its time budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = PROJECT_ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
SCRATCH_DIR = RESULTS_DIR / "tmp"

TOPIC = "neuronews.public.articles"
PARTITIONS = 3
SEED = 20260101
BODY_BYTES = 420  # with the unwrapped envelope, a change event is about 1 KB


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big each benchmark is: ``full`` at the documented sizes, the others scaled down."""

    name: str
    events: int  # change events of W1 and W2
    keys: int  # keys they touch
    preload_w1: int  # rows in the table before W1
    preload_w2: int  # rows in the table before W2
    batch: int  # Kafka records per micro-batch in W1 and W2
    w1_contenders: tuple[str, ...]
    w2_contenders: tuple[str, ...]
    idle_repeats: int
    task_timeout_s: float  # a contender still running then is stopped and reported as such
    # the batch-size sweep and the layout comparison; a scale without them skips them
    sweep_events: int = 0
    sweep_keys: int = 0
    sweep_batches: tuple[int, ...] = ()
    sweep_preload: int = 0
    layout_batch: int = 0
    layout_reads_after: tuple[int, ...] = ()  # full-scan read after this many batches in total
    layout_preload: int = 0
    # W3: the W1 events into a table of narrow rows (short bodies, to fit the disk)
    preload_w3: int = 0
    w3_contenders: tuple[str, ...] = ()
    w3_body_bytes: int = 40
    # the fixed cost of a batch: small batches into a big table
    fixed_preload: int = 0
    fixed_batches: int = 0
    fixed_batch: int = 1_000

    @property
    def layout_events(self) -> int:
        return self.layout_batch * max(self.layout_reads_after)


ALL_CONTENDERS = ("product", "naive", "pyiceberg", "append")

SCALES: dict[str, Scale] = {
    # `make bench`: W1 (all four contenders), W2 (product and naive) and the idle run, two
    # batches each, in about 5 minutes on 2 idle cores (312 s measured). A product batch
    # has a fixed cost of 15-25 s whatever its size, so the sweep and the layout
    # comparison, which need many batches, run only in `--full` (or `--smoke`, to check
    # their code paths).
    "quick": Scale(
        name="quick",
        events=2_500,
        keys=700,
        preload_w1=10_000,
        preload_w2=40_000,
        batch=2_000,
        w1_contenders=ALL_CONTENDERS,
        w2_contenders=("product", "naive"),
        preload_w3=200_000,
        w3_contenders=("product", "naive"),
        fixed_preload=40_000,
        fixed_batches=5,
        idle_repeats=3,
        task_timeout_s=600,
    ),
    # a few seconds of work per contender: checks that every path of the harness runs
    "smoke": Scale(
        name="smoke",
        events=3_000,
        keys=600,
        preload_w1=5_000,
        preload_w2=50_000,
        batch=1_000,
        w1_contenders=ALL_CONTENDERS,
        w2_contenders=("product", "naive"),
        sweep_events=2_000,
        sweep_keys=400,
        sweep_batches=(500, 2_000),
        sweep_preload=5_000,
        layout_batch=500,
        layout_reads_after=(1, 2),
        layout_preload=5_000,
        preload_w3=100_000,
        w3_contenders=("product", "naive"),
        fixed_preload=5_000,
        fixed_batches=3,
        idle_repeats=3,
        task_timeout_s=900,
    ),
    # product vs naive at a size between quick and full (about 15 minutes here)
    "medium": Scale(
        name="medium",
        events=200_000,
        keys=40_000,
        preload_w1=400_000,
        preload_w2=4_000_000,
        batch=40_000,
        w1_contenders=("product", "naive"),
        w2_contenders=("product", "naive"),
        idle_repeats=5,
        task_timeout_s=900,
    ),
    "full": Scale(
        name="full",
        events=1_000_000,
        keys=100_000,
        preload_w1=1_000_000,
        preload_w2=10_000_000,
        batch=100_000,
        w1_contenders=ALL_CONTENDERS,
        # the append-only ceiling never reads the table: its W1 figure stands for W2
        w2_contenders=("product", "naive", "pyiceberg"),
        sweep_events=1_000_000,
        sweep_keys=100_000,
        sweep_batches=(10_000, 100_000, 1_000_000),
        sweep_preload=1_000_000,
        layout_batch=10_000,
        layout_reads_after=(1, 10, 50),
        layout_preload=1_000_000,
        preload_w3=50_000_000,
        w3_contenders=("product", "naive"),
        fixed_preload=10_000_000,
        fixed_batches=20,
        idle_repeats=20,
        task_timeout_s=3 * 3600,
    ),
}


# -- machine facts -------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _java_version() -> str:
    try:
        out = subprocess.run(
            [os.environ.get("JAVA", "java"), "-version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (out.stderr or out.stdout).splitlines()
    return lines[0].strip() if lines else "unknown"


def _jar_version(folder: Path, prefix: str) -> str:
    for jar in sorted(folder.glob(f"{prefix}*.jar")):
        return jar.stem.removeprefix(prefix)
    return "missing"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    import psutil

    jars = PROJECT_ROOT / "build" / "jars"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "niceness": os.nice(0),
        "versions": {
            "python": platform.python_version(),
            "java": _java_version(),
            "pyspark": _package("pyspark"),
            "iceberg_spark_runtime": _jar_version(jars / "spark", "iceberg-spark-runtime-"),
            "kafka_broker": _jar_version(jars / "kafka", "kafka_2.13-"),
            "pyiceberg": _package("pyiceberg"),
            "pyarrow": _package("pyarrow"),
            "kafka_python": _package("kafka-python"),
            "psutil": _package("psutil"),
            "matplotlib": _package("matplotlib"),
        },
    }


# -- results -------------------------------------------------------------------


def write_result(name: str, data: dict[str, Any], machine: dict[str, Any]) -> Path:
    """``bench/results/<name>.json`` with the machine facts next to the figures."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    body = {"figure": name, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **data}
    body["machine"] = machine
    path.write_text(json.dumps(body, indent=2, sort_keys=False, default=str) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least q % of values <= it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return float(ordered[int(min(rank, len(ordered))) - 1])


# -- ports and the broker --------------------------------------------------------


def free_port_pair() -> int:
    """A loopback port whose successor (the KRaft controller port) is free too."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65000:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two free consecutive loopback ports")


@contextlib.contextmanager
def kafka_broker(data_dir: Path) -> Iterator[Any]:
    """A KRaft broker of its own on a free loopback port, always stopped afterwards."""
    from cdc_iceberg.local.kafka_broker import KafkaBroker

    broker = KafkaBroker(data_dir=data_dir, port=free_port_pair(), heap="768m")
    started = time.monotonic()
    try:
        broker.start()
        broker.start_s = round(time.monotonic() - started, 2)  # type: ignore[attr-defined]
        yield broker
    finally:
        broker.stop()


# -- worker processes -------------------------------------------------------------


@dataclasses.dataclass
class TaskRun:
    """What the harness saw of one worker process."""

    task: str
    exit_code: int | None
    wall_s: float
    peak_mem_mib: float
    mean_mem_mib: float
    peak_mem_by_process_mib: dict[str, float]
    timed_out: bool
    lines: list[dict[str, Any]]
    log: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def last(self, event: str) -> dict[str, Any] | None:
        found = [line for line in self.lines if line.get("event") == event]
        return found[-1] if found else None

    def all(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == event]


class _MemorySampler(threading.Thread):
    """Samples the memory of a process and all its descendants.

    The figure is the sum of PSS (proportional set size: resident pages, shared
    ones split among the processes sharing them). A plain RSS sum counts the
    JVM twice whenever it forks a short-lived helper (Hadoop's shell calls):
    the child shows all of its parent's pages until it execs.
    """

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.total = 0
        self.samples = 0
        self.peak_breakdown: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._halt.is_set():
            rss = 0
            breakdown: dict[str, int] = {}
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    used = proc.memory_full_info().pss
                    rss += used
                    name = proc.name()
                    breakdown[name] = breakdown.get(name, 0) + used
            if rss > self.peak:
                self.peak = rss
                self.peak_breakdown = breakdown
            self.total += rss
            self.samples += 1
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_task(spec: dict[str, Any], work_dir: Path, timeout_s: float) -> TaskRun:
    """Run ``python -m bench.worker`` on ``spec``; sample its memory; stop it at the timeout."""
    name = spec["name"]
    out = work_dir / f"{name}.jsonl"
    log_path = work_dir / f"{name}.log"
    spec = {**spec, "out": str(out)}
    spec_path = work_dir / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    out.unlink(missing_ok=True)
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", str(spec_path)],
            cwd=PROJECT_ROOT,
            env=worker_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        sampler = _MemorySampler(process.pid)
        sampler.start()
        timed_out = False
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            sampler.stop()
            _stop_group(process)
    wall = time.monotonic() - started
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return TaskRun(
        task=name,
        exit_code=process.returncode,
        wall_s=round(wall, 2),
        peak_mem_mib=round(sampler.peak / 2**20, 1),
        mean_mem_mib=round(sampler.total / max(1, sampler.samples) / 2**20, 1),
        peak_mem_by_process_mib={k: round(v / 2**20, 1) for k, v in sampler.peak_breakdown.items()},
        timed_out=timed_out,
        lines=read_jsonl(out),
        log=text[-4000:],
    )


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, to the worker's own process group (its JVM included)."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(process.pid):
                return
            time.sleep(0.1)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
