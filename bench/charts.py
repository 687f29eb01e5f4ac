"""One PNG chart per benchmark figure (matplotlib, no display needed).

``bench/run.py`` calls :func:`draw` after writing each JSON; to redraw a
chart from a stored result::

    cd /work/main && .venv/bin/python -m bench.charts bench/results/w1_throughput-quick.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COLORS = {
    "product": "#1f77b4",
    "naive": "#d62728",
    "pyiceberg": "#2ca02c",
    "append": "#7f7f7f",
    "merge-on-read": "#1f77b4",
    "copy-on-write": "#ff7f0e",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(data: dict[str, Any], text: str) -> str:
    machine = data.get("machine", {})
    return (
        f"{text} [{data.get('scale_name', '')}] - {machine.get('nproc', '?')} cores, "
        f"{machine.get('cpu_model', '?')}, load {machine.get('load_average_at_start', '?')}"
    )


def _bar_labels(ax: Any, bars: Any, fmt: str = "{:.0f}") -> None:
    for bar in bars:
        height = bar.get_height()
        if height:
            ax.annotate(
                fmt.format(height),
                (bar.get_x() + bar.get_width() / 2, height),
                ha="center",
                va="bottom",
                fontsize=8,
            )


def workload(data: dict[str, Any], path: Path) -> None:
    plt = _plt()
    contenders = data["contenders"]
    names = list(contenders)
    colors = [COLORS.get(n, "#333333") for n in names]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    (rate, latency, memory), (written, steps, info) = axes

    values = [contenders[n].get("events_per_s") or 0 for n in names]
    _bar_labels(rate, rate.bar(names, values, color=colors))
    rate.set_title("events/s over the whole drain")
    rate.set_ylabel("change events per second")

    for name, color in zip(names, colors, strict=True):
        per_batch = contenders[name]["batch_latency_s"]["per_batch"]
        latency.plot(range(len(per_batch)), per_batch, marker="o", label=name, color=color)
    latency.set_title(f"per-batch latency ({data['batch_records']} records per batch)")
    latency.set_xlabel("batch")
    latency.set_ylabel("seconds")
    latency.legend()

    peaks = [(contenders[n].get("peak_mem_mib") or 0) / 1024 for n in names]
    _bar_labels(memory, memory.bar(names, peaks, color=colors), "{:.2f}")
    memory.axhline(2.0, color="black", linestyle="--", linewidth=1, label="2 GiB")
    memory.set_title("peak memory of the process tree (JVM + Python, PSS)")
    memory.set_ylabel("GiB")
    memory.legend()

    means = [(contenders[n]["bytes_written_per_batch"].get("mean") or 0) / 2**20 for n in names]
    _bar_labels(written, written.bar(names, means, color=colors), "{:.2f}")
    written.set_title("bytes written per batch (snapshot added-files-size)")
    written.set_ylabel("MiB per batch (mean)")

    product_steps = contenders.get("product", {}).get("steps_median_s") or {}
    if product_steps:
        labels = list(product_steps)
        _bar_labels(
            steps,
            steps.bar(labels, [product_steps[k] for k in labels], color=COLORS["product"]),
            "{:.1f}",
        )
        steps.tick_params(axis="x", rotation=30)
    steps.set_title("product: median seconds per step of a batch")
    steps.set_ylabel("seconds")

    info.axis("off")
    work = data["workload"]
    lines = [
        f"preloaded rows: {data['preload_rows']:,}",
        f"change events: {work['changes']:,} ({work['records']:,} Kafka records)",
        f"ops: {work['ops']}",
        f"mean record: {work['mean_record_bytes']} bytes",
        f"live generated keys at the end: {work['live_keys']:,}",
        f"product rows correct: {data.get('product_rows_correct')}",
    ]
    for name in names:
        c = contenders[name]
        lines.append(
            f"{name}: {c['status']}, drain {c.get('drain_s')} s, "
            f"session start {c.get('session_start_s')} s"
        )
    info.text(0, 1, "\n".join(lines), va="top", fontsize=9, family="monospace", wrap=True)
    fig.suptitle(_title(data, data["figure"]))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def sweep(data: dict[str, Any], path: Path) -> None:
    plt = _plt()
    sizes = data["sizes"]
    labels = [f"{s['batch_records']:,}" for s in sizes]
    fig, (rate, latency, steps) = plt.subplots(1, 3, figsize=(16, 5))
    _bar_labels(
        rate, rate.bar(labels, [s.get("events_per_s") or 0 for s in sizes], color=COLORS["product"])
    )
    rate.set_title("product: events/s by batch size")
    rate.set_xlabel("records per micro-batch")
    _bar_labels(
        latency,
        latency.bar(
            labels, [s["batch_latency_s"]["mean"] or 0 for s in sizes], color=COLORS["product"]
        ),
        "{:.1f}",
    )
    latency.set_title("mean per-batch latency (s)")
    latency.set_xlabel("records per micro-batch")
    names = sorted({k for s in sizes for k in s["steps_mean_s"]})
    bottom = [0.0] * len(sizes)
    for name in names:
        values = [s["steps_mean_s"].get(name, 0.0) for s in sizes]
        steps.bar(labels, values, bottom=bottom, label=name)
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    steps.set_title("mean seconds per step of a batch")
    steps.set_xlabel("records per micro-batch")
    steps.legend(fontsize=8)
    fig.suptitle(_title(data, data["figure"]))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def layout(data: dict[str, Any], path: Path) -> None:
    plt = _plt()
    modes = data["modes"]
    fig, (latency, written, reads) = plt.subplots(1, 3, figsize=(16, 5))
    for mode, values in modes.items():
        color = COLORS.get(mode)
        per_batch = values["batch_latency_s"]["per_batch"]
        latency.plot(range(1, len(per_batch) + 1), per_batch, marker="o", label=mode, color=color)
        sizes = [b / 2**20 for b in values["bytes_written_per_batch"]["per_batch"]]
        written.plot(range(1, len(sizes) + 1), sizes, marker="o", label=mode, color=color)
        points = values["reads"]
        reads.plot(
            [r["after_batches"] for r in points],
            [r["seconds"] for r in points],
            marker="o",
            label=mode,
            color=color,
        )
    latency.set_title(f"per-batch latency ({data['batch_records']} records per batch)")
    latency.set_xlabel("batch")
    latency.set_ylabel("seconds")
    written.set_title("bytes written per batch")
    written.set_xlabel("batch")
    written.set_ylabel("MiB")
    reads.set_title(f"full-scan read of {data['preload_rows']:,}+ rows")
    reads.set_xlabel("batches applied")
    reads.set_ylabel("seconds (best of the repeats)")
    for ax in (latency, written, reads):
        ax.legend()
    fig.suptitle(_title(data, data["figure"]))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def scaling(data: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, (merge, steps) = plt.subplots(1, 2, figsize=(14, 5))
    small, big = data["w1"], data["w2"]
    for side, color in ((small, "#1f77b4"), (big, "#9467bd")):
        values = side["merge_s_per_batch"]
        merge.plot(
            range(len(values)),
            values,
            marker="o",
            color=color,
            label=f"{side['preload_rows']:,} preloaded rows",
        )
    merge.set_title(
        f"MERGE seconds per batch of {small['batch_records']:,} records "
        f"(ratio of medians {data['merge_ratio_w2_over_w1']})"
    )
    merge.set_xlabel("batch")
    merge.legend()
    names = sorted(set(small["steps_median_s"]) | set(big["steps_median_s"]))
    xs = range(len(names))
    steps.bar(
        [x - 0.2 for x in xs],
        [small["steps_median_s"].get(n, 0) for n in names],
        0.4,
        label=f"{small['preload_rows']:,} rows",
    )
    steps.bar(
        [x + 0.2 for x in xs],
        [big["steps_median_s"].get(n, 0) for n in names],
        0.4,
        label=f"{big['preload_rows']:,} rows",
    )
    steps.set_xticks(list(xs), names, rotation=30)
    steps.set_title("product: median seconds per step")
    steps.legend()
    fig.suptitle(_title(data, data["figure"]))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def idle(data: dict[str, Any], path: Path) -> None:
    plt = _plt()
    run = data["idle"]
    checks = run.get("checks_s") or []
    labels = ["fresh process\nto decision", "imports", "first check", "later checks\n(mean)"]
    values = [
        run.get("process_to_first_decision_s") or 0,
        run.get("import_s") or 0,
        run.get("first_check_s") or 0,
        sum(checks[1:]) / max(1, len(checks) - 1),
    ]
    fig, ax = plt.subplots(figsize=(8, 5))
    _bar_labels(ax, ax.bar(labels, values, color="#1f77b4"), "{:.2f}")
    ax.axhline(5.0, color="black", linestyle="--", linewidth=1, label="5 s target")
    ax.set_ylabel("seconds")
    ax.set_title(
        f"nothing new: skip decision without Spark (pyspark imported: "
        f"{run.get('pyspark_imported')}, would skip: {run.get('would_skip')})",
        fontsize=9,
    )
    ax.legend()
    fig.suptitle(_title(data, data["figure"]), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def sessions(data: dict[str, Any], path: Path) -> None:
    plt = _plt()
    samples = data["samples"]
    fig, ax = plt.subplots(figsize=(12, 5))
    labels = [s["task"] for s in samples]
    _bar_labels(ax, ax.bar(labels, [s["session_s"] for s in samples], color="#8c564b"), "{:.1f}")
    ax.set_ylabel("seconds in build_session (JVM start, jars, catalog)")
    ax.tick_params(axis="x", rotation=45)
    ax.set_title("Spark session start, every worker of the run")
    fig.suptitle(_title(data, data["figure"]), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _score(row: dict[str, Any]) -> float:
    """Measured relative to the goal, so that >= 1 means met whichever way the goal points."""
    measured, goal = float(row["measured"]), float(row["goal"])
    if row["higher_is_better"]:
        return measured / goal
    return goal / measured if measured else 10.0


def target_chart(data: dict[str, Any], path: Path) -> None:
    plt = _plt()
    rows = [r for r in data["targets"] if r["measured"] is not None]
    fig, ax = plt.subplots(figsize=(12, 1 + 0.8 * max(1, len(rows))))
    labels = [r["target"] for r in rows]
    # progress towards the goal: > 1 means met, whichever direction the goal points
    scores = [_score(r) for r in rows]
    colors = ["#2ca02c" if r["met"] else "#d62728" for r in rows]
    ax.barh(labels, scores, color=colors)
    for y, (row, score) in enumerate(zip(rows, scores, strict=True)):
        ax.annotate(f" {row['measured']} (goal {row['goal']})", (score, y), va="center", fontsize=8)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("measured relative to the goal (>= 1 means met)")
    ax.invert_yaxis()
    fig.suptitle(_title(data, data["figure"]), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


DRAW = {
    "w1": workload,
    "w2": workload,
    "w3": workload,
    "fixed": workload,
    "sweep": sweep,
    "layout": layout,
    "merge_scaling": scaling,
    "idle_run": idle,
    "session_start": sessions,
    "targets": target_chart,
}
_BY_FIGURE = {
    "w1_throughput": "w1",
    "w2_throughput": "w2",
    "w3_throughput": "w3",
    "fixed_cost": "fixed",
    "batch_sweep": "sweep",
    "layout_cow_vs_mor": "layout",
    "merge_scaling": "merge_scaling",
    "idle_run": "idle_run",
    "session_start": "session_start",
    "targets": "targets",
}


def draw(key: str, data: dict[str, Any], path: Path) -> None:
    DRAW[key](data, path)


def main(argv: list[str] | None = None) -> int:
    for name in sys.argv[1:] if argv is None else argv:
        path = Path(name)
        data = json.loads(path.read_text())
        key = _BY_FIGURE[data["figure"].rsplit("-", 1)[0]]
        draw(key, data, path.with_suffix(".png"))
        print(path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
