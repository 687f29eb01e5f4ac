"""The columns the pipeline adds to every table, and the names it keeps for itself.

A table's own columns and key come from its model (:mod:`cdc_iceberg.table_model`).
The live table carries them plus the sequence that orders changes of one key,
``(ts_ms, lsn, kafka_partition, kafka_offset)``, compared as a whole:

* ``ts_ms`` is Debezium's ``source.ts_ms``: the commit time of the change in
  Postgres. The envelope's own ``ts_ms`` is the connector's processing time
  and a replay or redelivery stamps a new one, so it never orders changes.
* ``lsn`` is ``source.lsn``, the WAL position: it breaks ties between changes
  committed in the same millisecond and orders several changes of one row
  inside one transaction. A blocking snapshot's read (``op = r``) shows the
  row as it was before the LSN it carries, so it is stored at ``lsn - 1``
  (``jobs.transforms.snapshot_read_lsn``): the change that carries that LSN wins.
* ``kafka_partition``/``kafka_offset`` break any remaining tie (snapshot reads
  share one LSN), so the order is total and replaying a record is a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence

SEQUENCE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts_ms", "bigint"),
    ("lsn", "bigint"),
    ("kafka_partition", "int"),
    ("kafka_offset", "bigint"),
)

METADATA_COLUMNS: tuple[tuple[str, str], ...] = (
    *SEQUENCE_COLUMNS,
    ("cdc_op", "string"),
    ("ingested_at", "timestamp"),
)

SEQUENCE = tuple(name for name, _ in SEQUENCE_COLUMNS)
# the ops of a change the pipeline applies: create, update, snapshot read, delete
VALID_OPS = ("c", "u", "r", "d")

# How changes of one key are ordered (CDC_SEQUENCE). The same four columns,
# compared as one tuple, in one of two orders:
# * "ts_ms" (default): commit time first, LSN breaks ties. Right for any
#   source whose ts_ms is its commit time.
# * "lsn": WAL position first, independent of clocks (Postgres' WAL order).
SEQUENCE_ORDERS: dict[str, tuple[str, ...]] = {
    "ts_ms": SEQUENCE,
    "lsn": ("lsn", "ts_ms", "kafka_partition", "kafka_offset"),
}
# table property recording the order a table was built with
SEQUENCE_PROPERTY = "cdc.sequence-order"
RESERVED = {name for name, _ in METADATA_COLUMNS}

# the tombstone table's column holding the row a primary-key change's delete removed:
# the other columns and the version's sequence (jobs.transforms.key_change_images)
IMAGE = "image"
# the tombstone table's own columns beside the key and the sequence: no key column
# may take these names (the other columns are not in the tombstone table)
TOMBSTONE_OWN = ("deleted_at", IMAGE)


def image_type(columns: Sequence[tuple[str, str]], *, key: Sequence[str]) -> str:
    """The Spark SQL type of the tombstone table's ``image``, for a table's columns."""
    fields = [(n, t) for n, t in columns if n not in key] + list(SEQUENCE_COLUMNS)
    return "struct<" + ", ".join(f"`{n}`: {t}" for n, t in fields) + ">"


DLQ_COLUMNS: tuple[tuple[str, str], ...] = (
    ("pipeline_id", "string"),
    ("topic", "string"),
    ("kafka_partition", "int"),
    ("kafka_offset", "bigint"),
    ("kafka_timestamp", "timestamp"),
    ("raw_key", "binary"),
    ("raw_value", "binary"),
    ("reason", "string"),
    ("batch_id", "bigint"),
    ("dead_lettered_at", "timestamp"),
    # set by a dead-letter replay (jobs.dlq_replay): which one, when, and what became of it
    # ('applied', or 'failed: <reason>'); a dead letter is never deleted
    ("replay_id", "string"),
    ("replayed_at", "timestamp"),
    ("replay_outcome", "string"),
)
# A history table (SCD type 2) holds the source's columns, the sequence and cdc_op of
# each version, then these: the version is the row from valid_from (its source commit
# time) until valid_to (the next version's; null while current); a delete is a version
# of its own (cdc_op 'd', only the key). _toasted names the columns the change left
# unavailable (TOAST): they hold the value of the version before.
HISTORY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("valid_from", "timestamp"),
    ("valid_to", "timestamp"),
    ("_toasted", "array<string>"),
    ("recorded_at", "timestamp"),
)
DLQ_REPLAY_COLUMNS = ("replay_id", "replayed_at", "replay_outcome")

# Snapshot summary keys written with every commit of the job.
SUMMARY_PIPELINE = "cdc.pipeline-id"
SUMMARY_TOPIC = "cdc.topic"
SUMMARY_BATCH = "cdc.batch-id"
SUMMARY_REPLAY = "cdc.replay-id"  # a dead-letter replay's commit (jobs.dlq_replay)
SUMMARY_OFFSETS = "cdc.offsets"  # cumulative end offsets after this commit {partition: next}
SUMMARY_RANGE = "cdc.batch-range"  # this batch {partition: [start, end)}
SUMMARY_METRICS = "cdc.metrics"
# the columns changes of the pipeline have left unavailable (TOAST), a JSON list
SUMMARY_UNAVAILABLE = "cdc.unavailable-columns"

# Widening Iceberg allows in place, by Spark SQL type name.
SAFE_WIDENING = {("int", "bigint"), ("float", "double")}
