"""A table's model read off its first change events (Debezium's schema blocks).

With the JsonConverter's ``schemas.enable=true`` every record carries the
schema of its key and of its value. Before a table exists, the drain reads a
few records from where it will start and takes the model from the first one
that has both (a delete's tombstone has no value, a record of a table without
a primary key has no key: such a table is refused, see
:class:`cdc_iceberg.table_model.TableModel`; a bad record whose schema block
describes no row is passed over, and dead-lettered by the drain).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from cdc_iceberg import kafka_offsets
from cdc_iceberg.settings import Settings
from cdc_iceberg.table_model import TableModel, from_debezium, row_schema_of

log = logging.getLogger("cdc_to_iceberg")

# records looked at per partition before giving up on finding schema blocks
PEEK_RECORDS = 200


class SchemaUnknownError(RuntimeError):
    """Neither a declared schema nor the events say what the table looks like."""


def schema_blocks(key: bytes | None, value: bytes | None) -> tuple[Any, Any] | None:
    """(key schema or None, value schema) of one record, or None without a value schema."""
    if value is None:
        return None
    try:
        root = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(root, Mapping) or not isinstance(root.get("schema"), Mapping):
        return None
    if "payload" not in root or row_schema_of(root["schema"]) is None:
        return None  # not a change event's schema (a bad record: dead-lettered by the drain)
    key_schema = None
    if key is not None:
        try:
            key_root = json.loads(key)
        except (ValueError, UnicodeDecodeError):
            key_root = None
        if isinstance(key_root, Mapping) and isinstance(key_root.get("schema"), Mapping):
            key_schema = key_root["schema"]
    return key_schema, root["schema"]


def model_from_topic(
    settings: Settings, start: Mapping[int, int], source: str = ""
) -> TableModel | None:
    """The model of the first record from ``start`` with schema blocks; None for no records.

    Raises :class:`SchemaUnknownError` when the topic holds records but none of
    the first ones carries a schema block: the table must then be declared.
    """
    from kafka import TopicPartition

    end = kafka_offsets.end_offsets(settings)
    seen = 0
    with kafka_offsets.consumer(settings, consumer_timeout_ms=5_000) as client:
        for partition, offset in sorted(start.items()):
            stop = min(end.get(partition, offset), offset + PEEK_RECORDS)
            if offset >= stop:
                continue
            tp = TopicPartition(settings.kafka_topic, partition)
            client.assign([tp])
            client.seek(tp, offset)
            while client.position(tp) < stop:
                batch = client.poll(timeout_ms=5_000).get(tp, [])
                if not batch:
                    break
                for record in batch:
                    if record.offset >= stop:
                        break
                    seen += 1
                    blocks = schema_blocks(record.key, record.value)
                    if blocks is not None:
                        model = from_debezium(blocks[0], blocks[1], source)
                        log.info(
                            "%s: key %s and %d columns from the schema blocks at %s:%s",
                            settings.kafka_topic,
                            list(model.key),
                            len(model.columns),
                            partition,
                            record.offset,
                        )
                        return model
    if not seen:
        return None
    raise SchemaUnknownError(
        f"the events of {settings.kafka_topic} carry no schema blocks (JsonConverter with "
        f"schemas.enable=false, or flattened) and {settings.pipelines_file} declares no "
        f"schema for it: add the table there with its key and columns, or enable schemas"
    )
