"""Every table at a glance: lag, freshness, last batch, dead letters, tombstones, checkpoint.

Usage::

    python -m cdc_iceberg status                 # every configured table (make status)
    python -m cdc_iceberg status --table neuronews.order_lines
    python -m cdc_iceberg status --json          # the same facts for scripts

It reads what the drain leaves behind, without starting Spark: the tables'
snapshot summaries and metadata through pyiceberg, the topics' end offsets
from Kafka, the dead-letter tables, and each table's local checkpoint files.
The exit status is 1 when a table reports a problem (a checkpoint ahead of its
table, a table or broker that cannot be read), else 0.

The pure parts (:func:`checkpoint_state`, :func:`reason_kind`, :func:`render`)
are unit tested; :func:`table_status` is tested against real services.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cdc_iceberg import kafka_offsets, pipelines, table_state
from cdc_iceberg.checkpoint_log import (
    CommittedBatch,
    checkpoint_problem,
    committed_batch,
    is_local,
    local_path,
)
from cdc_iceberg.settings import Settings

# the batch metrics a status shows, in this order (the rest stays in --json)
_BATCH_FIGURES = ("events_in", "inserted", "updated", "deleted", "stale", "dead_lettered")


@dataclass(frozen=True)
class CheckpointState:
    """How a table's checkpoint stands against the offsets the table records."""

    state: str  # agrees, behind, ahead, none, unusable, remote, empty
    ok: bool
    detail: str
    batch_id: int | None = None
    offsets: dict[int, int] = field(default_factory=dict)


@dataclass
class TableStatus:
    table: str
    topic: str
    source: str = ""
    exists: bool = False
    table_offsets: dict[int, int] = field(default_factory=dict)
    end_offsets: dict[int, int] | None = None
    lag: dict[int, int] | None = None
    lag_total: int | None = None
    newest_change_ms: int | None = None
    age_s: int | None = None
    last_batch: dict[str, Any] | None = None
    rows: int | None = None
    tombstones: int | None = None
    snapshots: int = 0
    dead_letters: int = 0  # not (yet) applied by a replay
    dead_letters_replayed: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    checkpoint: CheckpointState | None = None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("table_offsets", "end_offsets", "lag"):
            if out[name] is not None:
                out[name] = {str(p): n for p, n in sorted(out[name].items())}
        if self.checkpoint is not None:
            out["checkpoint"]["offsets"] = {
                str(p): n for p, n in sorted(self.checkpoint.offsets.items())
            }
        out["newest_change"] = iso_time(self.newest_change_ms)
        return out


# -- pure logic ---------------------------------------------------------------


def checkpoint_state(
    location: str,
    table_offsets: Mapping[int, int],
    batch: CommittedBatch | None,
    *,
    exists: bool,
    problem: str | None = None,
) -> CheckpointState:
    """Compare the newest committed batch of a checkpoint with what the table records.

    The table is the final word: a checkpoint behind it only makes the next
    drain skip records the table holds, but a checkpoint ahead of it would make
    Spark resume past changes the table never received.
    """
    if not is_local(location):
        return CheckpointState("remote", True, f"{location}: remote, not checked here")
    if not exists:
        start = "the table's offsets" if table_offsets else "STARTING_OFFSETS"
        return CheckpointState("none", True, f"no checkpoint: the next drain starts from {start}")
    if problem is not None:
        return CheckpointState(
            "unusable",
            True,
            f"Spark could not restart from it ({problem}): the next drain sets it aside "
            "and resumes from the table's offsets",
        )
    if batch is None:
        return CheckpointState("empty", True, "no batch committed yet")
    planned = (
        f"; batch {', '.join(map(str, batch.planned))} planned, never committed (planned "
        "again by the next drain)"
        if batch.planned
        else ""
    )
    ahead = {
        p: (o, table_offsets.get(p, 0))
        for p, o in batch.offsets.items()
        if o > table_offsets.get(p, 0)
    }
    if ahead:
        where = ", ".join(f"partition {p}: {c} > {t}" for p, (c, t) in sorted(ahead.items()))
        return CheckpointState(
            "ahead",
            False,
            f"batch {batch.batch_id} is ahead of the table ({where}): the next drain would "
            "skip changes the table does not hold; reset the checkpoint (cdc_reset, scope "
            f"checkpoint){planned}",
            batch.batch_id,
            dict(batch.offsets),
        )
    behind = {p for p, o in table_offsets.items() if o > batch.offsets.get(p, 0)}
    if behind:
        return CheckpointState(
            "behind",
            True,
            f"batch {batch.batch_id} is behind the table on partition "
            f"{', '.join(map(str, sorted(behind)))}: the next drain skips what the table "
            f"holds{planned}",
            batch.batch_id,
            dict(batch.offsets),
        )
    return CheckpointState(
        "agrees",
        True,
        f"batch {batch.batch_id} agrees with the table{planned}",
        batch.batch_id,
        dict(batch.offsets),
    )


