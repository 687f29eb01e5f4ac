"""The tables a deployment mirrors, from one config file (``pipelines.yaml``).

Each entry names a source table and says where its changes are and where
they go; a table whose events carry no schema blocks (JsonConverter with
``schemas.enable=false``, or the flattened form) declares its schema here::

    topics: neuronews.public.*            # optional: every topic matching it is a table
    tables:
      public.articles:                    # the source table, schema.table
        topic: neuronews.public.articles  # default: <prefix>.<schema>.<table>
        iceberg_table: neuronews.articles # default: see iceberg_name()
        history: true                     # also keep every version (<iceberg_table>_history)
        buckets: 8                        # bucket(8, ...) partitioning; 0: none (ICEBERG_BUCKETS)
        bucket_column: article_id         # the key column bucketed (default: the first bucketable)
        schema:                           # only for events without schema blocks
          key: [article_id]
          columns:
            article_id: string
            word_count: int
            price: {type: "decimal(10,2)", codec: decimal}

``topics`` is a glob over topic names (``*`` any run of characters, ``?`` one,
``[...]`` a set): each topic that matches and no entry names is mirrored by the
naming rule, its schema from the events, so a table created in Postgres later is
picked up by the next run. A topic ``<prefix>.<schema>.<table>`` is the source
table ``<schema>.<table>`` and goes to the Iceberg table ``<namespace>.<table>``
(``<namespace>.<schema>_<table>`` outside the ``public`` schema); an entry
overrides any of it.

Types are Spark SQL type names; ``codec`` says how a column's event text
decodes when its type alone does not (see :mod:`cdc_iceberg.debezium_types`).
The file is read and checked once, at load; every mistake is reported with
the entry it is in.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdc_iceberg.settings import Settings
from cdc_iceberg.table_model import TableModel, TableModelError

_SOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*\Z")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\.[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
_ENTRY_KEYS = {"topic", "iceberg_table", "schema", "history", "buckets", "bucket_column"}
_FILE_KEYS = {"topics", "tables"}
# how a table is named when asked for: its source table or its Iceberg table
_TABLE_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,127}\.[A-Za-z_][A-Za-z0-9_$]{0,127}\Z")


class PipelinesError(ValueError):
    """The pipelines file cannot be used as written."""


@dataclass(frozen=True)
class TableConfig:
    """One mirrored table: its source name, topic, Iceberg table and declared schema."""

    source: str
    topic: str
    iceberg_table: str
    declared: TableModel | None = None
    # keep every version of every row too, in <iceberg_table>_history (SCD type 2)
    history: bool = False
    # bucket(buckets, bucket_column) partitioning of its tables; None: ICEBERG_BUCKETS,
    # 0: unpartitioned; "": the first key column Iceberg can bucket
    buckets: int | None = None
    bucket_column: str = ""

    def settings(self, base: Settings) -> Settings:
        """``base`` pointed at this table: its topic, tables, and checkpoint of its own."""
        return base.replace(
            kafka_topic=self.topic,
            iceberg_table=self.iceberg_table,
            checkpoint_location=f"{base.checkpoint_location.rstrip('/')}/{self.iceberg_table}",
        )


def iceberg_name(source: str, namespace: str) -> str:
    """The Iceberg table of source table ``schema.table`` when no entry names one."""
    schema, table = source.split(".", 1)
    name = table if schema == "public" else f"{schema}_{table}"
    return f"{namespace}.{re.sub(r'[^A-Za-z0-9_]', '_', name)[:128]}"


@dataclass(frozen=True)
class PipelinesConfig:
    tables: tuple[TableConfig, ...] = ()
    topics: str = ""  # a glob: every matching topic no entry names is a table too
    namespace: str = "neuronews"

    def resolve(self, topics: Iterable[str]) -> tuple[TableConfig, ...]:
        """The tables to mirror, given the topics the broker has: every entry, then each
        topic matching ``topics`` that no entry names (by the naming rule), by name."""
        named = {t.topic for t in self.tables}
        found = []
        if self.topics:
            for topic in sorted(set(topics)):
                if topic in named or not fnmatch.fnmatchcase(topic, self.topics):
                    continue
                parts = topic.split(".")
                if len(parts) < 3:
                    continue  # not a table's topic (<prefix>.<schema>.<table>)
                source = ".".join(parts[-2:])
                if not _SOURCE_NAME.match(source):
                    continue
                found.append(TableConfig(source, topic, iceberg_name(source, self.namespace)))
        out = (*self.tables, *found)
        seen: dict[str, str] = {}
        for table in out:
            if table.iceberg_table in seen:
                raise PipelinesError(
                    f"topics {seen[table.iceberg_table]} and {table.topic} would both go to "
                    f"{table.iceberg_table}: name one of them in an entry with its iceberg_table"
                )
            seen[table.iceberg_table] = table.topic
        return out

    def find(self, name: str, topics: Iterable[str] = ()) -> TableConfig:
        """The table named ``name``: its source (schema.table) or its Iceberg table."""
        tables = self.resolve(topics)
        for table in tables:
            if name in (table.source, table.iceberg_table):
                return table
        known = ", ".join(t.iceberg_table for t in tables) or "none"
        raise PipelinesError(f"no table {name[:260]!r} is configured (configured: {known})")

    def table_settings(
        self, base: Settings, name: str | None = None, topics: Iterable[str] = ()
    ) -> Settings:
        """``base`` for the table ``name`` (see :meth:`find`); without a name, for the table
        of ``base.kafka_topic`` if one is configured, else ``base`` as it is."""
        if name:
            return self.find(name, topics).settings(base)
        entry = next((t for t in self.resolve(topics) if t.topic == base.kafka_topic), None)
        return entry.settings(base) if entry else base

    def settings_for(
        self, base: Settings, name: str | None, list_topics: Callable[[], Iterable[str]]
    ) -> Settings:
        """:meth:`table_settings`, asking the broker for its topics (``list_topics``) only
        when the name is not an entry of the file and the file has a topic pattern."""
        if not name:
            return self.table_settings(base, None, [base.kafka_topic])
        if not _TABLE_REF.match(name):
            raise PipelinesError(
                f"{name[:80]!r} is not a table name (schema.table or namespace.table)"
            )
        try:
            return self.table_settings(base, name)
        except PipelinesError:
            if not self.topics:
                raise
        return self.table_settings(base, name, list_topics())

    def for_topic(self, topic: str) -> TableConfig | None:
        return next((t for t in self.tables if t.topic == topic), None)

    def declared_model(self, topic: str) -> TableModel | None:
        """The declared schema of the table behind ``topic``, if the file gives one."""
        entry = self.for_topic(topic)
        return entry.declared if entry else None


def load(
    path: str | Path, *, topic_prefix: str = "neuronews", namespace: str = "neuronews"
) -> PipelinesConfig:
    """Read and check a pipelines file; a missing file is an empty configuration."""
    file = Path(path)
    if not file.is_file():
        return PipelinesConfig()
    import yaml

    try:
        document = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise PipelinesError(f"{file}: cannot be read as YAML ({error})") from None
    return parse(document, str(file), topic_prefix=topic_prefix, namespace=namespace)


def parse(
    document: Any, where: str, *, topic_prefix: str = "neuronews", namespace: str = "neuronews"
) -> PipelinesConfig:
    """A :class:`PipelinesConfig` from the parsed YAML ``document`` of file ``where``."""
    if document is None:
        return PipelinesConfig()
    if not isinstance(document, Mapping) or set(document) - _FILE_KEYS:
        raise PipelinesError(f"{where}: expected a mapping with keys 'topics' and 'tables'")
    pattern = document.get("topics") or ""
    if not isinstance(pattern, str):
        raise PipelinesError(f"{where}: 'topics' must be one glob, e.g. neuronews.public.*")
    tables = document.get("tables") or {}
    if not isinstance(tables, Mapping):
        raise PipelinesError(f"{where}: 'tables' must map source tables (schema.table) to entries")
    out: list[TableConfig] = []
    for source, entry in tables.items():
        out.append(_entry(str(source), entry, where, topic_prefix, namespace))
    for field in ("topic", "iceberg_table"):
        seen: dict[str, str] = {}
        for table in out:
            value = getattr(table, field)
            if value in seen:
                raise PipelinesError(
                    f"{where}: tables {seen[value]} and {table.source} share {field} {value!r}"
                )
            seen[value] = table.source
    return PipelinesConfig(tuple(out), pattern, namespace)


def _entry(source: str, entry: Any, where: str, topic_prefix: str, namespace: str) -> TableConfig:
    label = f"{where}: table {source}"
    if not _SOURCE_NAME.match(source):
        raise PipelinesError(f"{label}: expected the source table as schema.table")
    entry = entry or {}
    if not isinstance(entry, Mapping):
        raise PipelinesError(f"{label}: expected a mapping of {', '.join(sorted(_ENTRY_KEYS))}")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise PipelinesError(
            f"{label}: unknown setting(s) {', '.join(map(str, unknown))} "
            f"(expected {', '.join(sorted(_ENTRY_KEYS))})"
        )
    topic = entry.get("topic", f"{topic_prefix}.{source}")
    iceberg_table = entry.get("iceberg_table", iceberg_name(source, namespace))
    if not isinstance(topic, str) or not topic:
        raise PipelinesError(f"{label}: topic must be a topic name")
    if not isinstance(iceberg_table, str) or not _TABLE_NAME.match(iceberg_table):
        raise PipelinesError(
            f"{label}: iceberg_table {iceberg_table!r} must be namespace.table "
            "(letters, digits and _)"
        )
    history = entry.get("history", False)
    if not isinstance(history, bool):
        raise PipelinesError(f"{label}: history must be true or false")
    buckets = entry.get("buckets")
    if buckets is not None and (
        isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 0
    ):
        raise PipelinesError(f"{label}: buckets must be a whole number, 0 for no partitioning")
    bucket_column = entry.get("bucket_column") or ""
    if not isinstance(bucket_column, str):
        raise PipelinesError(f"{label}: bucket_column must name one of the key columns")
    declared = None
    if entry.get("schema") is not None:
        if not isinstance(entry["schema"], Mapping):
            raise PipelinesError(f"{label}: schema must be a mapping with key and columns")
        try:
            declared = TableModel.from_declared(entry["schema"], source=source)
        except TableModelError as error:
            raise PipelinesError(f"{label}: {error}") from None
    if declared is not None and bucket_column:
        try:
            declared.partition_column(1, bucket_column)
        except TableModelError as error:
            raise PipelinesError(f"{label}: {error}") from None
    return TableConfig(source, topic, iceberg_table, declared, history, buckets, bucket_column)
