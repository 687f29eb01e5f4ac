"""Workloads: generated Debezium events into Kafka, and preloaded rows straight into Iceberg.

Used by ``bench/run.py`` (events) and ``bench/worker.py`` (preload)::

    cd /work/main && nice -n 19 .venv/bin/python bench/run.py --quick

Events come from :class:`cdc_iceberg.generator.ArticleSource` with a fixed
seed, so every run and every contender sees the same records: about 60%
updates skewed to the newest keys, 30% creates, 10% deletes (each followed by
its Kafka tombstone), TOAST placeholders, same-millisecond commits, primary
key changes and multi-update transactions, in Debezium's JSON without the
``schema`` wrapper (about 1 KB a record).

The preload is the table's history before the benchmark: rows built by Spark
from ``range(n)`` with deterministic hashes and written with one Iceberg
append, which is far faster than sending them through Kafka. Preloaded keys
(``pre-000000001``...) are disjoint from the generated keys
(``art-<seed>-...``): the changes hit the recent articles, the preload is the
cold part of the table that every MERGE still has to join against.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from bench.common import BODY_BYTES, PARTITIONS, SEED

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from cdc_iceberg.settings import Settings

_CHUNK = 25_000
_WORDS = (
    *("market", "data", "river", "policy", "climate", "vote", "league", "model", "cloud"),
    *("chip", "energy", "health", "storm", "court", "rocket", "trade", "film", "city"),
    *("school", "bank", "ocean", "crop", "virus", "port", "union"),
)
_SOURCES = ("Reuters", "AP", "BBC", "Le Monde", "NHK", "Der Spiegel", "El País", "ABC")
_AUTHORS = ("Ada Lovelace", "Zoë Ångström", "José Núñez", "李雷", "Ivan Petrov")
PRELOAD_START_MS = 1_735_689_600_000  # 2025-01-01: older than every generated change


@dataclasses.dataclass
class Workload:
    """What was written to the topic."""

    changes: int
    records: int
    kafka_tombstones: int
    ops: dict[str, int]
    live_keys: int
    mean_record_bytes: float
    generate_s: float
    produce_s: float
    end_offsets: dict[int, int]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def produce_workload(
    settings: Settings, *, events: int, keys: int, seed: int = SEED, body_bytes: int = BODY_BYTES
) -> Workload:
    """Generate ``events`` changes over about ``keys`` keys and write them to the topic."""
    from cdc_iceberg.generator import ArticleSource, produce
    from cdc_iceberg.kafka_offsets import end_offsets, ensure_topic

    ensure_topic(settings, partitions=PARTITIONS)
    source = ArticleSource(seed=seed, partitions=PARTITIONS, wrapper=False, body_bytes=body_bytes)
    ops: collections.Counter[str] = collections.Counter()
    changes = records = tombstones = 0
    value_bytes = 0
    generate_s = produce_s = 0.0
    while changes < events:
        started = time.monotonic()
        messages = source.random_history(min(_CHUNK, events - changes), keys)
        emitted = source._emitted  # the source's own history, kept only for redelivery (off)
        ops.update(change.op for change in emitted)
        changes += len(emitted)
        emitted.clear()
        generate_s += time.monotonic() - started
        started = time.monotonic()
        produce(settings, messages)
        produce_s += time.monotonic() - started
        records += len(messages)
        tombstones += sum(1 for m in messages if m.value is None)
        value_bytes += sum(len(m.value) + len(m.key or b"") for m in messages if m.value)
    return Workload(
        changes=changes,
        records=records,
        kafka_tombstones=tombstones,
        ops=dict(sorted(ops.items())),
        live_keys=len(source.rows),
        mean_record_bytes=round(value_bytes / max(1, records - tombstones), 1),
        generate_s=round(generate_s, 2),
        produce_s=round(produce_s, 2),
        end_offsets=end_offsets(settings),
    )


# -- preload (runs in a worker, with Spark) ----------------------------------------


def _pick(options: tuple[str, ...] | list[str], salt: int) -> str:
    """SQL: a deterministic choice among ``options`` for the row ``id``."""
    quoted = ", ".join("'" + o.replace("'", "''") + "'" for o in options)
    return f"element_at(array({quoted}), cast(pmod(hash(id, {salt}), {len(options)}) + 1 AS int))"


def _text(words: int, salt: int) -> str:
    quoted = ", ".join(f"'{w}'" for w in _WORDS)
    return (
        f"array_join(transform(sequence(1, {words}), i -> element_at(array({quoted}), "
        f"cast(pmod(hash(id, i, {salt}), {len(_WORDS)}) + 1 AS int))), ' ')"
    )


def preload_frame(spark: SparkSession, rows: int, body_bytes: int = BODY_BYTES) -> DataFrame:
    """``rows`` article rows with every column of the product's live table."""
    body_words = max(1, body_bytes // 6)
    frame = spark.range(0, rows, numPartitions=max(2, rows // 250_000)).selectExpr(
        "id",
        "concat('pre-', lpad(cast(id AS string), 9, '0')) AS article_id",
        f"initcap({_text(6, 1)}) AS title",
        "concat('https://news.example/pre-', cast(id AS string)) AS url",
        f"{_pick(_SOURCES, 2)} AS source",
        f"{_pick(_AUTHORS, 3)} AS author",
        f"{_text(body_words, 4)} AS body",
        f"{PRELOAD_START_MS} + id * 20 AS ts_ms",
    )
    return frame.selectExpr(
        "article_id",
        "title",
        "url",
        "source",
        "author",
        "body",
        "timestamp_millis(ts_ms - pmod(hash(id, 5), 86400000)) AS published_at",
        "timestamp_millis(ts_ms) AS updated_at",
        f"cast({body_words} AS int) AS word_count",
        "ts_ms",
        "1000 + id * 16 AS lsn",
        "cast(pmod(hash(article_id), 3) AS int) AS kafka_partition",
        "cast(-1 AS bigint) AS kafka_offset",
        "'r' AS cdc_op",
        "current_timestamp() AS ingested_at",
    )
