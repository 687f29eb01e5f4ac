"""Faithful Debezium change events for ``public.articles``, deterministic by seed.

A small simulation of a Postgres table behind the Debezium Postgres connector:
each change gets a transaction id, a commit time (``source.ts_ms``), a WAL
position (``source.lsn``) and Debezium's encodings (``timestamptz`` as an
ISO-8601 string, ``integer`` as int32). It emits what Debezium writes to
Kafka: the envelope with or without its ``schema``/``payload`` wrapper, or the
flattened ``ExtractNewRecordState`` form; deletes followed by a tombstone;
snapshot reads (``op = r``); TOAST placeholders for an untouched ``body``;
primary-key changes as delete + create at one LSN; several changes of one row
in one transaction; commits in the same millisecond; and at-least-once
redelivery of a window of older events, as after a connector restart.

Usage::

    python -m cdc_iceberg.generator --events 10000 --keys 1000 --seed 7

writes to ``KAFKA_TOPIC`` at ``KAFKA_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cdc_iceberg.settings import Settings

TOAST_PLACEHOLDER = "__debezium_unavailable_value"
COLUMNS = (
    "article_id",
    "title",
    "url",
    "source",
    "author",
    "body",
    "published_at",
    "updated_at",
    "word_count",
)
DEBEZIUM_VERSION = "3.6.1.Final"
_WORDS = (
    "market",
    "data",
    "river",
    "policy",
    "climate",
    "vote",
    "league",
    "model",
    "cloud",
    "chip",
    "energy",
    "health",
    "storm",
    "court",
    "rocket",
    "trade",
    "film",
    "city",
    "school",
    "bank",
    "ocean",
    "crop",
    "virus",
    "port",
    "union",
)
_SOURCES = ("Reuters", "AP", "BBC", "Le Monde", "NHK", "Der Spiegel", "El País", "ABC")
_AUTHORS = ("Ada Lovelace", "Zoë Ångström", "José Núñez", "李雷", "Ivan Petrov", None)


@dataclass(frozen=True)
class Message:
    """One Kafka record as Debezium would write it."""

    key: bytes | None
    value: bytes | None
    partition: int


@dataclass
class _Change:
    op: str
    key: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    ts_ms: int
    lsn: int
    tx_id: int
    snapshot: str = "false"


def partition_for(key: str, partitions: int) -> int:
    """Stable key -> partition mapping (all changes of one key stay in order)."""
    return zlib.crc32(key.encode()) % partitions


def iso_micros(epoch_ms: int, extra_micros: int = 0) -> str:
    """Debezium's ZonedTimestamp: ISO-8601 in UTC with microseconds."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    moment = moment.replace(microsecond=(epoch_ms % 1000) * 1000 + extra_micros % 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SimulatedTable:
    """What every simulated table shares: its commit clock, transaction ids and WAL
    positions, and the random mix of changes of :meth:`random_history`.

    A subclass holds ``rows`` (key -> row, in insertion order) and makes the changes
    (``snapshot``, ``insert``, ``update``, ``delete``, :meth:`_key_change`) and their
    messages (``to_messages``); each change it makes goes to ``_emitted``.
    """

    start_ms: int
    rows: dict[Any, dict[str, Any]]
    _rng: random.Random
    _clock_ms: int
    _lsn: int
    _tx: int
    _next_id: int
    _emitted: list[Any]

    def _start(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._clock_ms = self.start_ms
        self._lsn = 20_000_000
        self._tx = 700
        self._next_id = 0
        self._emitted = []

    def _tick(self, same_ms: bool = False) -> None:
        if not same_ms:
            self._clock_ms += self._rng.randint(1, 40)
        self._tx += 1

    def _next_lsn(self) -> int:
        self._lsn += self._rng.randint(8, 400)
        return self._lsn

    def transaction_of_updates(self, key: Any, count: int) -> list[Any]:
        """Several updates of one row in one transaction: one commit time, rising LSNs."""
        self._tick()
        source: Any = self  # the subclass's own update
        return [source.update(key, in_tx=True) for _ in range(count)]

    def _key_change(self, key: Any, toast_share: float) -> tuple[Any, Any]:
        """A change of ``key`` to a new one in a random history: delete + create."""
        raise NotImplementedError

    def _before_change(self, produced: int, events: int) -> None:
        """Runs in a random history before each change is drawn (``produced`` so far)."""

    def random_history(
        self,
        events: int,
        keys: int,
        *,
        snapshot_rows: int = 0,
        update_share: float = 0.6,
        delete_share: float = 0.1,
        toast_share: float = 0.1,
        same_ms_share: float = 0.2,
        pk_change_share: float = 0.01,
        multi_update_share: float = 0.03,
        redelivery_share: float = 0.0,
    ) -> list[Any]:
        """A reproducible mix of changes over about ``keys`` keys, as Kafka messages."""
        src: Any = self  # the subclass's own changes and messages
        out: list[Any] = src.to_messages(src.snapshot(snapshot_rows))
        rng = self._rng
        live: list[Any] = list(self.rows)
        produced = 0
        while produced < events:
            self._before_change(produced, events)
            roll = rng.random()
            same_ms = rng.random() < same_ms_share
            if live and roll < delete_share:
                key = live.pop(rng.randrange(len(live)))
                changes = [src.delete(key, same_ms)]
            elif live and roll < delete_share + pk_change_share:
                key = live.pop(rng.randrange(len(live)))
                changes = list(self._key_change(key, toast_share))
                live.append(self._newest_key())
            elif live and roll < delete_share + pk_change_share + multi_update_share:
                key = live[rng.randrange(len(live))]
                changes = self.transaction_of_updates(key, rng.randint(2, 4))
            elif live and (roll < delete_share + update_share or len(live) >= keys):
                # skewed to recent keys: the newest third of the live keys gets most updates
                index = len(live) - 1 - int(abs(rng.gauss(0, max(1, len(live) / 3)))) % len(live)
                key = live[index]
                changes = [src.update(key, toast=rng.random() < toast_share, same_ms=same_ms)]
            else:
                changes = [src.insert(same_ms=same_ms)]
                live.append(self._newest_key())
            out += src.to_messages(changes)
            produced += len(changes)
            if redelivery_share and rng.random() < redelivery_share and len(self._emitted) > 5:
                start = rng.randrange(max(1, len(self._emitted) - 20), len(self._emitted))
                out += src.to_messages(self._emitted[start:], redelivered=True)
        return out

    def _newest_key(self) -> Any:
        """The key of the row inserted last (an insert's, or a key change's new key)."""
        return next(reversed(self.rows))


@dataclass
class ArticleSource(SimulatedTable):
    """A simulated ``public.articles`` table and the connector in front of it."""

    seed: int = 0
    partitions: int = 3
    wrapper: bool = True
    event_format: str = "envelope"
    body_bytes: int = 600
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    _rng: random.Random = field(init=False, repr=False)
    _clock_ms: int = field(init=False, repr=False)
    _lsn: int = field(init=False, repr=False)
    _tx: int = field(init=False, repr=False)
    _next_id: int = field(init=False, repr=False)
    _emitted: list[_Change] = field(init=False, repr=False, default_factory=list)

    def __post_init__(self) -> None:
        self._start(self.seed)

    # -- the simulated database ------------------------------------------

    def _new_key(self) -> str:
        self._next_id += 1
        return f"art-{self.seed}-{self._next_id:07d}"

    def _text(self, words: int) -> str:
        return " ".join(self._rng.choice(_WORDS) for _ in range(words))

    def _row(self, key: str) -> dict[str, Any]:
        body = self._text(max(1, self.body_bytes // 6))
        published = self._clock_ms - self._rng.randint(0, 86_400_000)
        return {
            "article_id": key,
            "title": self._text(6).title(),
            "url": f"https://news.example/{key}",
            "source": self._rng.choice(_SOURCES),
            "author": self._rng.choice(_AUTHORS),
            "body": body,
            "published_at": iso_micros(published, self._rng.randint(0, 999)),
            "updated_at": iso_micros(self._clock_ms, self._rng.randint(0, 999)),
            "word_count": len(body.split()),
        }

    def snapshot(self, count: int) -> list[_Change]:
        """Initial snapshot: ``op = r`` for ``count`` existing rows, one LSN, snapshot flags."""
        changes = []
        lsn = self._next_lsn()
        self._tick()
        for i in range(count):
            key = self._new_key()
            row = self._row(key)
            self.rows[key] = row
            flag = "first" if i == 0 else ("last" if i == count - 1 else "true")
            changes.append(_Change("r", key, None, dict(row), self._clock_ms, lsn, self._tx, flag))
        self._emitted += changes
        return changes

    def insert(self, key: str | None = None, same_ms: bool = False) -> _Change:
        self._tick(same_ms)
        key = key or self._new_key()
        row = self._row(key)
        self.rows[key] = row
        change = _Change("c", key, None, dict(row), self._clock_ms, self._next_lsn(), self._tx)
        self._emitted.append(change)
        return change

    def update(
        self, key: str, toast: bool = False, same_ms: bool = False, in_tx: bool = False
    ) -> _Change:
        if not in_tx:
            self._tick(same_ms)
        row = self.rows[key]
        row["title"] = self._text(6).title()
        row["word_count"] = self._rng.randint(50, 5000)
        row["updated_at"] = iso_micros(self._clock_ms, self._rng.randint(0, 999))
        if not toast and self._rng.random() < 0.3:
            row["body"] = self._text(max(1, self.body_bytes // 6))
        after = dict(row)
        if toast:
            after["body"] = TOAST_PLACEHOLDER
        change = _Change("u", key, None, after, self._clock_ms, self._next_lsn(), self._tx)
        self._emitted.append(change)
        return change

    def delete(self, key: str, same_ms: bool = False) -> _Change:
        self._tick(same_ms)
        self.rows.pop(key)
        before: dict[str, Any] = {c: None for c in COLUMNS}
        before["article_id"] = key
        change = _Change("d", key, before, None, self._clock_ms, self._next_lsn(), self._tx)
        self._emitted.append(change)
        return change

    def change_key(self, old: str) -> tuple[_Change, _Change]:
        """``UPDATE ... SET article_id``: Debezium emits delete(old) + create(new) at one LSN."""
        self._tick()
        lsn = self._next_lsn()
        row = self.rows.pop(old)
        new = self._new_key()
        row = dict(row, article_id=new)
        self.rows[new] = row
        before: dict[str, Any] = {c: None for c in COLUMNS}
        before["article_id"] = old
        gone = _Change("d", old, before, None, self._clock_ms, lsn, self._tx)
        born = _Change("c", new, None, dict(row), self._clock_ms, lsn, self._tx)
        self._emitted += [gone, born]
        return gone, born

    def truncate(self) -> _Change:
        self._tick()
        self.rows.clear()
        change = _Change("t", "", None, None, self._clock_ms, self._next_lsn(), self._tx)
        self._emitted.append(change)
        return change

    # -- workloads -------------------------------------------------------

    def _key_change(self, key: Any, toast_share: float) -> tuple[_Change, _Change]:
        return self.change_key(key)

    # -- encoding --------------------------------------------------------

    def to_messages(self, changes: Iterable[_Change], redelivered: bool = False) -> list[Message]:
        out: list[Message] = []
        for change in changes:
            out.append(self.encode(change, redelivered))
            if change.op == "d" and self.event_format == "envelope":
                # Debezium follows a delete with a tombstone so log compaction can drop the key
                out.append(Message(self._key_bytes(change.key), None, out[-1].partition))
        return out

    def encode(self, change: _Change, redelivered: bool = False) -> Message:
        partition = partition_for(change.key, self.partitions) if change.key else 0
        # the envelope ts_ms is the connector's processing time; a redelivery stamps a new one
        delay = self._rng.randint(5, 900) + (60_000 if redelivered else 0)
        if self.event_format == "flattened":
            return Message(
                self._key_bytes(change.key) if change.key else None,
                json.dumps(self._flat(change)).encode(),
                partition,
            )
        source = {
            "version": DEBEZIUM_VERSION,
            "connector": "postgresql",
            "name": "neuronews",
            "ts_ms": change.ts_ms,
            "snapshot": change.snapshot,
            "db": "neuronews",
            "sequence": json.dumps([str(change.lsn - 8), str(change.lsn)]),
            "ts_us": change.ts_ms * 1000,
            "ts_ns": change.ts_ms * 1_000_000,
            "schema": "public",
            "table": "articles",
            "txId": change.tx_id,
            "lsn": change.lsn,
            "xmin": None,
        }
        payload = {
            "before": change.before,
            "after": change.after,
            "source": source,
            "transaction": None,
            "op": change.op,
            "ts_ms": change.ts_ms + delay,
            "ts_us": (change.ts_ms + delay) * 1000,
            "ts_ns": (change.ts_ms + delay) * 1_000_000,
        }
        value = {"schema": envelope_schema(), "payload": payload} if self.wrapper else payload
        key = self._key_bytes(change.key) if change.key else None
        return Message(key, json.dumps(value, ensure_ascii=False).encode(), partition)

    def _flat(self, change: _Change) -> dict[str, Any]:
        row = change.after if change.after is not None else change.before
        flat = dict(row or {})
        flat["__op"] = change.op
        flat["__source_ts_ms"] = change.ts_ms
        flat["__lsn"] = change.lsn
        flat["__deleted"] = "true" if change.op == "d" else "false"
        return flat

    def _key_bytes(self, key: str) -> bytes:
        if self.wrapper and self.event_format == "envelope":
            return json.dumps({"schema": key_schema(), "payload": {"article_id": key}}).encode()
        return json.dumps({"article_id": key}).encode()


def _field(name: str, kind: str, optional: bool = True, logical: str | None = None) -> dict:
    spec: dict[str, Any] = {"type": kind, "optional": optional, "field": name}
    if logical:
        spec["name"] = logical
        spec["version"] = 1
    return spec


def row_schema(name: str = "neuronews.public.articles.Value") -> dict[str, Any]:
    return {
        "type": "struct",
        "fields": [
            _field("article_id", "string", optional=False),
            _field("title", "string"),
            _field("url", "string"),
            _field("source", "string"),
            _field("author", "string"),
            _field("body", "string"),
            _field("published_at", "string", logical="io.debezium.time.ZonedTimestamp"),
            _field("updated_at", "string", logical="io.debezium.time.ZonedTimestamp"),
            _field("word_count", "int32"),
        ],
        "optional": True,
        "name": name,
    }


def key_schema() -> dict[str, Any]:
    return {
        "type": "struct",
        "fields": [_field("article_id", "string", optional=False)],
        "optional": False,
        "name": "neuronews.public.articles.Key",
    }


def envelope_schema() -> dict[str, Any]:
    before = dict(row_schema(), field="before")
    after = dict(row_schema(), field="after")
    return {
        "type": "struct",
        "fields": [
            before,
            after,
            {
                "type": "struct",
                "fields": [],
                "optional": False,
                "field": "source",
                "name": "io.debezium.connector.postgresql.Source",
            },
            {"type": "struct", "fields": [], "optional": True, "field": "transaction"},
            _field("op", "string", optional=False),
            _field("ts_ms", "int64"),
            _field("ts_us", "int64"),
            _field("ts_ns", "int64"),
        ],
        "optional": False,
        "name": "neuronews.public.articles.Envelope",
        "version": 2,
    }


# -- Kafka ---------------------------------------------------------------


@dataclass(frozen=True)
class Produced:
    """A message and where Kafka put it."""

    message: Message
    partition: int
    offset: int


def produce(
    settings: Settings,
    messages: Sequence[Message],
    *,
    transactional_id: str | None = None,
    abort: bool = False,
) -> list[Produced]:
    """Write ``messages`` in order and return their partitions and offsets.

    With ``transactional_id`` they are written in one Kafka transaction, which
    is aborted when ``abort`` is set (read_committed consumers never see them).
    """
    records = [(m.key, m.value, m.partition, ()) for m in messages]
    placed = send_records(
        settings, settings.kafka_topic, records, transactional_id=transactional_id, abort=abort
    )
    return [Produced(m, p, o) for m, (p, o) in zip(messages, placed, strict=True)]


def send_records(
    settings: Settings,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, int | None, Sequence[tuple[str, bytes]]]],
    *,
    transactional_id: str | None = None,
    abort: bool = False,
) -> list[tuple[int, int]]:
    """Write ``(key, value, partition, headers)`` records to ``topic`` in order; return
    each one's partition and offset (one Kafka transaction with ``transactional_id``)."""
    from cdc_iceberg import kafka_offsets

    with kafka_offsets.producer(
        settings,
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
        enable_idempotence=True,
        transactional_id=transactional_id,
    ) as producer:
        if transactional_id:
            producer.init_transactions()
            producer.begin_transaction()
        futures = [
            producer.send(
                topic, key=key, value=value, partition=partition, headers=list(headers) or None
            )
            for key, value, partition, headers in records
        ]
        producer.flush()
        if transactional_id:
            if abort:
                producer.abort_transaction()
            else:
                producer.commit_transaction()
        results = [f.get(timeout=60) for f in futures]
    return [(r.partition, r.offset) for r in results]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write generated Debezium events to Kafka.")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--snapshot-rows", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--no-wrapper", action="store_true", help="omit schema/payload wrapper")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    from cdc_iceberg.kafka_offsets import ensure_topic

    ensure_topic(settings, partitions=args.partitions)
    source = ArticleSource(
        seed=args.seed,
        partitions=args.partitions,
        wrapper=not args.no_wrapper,
        event_format=settings.event_format,
    )
    messages = source.random_history(args.events, args.keys, snapshot_rows=args.snapshot_rows)
    produced = produce(settings, messages)
    print(
        f"wrote {len(produced)} messages ({len(source.rows)} live rows) "
        f"to {settings.kafka_topic} at {settings.kafka_bootstrap_servers}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
