"""The status of every table as an HTML page (the ``CDC status`` view of the Airflow UI).

The facts are :mod:`cdc_iceberg.status`'s, the same as ``make status``; this
module only lays them out. Every value is escaped: reasons and names come
from the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from cdc_iceberg.status import TableStatus, age_text, count_text, iso_time

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2933; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .4rem .6rem; vertical-align: top;
         border-bottom: 1px solid #d9e2ec; }
th { background: #f0f4f8; }
.problem { color: #b42318; font-weight: 600; }
.ok { color: #1e7d32; }
small { color: #52606d; }
"""


def _cell(text: object, css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<td{attribute}>{escape(str(text))}</td>"


def status_page(statuses: Sequence[TableStatus], now_ms: int) -> str:
    """A page with one row per table: lag, freshness, last batch, rows, dead letters,
    checkpoint and problems."""
    head = (
        "<tr><th>Table</th><th>Lag (records)</th><th>Newest change</th><th>Last batch</th>"
        "<th>Rows / tombstones / snapshots</th><th>Dead letters</th><th>Checkpoint</th>"
        "<th>Problems</th></tr>"
    )
    rows = []
    for s in statuses:
        if s.newest_change_ms is not None:
            seconds = max(0, (now_ms - s.newest_change_ms) // 1000)
            age = f"{iso_time(s.newest_change_ms)} ({age_text(seconds)} ago)"
        else:
            age = "none yet" if s.exists else "table not created yet"
        batch = s.last_batch or {}
        last = (
            f"{batch.get('batch_id')} at {iso_time(batch.get('committed_at_ms'))}: "
            f"{batch.get('events_in', 0)} in, {batch.get('inserted', 0)} inserted, "
            f"{batch.get('updated', 0)} updated, {batch.get('deleted', 0)} deleted"
            if batch
            else ""
        )
        reasons = "; ".join(f"{n}: {r}" for r, n in sorted(s.dead_letter_reasons.items()))
        letters = f"{s.dead_letters}" + (f" ({reasons})" if reasons else "")
        if s.dead_letters_replayed:
            letters += f", {s.dead_letters_replayed} replayed"
        checkpoint = f"{s.checkpoint.state}: {s.checkpoint.detail}" if s.checkpoint else ""
        rows.append(
            "<tr>"
            + f"<td><b>{escape(s.table)}</b><br><small>{escape(s.topic)}</small></td>"
            + _cell("?" if s.lag_total is None else s.lag_total, "problem" if s.lag_total else "")
            + _cell(age)
            + _cell(last)
            + _cell(f"{count_text(s.rows)} / {count_text(s.tombstones)} / {s.snapshots}")
            + _cell(letters, "problem" if s.dead_letters else "")
            + _cell(checkpoint, "ok" if s.checkpoint and s.checkpoint.ok else "problem")
            + _cell("; ".join(s.problems) or "none", "problem" if s.problems else "ok")
            + "</tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>CDC status</title>"
        f"<style>{_STYLE}</style></head><body><h1>CDC status</h1>"
        f"<p><small>as of {escape(str(iso_time(now_ms)))} UTC; the same facts as "
        "<code>make status</code>, JSON at <a href='json'>json</a></small></p>"
        f"<table>{head}{''.join(rows)}</table></body></html>"
    )
