"""The model of one mirrored table: its key, its columns and their types.

Everything that touches a table's rows takes a :class:`TableModel`: the parser
(which fields of the event are the key), the typing (how each column's JSON
text becomes a value), the collapse and the MERGE (what one key is), the
tombstones and the validation (duplicate and null keys). Nothing is written
for one table.

A model comes from one of three places, in this order:

1. the Iceberg table itself, once it exists: its columns and types, its
   identifier fields (the key, in key order) and the ``cdc.column-codecs``
   property (how each column's event text decodes, where the Spark type alone
   does not say);
2. a declared schema (``pipelines.yaml``), for events without schema blocks;
3. the Debezium schema blocks of the events (JsonConverter with
   ``schemas.enable=true``): the key columns from the Kafka key's schema, the
   columns and types from the value schema's ``after`` struct.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cdc_iceberg.schema import RESERVED, TOMBSTONE_OWN
from cdc_iceberg.settings import SettingsError, check_identifier

# table property of the live table: {column: codec} for the columns whose codec
# is not the one their Spark type implies (see default_codec)
CODECS_PROPERTY = "cdc.column-codecs"
# table property of the live table: its key columns in key order (a JSON list); the
# identifier fields say the same wherever Iceberg allows them (see identifiable)
KEY_PROPERTY = "cdc.key-columns"


class TableModelError(ValueError):
    """A table cannot be mirrored as described (no key, a reserved or unsafe name)."""


# the codec a column of a Spark type has unless the table says otherwise: the
# types the product has always read from plain JSON values
_DEFAULT_CODECS = {
    "string": "string",
    "int": "int",
    "smallint": "int",
    "tinyint": "int",
    "bigint": "bigint",
    "float": "float",
    "double": "double",
    "boolean": "boolean",
    "timestamp": "zoned_timestamp",
    "timestamp_ntz": "micro_timestamp",
    "date": "date",
    "binary": "bytes",
}


# Spark SQL types whose Iceberg types the bucket transform takes (not boolean,
# float, double, nor nested types)
_BUCKETABLE = re.compile(
    r"(tinyint|smallint|int|bigint|string|date|timestamp|timestamp_ntz|binary"
    r"|decimal\(\d+,\s*\d+\))\Z"
)


def identifiable(spark_type: str) -> bool:
    """Whether Iceberg takes a column of ``spark_type`` as an identifier field (not a
    floating-point number, nor a nested type)."""
    spark_type = spark_type.strip()
    return spark_type not in ("float", "double") and not spark_type.startswith(
        ("array<", "map<", "struct<")
    )


def bucketable(spark_type: str) -> bool:
    """Whether Iceberg's bucket transform takes a column of ``spark_type``."""
    return bool(_BUCKETABLE.match(spark_type.strip()))


def default_codec(spark_type: str) -> str:
    """The codec a column of ``spark_type`` decodes with when nothing else is recorded.

    Beyond the plain JSON types, Debezium's encoding under its default settings:
    a decimal's unscaled bytes, a date's days, a timestamp without zone in
    microseconds, bytes in base64.
    """
    spark_type = spark_type.strip()
    if spark_type.startswith("array<") and spark_type.endswith(">"):
        return "array:" + default_codec(spark_type[len("array<") : -1])
    if spark_type.startswith("decimal("):
        return "decimal"
    return _DEFAULT_CODECS.get(spark_type, spark_type)


@dataclass(frozen=True)
class Column:
    """One source column: its name, its Spark SQL type and how its event text decodes."""

    name: str
    spark_type: str
    codec: str = ""
    optional: bool = True

    def __post_init__(self) -> None:
        if not self.codec:
            object.__setattr__(self, "codec", default_codec(self.spark_type))


