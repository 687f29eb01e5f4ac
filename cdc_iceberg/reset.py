"""Operator resets of a pipeline: checkpoint, offsets, or a full rebuild.

Whatever the scope, the result is consistent: the checkpoint is archived (the
next drain starts from the table's offsets), the offsets recorded in the table
and the consumer group's offsets are equal.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cdc_iceberg import kafka_offsets, table_state
from cdc_iceberg.schema import SUMMARY_BATCH, SUMMARY_OFFSETS, SUMMARY_PIPELINE, SUMMARY_TOPIC
from cdc_iceberg.settings import Settings

SCOPES = ("checkpoint", "offsets", "full-rebuild")
TARGETS = ("earliest", "latest")


@dataclass(frozen=True)
class ResetPlan:
    scope: str
    table: str
    checkpoint: str
    archive_to: str | None
    offsets_before: dict[int, int]
    offsets_after: dict[int, int]
    empty_tables: bool

    def describe(self) -> str:
        parts = [f"scope={self.scope} table={self.table}"]
        if self.archive_to:
            parts.append(f"archive checkpoint {self.checkpoint} -> {self.archive_to}")
        else:
            parts.append(f"no checkpoint at {self.checkpoint}")
        parts.append(f"offsets {self.offsets_before} -> {self.offsets_after}")
        if self.empty_tables:
            parts.append("empty the live and tombstone tables")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["offsets_before"] = {str(p): o for p, o in self.offsets_before.items()}
        data["offsets_after"] = {str(p): o for p, o in self.offsets_after.items()}
        return data


def _checkpoint_dir(location: str) -> Path:
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        raise ValueError(
            f"checkpoint {location} is not on a local file system: archive it with your "
            "storage tools, then run the reset with scope 'offsets'"
        )
    return Path(parsed.path if parsed.scheme else location)


def plan_reset(
    settings: Settings, scope: str, confirm: str, reset_to: str = "earliest"
) -> ResetPlan:
    """Validate the request and compute what the reset will do (no side effects).

    The table comes from Settings (a checked ``namespace.table``); ``scope`` and
    ``reset_to`` must be one of the listed words exactly, and ``confirm`` must
    repeat the table name exactly (surrounding blanks aside): a look-alike
    character or a different case is a different name.
    """
    if not isinstance(scope, str) or scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {str(scope)[:40]!r}")
    if not isinstance(confirm, str) or confirm.strip() != settings.iceberg_table:
        raise ValueError(
            f"confirmation {str(confirm)[:80]!r} does not repeat the table name "
            f"{settings.iceberg_table!r}"
        )
    if not isinstance(reset_to, str) or reset_to not in TARGETS:
        raise ValueError(
            f"reset_to must be one of {', '.join(TARGETS)}, not {str(reset_to)[:40]!r}"
        )
    checkpoint = _checkpoint_dir(settings.checkpoint_location)
    archive = None
    if checkpoint.exists():
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        archive = str(checkpoint.with_name(f"{checkpoint.name}.archived-{stamp}"))
    before = table_state.committed_offsets(settings)
    if scope == "checkpoint":
        after = dict(before)
    elif reset_to == "latest" and scope == "offsets":
        after = kafka_offsets.end_offsets(settings)
    else:
        after = kafka_offsets.beginning_offsets(settings)
    return ResetPlan(
        scope=scope,
        table=settings.iceberg_table,
        checkpoint=str(checkpoint),
        archive_to=archive,
        offsets_before=before,
        offsets_after=after,
        empty_tables=scope == "full-rebuild",
    )


def apply_reset(settings: Settings, plan: ResetPlan) -> None:
    """Carry out a plan: archive, rewrite the table's recorded offsets, align the group."""
    if plan.archive_to:
        shutil.move(plan.checkpoint, plan.archive_to)
    lock = Path(plan.checkpoint + ".lock")
    lock.unlink(missing_ok=True)
    if plan.scope != "checkpoint" and table_state.table_exists(settings):
        catalog = table_state.catalog(settings)
        properties = {
            SUMMARY_PIPELINE: settings.pipeline_id,
            SUMMARY_TOPIC: settings.kafka_topic,
            SUMMARY_BATCH: f"reset-{plan.scope}",
            SUMMARY_OFFSETS: json.dumps({str(p): o for p, o in sorted(plan.offsets_after.items())}),
        }
        if plan.empty_tables:
            from pyiceberg.expressions import AlwaysTrue

            for name in (settings.tombstone_table, settings.iceberg_table):
                if catalog.table_exists(name):
                    catalog.load_table(name).delete(AlwaysTrue(), snapshot_properties=properties)
        table = catalog.load_table(settings.iceberg_table)
        with (
            table.transaction() as tx,
            tx.update_snapshot(snapshot_properties=properties).fast_append(),
        ):
            pass
    if plan.offsets_after:
        kafka_offsets.commit_group_offsets(settings, plan.offsets_after)