_QUOTED = re.compile(r"'[^']*'")


def reason_kind(reason: str | None) -> str:
    """A dead-letter reason without the record's own values, so that like reasons group."""
    return _QUOTED.sub("'…'", (reason or "no reason recorded").strip())


def render(statuses: Sequence[TableStatus], now_ms: int) -> str:
    """The status of every table as text, one block per table."""
    blocks = []
    for s in statuses:
        lines = [f"{s.table}  (topic {s.topic})"]
        if s.lag_total is not None and s.lag is not None:
            parts = ", ".join(f"p{p}: {n}" for p, n in s.lag.items())
            lines.append(f"  lag          {s.lag_total} records ({parts})")
        if not s.exists:
            lines.append("  table        not created yet (created by the first drain)")
        else:
            if s.newest_change_ms is not None:
                age = max(0, (now_ms - s.newest_change_ms) // 1000)
                newest = iso_time(s.newest_change_ms)
                lines.append(f"  freshness    newest change {newest} ({age_text(age)} ago)")
            else:
                lines.append("  freshness    no change applied yet")
            if s.last_batch:
                b = s.last_batch
                figures = ", ".join(f"{b.get(k, 0)} {k.replace('_', ' ')}" for k in _BATCH_FIGURES)
                lines.append(
                    f"  last batch   {b.get('batch_id')} at {iso_time(b.get('committed_at_ms'))}: "
                    f"{figures}, {b.get('duration_s', 0)} s"
                )
            lines.append(
                f"  rows         {count_text(s.rows)} live, {count_text(s.tombstones)} tombstones, "
                f"{s.snapshots} snapshots"
            )
            replayed = (
                f" ({s.dead_letters_replayed} more applied by a replay)"
                if s.dead_letters_replayed
                else ""
            )
            lines.append(f"  dead letters {s.dead_letters}{replayed}")
            for reason, n in sorted(s.dead_letter_reasons.items(), key=lambda i: (-i[1], i[0])):
                lines.append(f"    {n:>6}  {reason}")
        if s.checkpoint is not None:
            lines.append(f"  checkpoint   {s.checkpoint.state}: {s.checkpoint.detail}")
        for problem in s.problems:
            lines.append(f"  PROBLEM      {problem}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _why(error: Exception) -> str:
    text, name = str(error), type(error).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def iso_time(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def age_text(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def count_text(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


# -- reading the table, the broker and the checkpoint ------------------------------


def _live_rows(table: Any) -> int:
    """Rows of a table from its current snapshot's totals (data rows less deleted rows)."""
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return 0
    summary = snapshot.summary.additional_properties
    records = int(summary.get("total-records", 0))
    return records - int(summary.get("total-position-deletes", 0))


def _newest_change_ms(table: Any) -> int | None:
    """The largest ``ts_ms`` of a table, from its data files' column bounds (no data read)."""
    if table.current_snapshot() is None:
        return None
    files = table.inspect.files()
    if not files.num_rows:
        return None
    newest = None
    for content, metrics in zip(
        files["content"].to_pylist(), files["readable_metrics"].to_pylist(), strict=True
    ):
        bound = (metrics or {}).get("ts_ms", {}).get("upper_bound") if content == 0 else None
        if bound is not None:
            newest = bound if newest is None else max(newest, bound)
    return None if newest is None else int(newest)


def table_status(
    settings: Settings,
    source: str = "",
    now_ms: int | None = None,
    unreachable: str | None = None,
) -> TableStatus:
    """Everything the status shows about the table of ``settings``; what cannot be read is
    a problem of that table, never an exception (``unreachable``: why Kafka is not asked)."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    status = TableStatus(settings.iceberg_table, settings.kafka_topic, source)
    try:
        catalog = table_state.catalog(settings)
        status.exists = bool(catalog.table_exists(settings.iceberg_table))
        if status.exists:
            live = catalog.load_table(settings.iceberg_table)
            status.table_offsets = table_state.offsets_in(live, settings)
            status.rows = _live_rows(live)
            status.snapshots = len(live.snapshots())
            status.last_batch = table_state.last_batch(live, settings)
            newest = [_newest_change_ms(live)]
            if catalog.table_exists(settings.tombstone_table):
                tombstones = catalog.load_table(settings.tombstone_table)
                status.tombstones = _live_rows(tombstones)
                newest.append(_newest_change_ms(tombstones))
            known = [n for n in newest if n is not None]
            status.newest_change_ms = max(known) if known else None
            if status.newest_change_ms is not None:
                status.age_s = max(0, (now_ms - status.newest_change_ms) // 1000)
            dlq = settings.iceberg_dlq_table
            letters = []
            if catalog.table_exists(dlq):
                letters = table_state.dead_letters_in(catalog.load_table(dlq))
            pending = [r for r in letters if r.get("replay_outcome") != "applied"]
            status.dead_letters = len(pending)
            status.dead_letters_replayed = len(letters) - len(pending)
            status.dead_letter_reasons = dict(Counter(reason_kind(r["reason"]) for r in pending))
    except Exception as error:  # one unreadable table never hides the others
        status.problems.append(f"the table cannot be read: {_why(error)}")
    try:
        if unreachable:
            raise ConnectionError(unreachable)
        end = kafka_offsets.end_offsets(settings)
        floor = kafka_offsets.beginning_offsets(settings)
        status.end_offsets = end
        status.lag = kafka_offsets.lag_with_floor(end, status.table_offsets, floor)
        status.lag_total = sum(status.lag.values())
    except Exception as error:
        status.problems.append(unreachable or f"Kafka cannot be read: {_why(error)}")
    location = settings.checkpoint_location
    local = is_local(location)
    exists = local and local_path(location).exists()
    problem = checkpoint_problem(location) if exists else None
    batch = committed_batch(location, settings.kafka_topic) if exists and not problem else None
    status.checkpoint = checkpoint_state(
        location, status.table_offsets, batch, exists=exists or not local, problem=problem
    )
    if not status.checkpoint.ok:
        status.problems.append(f"checkpoint {status.checkpoint.state}: {location}")
    return status


def statuses(base: Settings, names: Sequence[str] = ()) -> list[TableStatus]:
    """The status of every table ``base.pipelines_file`` configures (or of ``names``)."""
    config = pipelines.load(base.pipelines_file)
    unreachable = None
    try:  # once: a broker that is down is reported once per table, not waited for each
        topics: set[str] = kafka_offsets.topics(base)
    except Exception as error:  # the tables the file names are still shown
        unreachable = f"Kafka cannot be read: {_why(error)}"
        topics = set()
    tables = config.resolve(topics)
    if names:
        tables = tuple(config.find(name, topics) for name in names)
    if not tables:  # no pipelines file: the one table of the settings
        return [table_status(base, unreachable=unreachable)]
    return [table_status(t.settings(base), t.source, unreachable=unreachable) for t in tables]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cdc_iceberg status",
        description="Lag, freshness, last batch, dead letters and checkpoint of every table.",
    )
    parser.add_argument(
        "--table",
        action="append",
        default=[],
        help="only this table (its source schema.table or Iceberg name); repeatable",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        found = statuses(Settings.from_env(), args.table)
    except pipelines.PipelinesError as error:
        print(f"status: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"tables": [s.as_dict() for s in found]}, indent=2, sort_keys=True))
    else:
        print(render(found, int(time.time() * 1000)), end="")
    return 1 if any(s.problems for s in found) else 0