@dataclass(frozen=True)
class TableModel:
    """Key and columns of one source table, as the pipeline mirrors it."""

    key: tuple[str, ...]
    columns: tuple[Column, ...]
    # the source table, for messages ("public.articles"); not part of identity
    source: str = ""

    def __post_init__(self) -> None:
        where = f" of {self.source}" if self.source else ""
        if not self.key:
            raise TableModelError(
                f"the table{where} has no primary key: the pipeline cannot tell its rows "
                "apart. Give it one, or set REPLICA IDENTITY FULL on it and name the key "
                "columns in the connector's message.key.columns"
            )
        names = [c.name for c in self.columns]
        for name in names:
            try:
                check_identifier(name, "column")
            except SettingsError as error:
                raise TableModelError(f"column{where}: {error}") from None
            if name in RESERVED or name.startswith("_"):
                raise TableModelError(
                    f"column {name}{where} has a name the pipeline keeps for its own columns "
                    f"({', '.join(sorted(RESERVED))}, or a leading _); rename it "
                    "in the source, or with Debezium's ReplaceField transform"
                )
        if len(set(names)) != len(names):
            raise TableModelError(f"the columns{where} repeat a name: {names}")
        missing = [k for k in self.key if k not in names]
        if missing:
            raise TableModelError(f"key column(s) {missing}{where} are not columns of the table")
        clashing = [k for k in self.key if k in TOMBSTONE_OWN]
        if clashing:
            raise TableModelError(
                f"key column(s) {clashing}{where} take a name the tombstone table keeps for "
                f"its own columns ({', '.join(TOMBSTONE_OWN)}); rename them in the source, "
                "or with Debezium's ReplaceField transform"
            )

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def column_types(self) -> list[tuple[str, str]]:
        """(name, Spark SQL type) of every column, in table order."""
        return [(c.name, c.spark_type) for c in self.columns]

    @property
    def key_columns(self) -> list[Column]:
        by_name = {c.name: c for c in self.columns}
        return [by_name[k] for k in self.key]

    @property
    def bucket_column(self) -> str:
        """The key column the tables are bucketed on unless told otherwise: the first of
        the key that Iceberg can bucket ("" when none can: the tables are not partitioned)."""
        return next((c.name for c in self.key_columns if bucketable(c.spark_type)), "")

    def partition_column(self, buckets: int, column: str = "") -> str:
        """The column of ``bucket(buckets, column)`` partitioning ("": none).

        ``column`` names one of the key columns (every change of a key then lands
        in the bucket of its key, whatever the other key columns hold); empty, the
        default :attr:`bucket_column`. ``buckets`` 0 leaves the tables unpartitioned.
        """
        if buckets < 0:
            raise TableModelError(f"buckets of {self.source or 'a table'} must be 0 or more")
        if not buckets:
            return ""
        if not column:
            return self.bucket_column
        where = f" of {self.source}" if self.source else ""
        if column not in self.key:
            raise TableModelError(
                f"bucket_column {column!r}{where} is not a key column (key: {', '.join(self.key)})"
            )
        spark_type = dict(self.column_types)[column]
        if not bucketable(spark_type):
            raise TableModelError(
                f"bucket_column {column!r}{where} is of type {spark_type}, which Iceberg "
                "cannot bucket (bucket a key column of a number, decimal, date, time, "
                "timestamp, string or binary type)"
            )
        return column

    def codecs(self) -> dict[str, str]:
        """The codecs a table must record: those its Spark types do not imply."""
        return {c.name: c.codec for c in self.columns if c.codec != default_codec(c.spark_type)}

    def codecs_json(self) -> str:
        return json.dumps(self.codecs(), sort_keys=True)

    def with_columns(self, columns: Sequence[tuple[str, str]]) -> TableModel:
        """This model with the table's current columns (after evolution), codecs kept."""
        known = {c.name: c for c in self.columns}
        out = []
        for name, spark_type in columns:
            old = known.get(name)
            keep = old is not None and old.spark_type == spark_type
            codec = old.codec if old is not None and keep else ""
            out.append(Column(name, spark_type, codec, old.optional if old else True))
        return TableModel(self.key, tuple(out), self.source)

    @classmethod
    def from_table(
        cls,
        columns: Sequence[tuple[str, str]],
        key: Sequence[str],
        codecs: Mapping[str, str] | None = None,
        source: str = "",
    ) -> TableModel:
        """The model an existing table records: columns, identifier fields and codecs."""
        codecs = codecs or {}
        return cls(
            tuple(key),
            tuple(Column(n, t, codecs.get(n, "")) for n, t in columns),
            source,
        )

    def to_declared(self) -> dict[str, Any]:
        """The declared-schema form :meth:`from_declared` reads (pipelines.yaml's ``schema``)."""
        columns: dict[str, Any] = {}
        for c in self.columns:
            implied = c.codec == default_codec(c.spark_type)
            columns[c.name] = c.spark_type if implied else {"type": c.spark_type, "codec": c.codec}
        return {"key": list(self.key), "columns": columns}

    @classmethod
    def from_declared(cls, declared: Mapping[str, Any], source: str = "") -> TableModel:
        """A model from a declared schema: ``{"key": [...], "columns": {name: type}}``.

        Types are Spark SQL type names; a column may be ``{"type": ..., "codec": ...}``
        to say how its event text decodes (``decimal``, ``date_days``, ...).
        """
        key = declared.get("key")
        columns = declared.get("columns")
        if not isinstance(key, list) or not all(isinstance(k, str) for k in key):
            raise TableModelError(f"declared schema of {source or 'a table'}: key must be a list")
        if not isinstance(columns, Mapping) or not columns:
            raise TableModelError(
                f"declared schema of {source or 'a table'}: columns must map names to types"
            )
        out = []
        for name, spec in columns.items():
            if isinstance(spec, str):
                out.append(Column(str(name), spec))
            elif isinstance(spec, Mapping) and isinstance(spec.get("type"), str):
                out.append(Column(str(name), spec["type"], str(spec.get("codec") or "")))
            else:
                raise TableModelError(
                    f"declared schema of {source or 'a table'}: column {name!r} needs a type"
                )
        return cls(tuple(key), tuple(out), source)


