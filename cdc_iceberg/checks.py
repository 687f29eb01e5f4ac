"""Pure checks behind the validation task and the lag sensor.

They take plain numbers and return a report; reading Kafka or the table is
the caller's job (see :mod:`cdc_iceberg.table_state`), so every rule here is
unit tested without Airflow, Spark or a broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TableStats:
    """What validation needs to know about the live and dead-letter tables."""

    rows: int
    duplicate_keys: dict[str, int]
    null_keys: int
    newest_ts_ms: int | None
    dead_letters: int
    new_dead_letters: int
    new_incompatible_schema: int = 0
    # when the pipeline's newest batch was committed to the table (None: never)
    last_commit_ms: int | None = None
    # the table's key columns, for the messages
    key: tuple[str, ...] = ("article_id",)


@dataclass
class Report:
    ok: bool
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def message(self) -> str:
        if self.ok:
            return "validation passed: " + ", ".join(f"{k}={v}" for k, v in self.facts.items())
        return "validation failed:\n  - " + "\n  - ".join(self.problems)


def validate(
    stats: TableStats,
    *,
    now_ms: int,
    max_staleness_s: int | None,
    max_new_dead_letters: int,
    batches: list[Mapping[str, Any]] | None = None,
    waiting: int | None = None,
) -> Report:
    """The seed's validation queries and more, as one verdict with reasons.

    ``waiting``: records in Kafka the table does not hold yet (None: unknown). A table
    whose newest change is older than ``max_staleness_s`` is a problem only while
    records wait, or when that is unknown: a quiet source leaves a table old, not stale.
    """
    problems: list[str] = []
    if stats.duplicate_keys:
        sample = ", ".join(f"{k} x{n}" for k, n in list(stats.duplicate_keys.items())[:5])
        problems.append(
            f"{len(stats.duplicate_keys)} {_key_name(stats.key)} values occur more than once "
            f"({sample})"
        )
    if stats.null_keys:
        problems.append(f"{stats.null_keys} rows have a null {_key_name(stats.key)}")
    new_letters = stats.new_dead_letters
    if new_letters > max_new_dead_letters:
        problems.append(
            f"{new_letters} records were dead-lettered in this run (allowed: "
            f"{max_new_dead_letters}); inspect the dead-letter table"
        )
    if stats.new_incompatible_schema:
        problems.append(
            f"{stats.new_incompatible_schema} records carry an incompatible schema change; "
            "see the reasons in the dead-letter table"
        )
    staleness_s = None
    if stats.newest_ts_ms is not None:
        staleness_s = max(0, (now_ms - stats.newest_ts_ms) // 1000)
        if max_staleness_s is not None and staleness_s > max_staleness_s and waiting != 0:
            behind = "unknown" if waiting is None else f"{waiting}"
            problems.append(
                f"newest change in the table is {staleness_s}s old (limit {max_staleness_s}s) "
                f"while records wait in Kafka ({behind})"
            )
    totals: dict[str, int] = {}
    for batch in batches or []:
        for key in ("events_in", "dead_lettered", "inserted", "updated", "deleted", "stale"):
            totals[key] = totals.get(key, 0) + int(batch.get(key, 0) or 0)
    last_commit_age_s = None
    if stats.last_commit_ms is not None:
        last_commit_age_s = max(0, (now_ms - stats.last_commit_ms) // 1000)
    facts: dict[str, Any] = {
        "rows": stats.rows,
        "dead_letters": stats.dead_letters,
        "new_dead_letters": new_letters,
        "staleness_s": staleness_s,
        "waiting": waiting,
        "last_commit_age_s": last_commit_age_s,
        **totals,
    }
    return Report(ok=not problems, problems=problems, facts=facts)


@dataclass(frozen=True)
class LagReport:
    ok: bool
    per_partition: dict[int, int]
    total: int
    message: str


def evaluate_lag(
    end: Mapping[int, int], committed: Mapping[int, int], max_lag_per_partition: int
) -> LagReport:
    """Lag per partition (end offset minus committed offset) against a threshold."""
    per_partition = {p: max(0, end[p] - committed.get(p, 0)) for p in sorted(end)}
    over = {p: n for p, n in per_partition.items() if n > max_lag_per_partition}
    total = sum(per_partition.values())
    if over:
        detail = ", ".join(f"partition {p}: {n}" for p, n in over.items())
        message = f"consumer lag above {max_lag_per_partition} ({detail}); total {total}"
    else:
        message = f"consumer lag within {max_lag_per_partition} per partition; total {total}"
    return LagReport(ok=not over, per_partition=per_partition, total=total, message=message)


def _key_name(key: tuple[str, ...]) -> str:
    """``article_id``, or ``(order_id, line_no)`` for a composite key."""
    return key[0] if len(key) == 1 else f"({', '.join(key)})"