def parse_key(text: str | None) -> list[str]:
    """The ``cdc.key-columns`` property of a table ([] when absent or malformed)."""
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(k) for k in value] if isinstance(value, list) else []


def parse_codecs(text: str | None) -> dict[str, str]:
    """The ``cdc.column-codecs`` property of a table ({} when absent or malformed)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def source_table(topic: str) -> str:
    """``schema.table`` of a Debezium topic ``<prefix>.<schema>.<table>`` (the topic else)."""
    parts = topic.split(".")
    return ".".join(parts[-2:]) if len(parts) >= 3 else topic


def row_schema_of(value_schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The row struct of a value schema: the envelope's ``after`` (else ``before``) field,
    or the schema itself for the flattened form (ExtractNewRecordState)."""
    fields = value_schema.get("fields")
    if not isinstance(fields, list):
        return None
    by_name = {f.get("field"): f for f in fields if isinstance(f, Mapping)}
    if "op" in by_name and ("after" in by_name or "before" in by_name):
        for part in ("after", "before"):
            row = by_name.get(part)
            if isinstance(row, Mapping) and isinstance(row.get("fields"), list) and row["fields"]:
                return row
        return None
    return value_schema


def from_debezium(
    key_schema: Mapping[str, Any] | None, value_schema: Mapping[str, Any], source: str = ""
) -> TableModel:
    """The model Debezium's schema blocks describe: key columns from the Kafka key's schema
    (in key order), columns, types and nullability from the value schema's row.

    A column whose type cannot be held without loss is refused here, naming it
    (:class:`cdc_iceberg.debezium_types.UnsupportedType`). Fields Debezium's
    ExtractNewRecordState adds (``__op``, ``__deleted``, ...) are not columns.
    """
    from cdc_iceberg.debezium_types import UnsupportedType, column_type

    row = row_schema_of(value_schema)
    if row is None:
        raise TableModelError(f"the value schema of {source or 'a table'} has no row struct")
    columns = []
    for field in row["fields"]:
        name = field.get("field") if isinstance(field, Mapping) else None
        if not isinstance(name, str) or name.startswith("__"):
            continue
        try:
            kind = column_type(field)
        except UnsupportedType as error:
            raise TableModelError(f"{source or 'table'}: {error}") from None
        columns.append(Column(name, kind.spark_type, kind.codec, bool(field.get("optional"))))
    key: list[str] = []
    if key_schema is not None:
        key_fields = key_schema.get("fields")
        if isinstance(key_fields, list):
            key = [f["field"] for f in key_fields if isinstance(f, Mapping) and "field" in f]
    return TableModel(tuple(key), tuple(columns), source)
