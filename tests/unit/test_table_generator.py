"""The any-table generator writes what the Debezium Postgres connector writes.

Expected values are written out by hand: the unscaled bytes of decimals, the days and
microseconds of temporal values, Debezium's ZonedTimestamp/ZonedTime text, its interval
arithmetic, its TOAST placeholders per type and its key-change headers.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from cdc_iceberg import table_generator as tg
from cdc_iceberg.table_generator import (
    NEWKEY_HEADER,
    OLDKEY_HEADER,
    ORDER_LINES,
    TENANT_NOTES,
    TYPED_ROWS,
    UNCHANGED_TOAST,
    ColumnSpec,
    PgInterval,
    TableSource,
    TableSpec,
    connect_field,
    encode_value,
    key_header,
    toast_placeholder,
)

PLACEHOLDER = "__debezium_unavailable_value"
PLACEHOLDER_B64 = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="
# the placeholder's bytes: "_" = 95, "d" = 100, "e" = 101, ...
PLACEHOLDER_BYTES = [95, 95, 100, 101, 98, 101, 122, 105, 117, 109, 95]  # "__debezium_"
PLACEHOLDER_BYTES += [117, 110, 97, 118, 97, 105, 108, 97, 98, 108, 101, 95]  # "unavailable_"
PLACEHOLDER_BYTES += [118, 97, 108, 117, 101]  # "value"
# UUID.nameUUIDFromBytes of the placeholder, as given in debezium/debezium PR 4778
PLACEHOLDER_UUID = "b68a35a7-17ad-35b3-af2a-ae46edb4545a"


def col(pg_type: str, name: str = "c", nullable: bool = True) -> ColumnSpec:
    return ColumnSpec(name, pg_type, nullable)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def payload(message: tg.TableMessage) -> dict[str, Any]:
    assert message.value is not None
    value = json.loads(message.value)
    return value.get("payload", value)


# -- values ------------------------------------------------------------------------


def test_placeholder_bytes_are_spelled_right() -> None:
    assert bytes(PLACEHOLDER_BYTES) == PLACEHOLDER.encode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("12.34"), b64(b"\x04\xd2")),  # 1234
        (Decimal("-1.00"), b64(b"\x9c")),  # -100, one byte
        (Decimal("0.00"), b64(b"\x00")),  # BigInteger.ZERO.toByteArray() is one zero byte
        (Decimal("1.27"), b64(b"\x7f")),
        (Decimal("1.28"), b64(b"\x00\x80")),  # 128 needs a sign byte
        (Decimal("-1.28"), b64(b"\x80")),
        (Decimal("-1.29"), b64(b"\xff\x7f")),
        (Decimal("1.005"), b64(b"\x65")),  # Postgres rounds half away from zero: 1.01
        (Decimal("1.1"), b64(b"\x6e")),  # stored as 1.10
        (7, b64(b"\x02\xbc")),  # 700
    ],
)
def test_decimal_is_base64_of_minimal_twos_complement(value: Decimal, expected: str) -> None:
    assert encode_value(col("numeric(10,2)"), value) == expected


def test_decimal_at_full_precision() -> None:
    # 10**38 - 1 in hex; the top bit of the top byte is clear, so no sign byte is added
    full = Decimal("9999999999999999999999999999.9999999999")
    expected = b64(bytes.fromhex("4b3b4ca85a86c47a098a223fffffffff"))
    assert encode_value(col("numeric(38,10)"), full) == expected
    assert encode_value(col("numeric(38,10)"), full.copy_negate()) == b64(
        bytes.fromhex("b4c4b357a5793b85f675ddc000000001")
    )
    with pytest.raises(ValueError, match="does not fit"):
        encode_value(col("numeric(10,2)"), Decimal("123456789.00"))
    with pytest.raises(TypeError):
        encode_value(col("numeric(10,2)"), 1.5)


@pytest.mark.parametrize(
    ("value", "scale", "raw"),
    [
        (Decimal("10.1111"), 4, b"\x01\x8a\xf7"),  # 101111
        (Decimal("1.500"), 1, b"\x0f"),  # trailing zeros stripped
        (Decimal("100"), 0, b"\x64"),  # 1E+2 is brought back to scale 0
        (Decimal("0.000"), 0, b"\x00"),
        (Decimal("-22.2222"), 4, b"\xfc\x9b\xf2"),  # -222222 = -0x03640e
    ],
)
def test_unconstrained_numeric_is_variable_scale(value: Decimal, scale: int, raw: bytes) -> None:
    assert encode_value(col("numeric"), value) == {"scale": scale, "value": b64(raw)}


def test_money_is_a_decimal_of_scale_two() -> None:
    assert encode_value(col("money"), Decimal("1234.11")) == b64(b"\x01\xe2\x13")  # 123411
    assert encode_value(col("money"), Decimal("-0.01")) == b64(b"\xff")
    assert encode_value(col("money"), 5) == b64(b"\x01\xf4")  # 5.00


def test_temporal_values() -> None:
    assert encode_value(col("date"), date(1969, 12, 31)) == -1
    assert encode_value(col("date"), date(1970, 1, 1)) == 0
    assert encode_value(col("date"), date(2016, 11, 4)) == 17109
    with pytest.raises(TypeError):
        encode_value(col("date"), datetime(2016, 11, 4))
    # time: microseconds past midnight; time(3): milliseconds
    assert encode_value(col("time"), time(13, 51, 30)) == 49_890_000_000
    assert encode_value(col("time"), time(0, 0, 0, 1)) == 1
    assert encode_value(col("time(3)"), time(13, 51, 30, 123000)) == 49_890_123
    # timestamp: microseconds since the epoch, negative before 1970
    assert encode_value(col("timestamp"), datetime(2016, 11, 4, 13, 51, 30, 123456)) == (
        1_478_267_490_123_456
    )
    assert encode_value(col("timestamp"), datetime(1969, 12, 31, 23, 59, 59, 999999)) == -1
    assert encode_value(col("timestamp(3)"), datetime(1970, 1, 1, 0, 0, 1, 500000)) == 1500


def test_zoned_timestamp_is_utc_with_the_columns_fraction_digits() -> None:
    plus2 = timezone(timedelta(hours=2))
    moment = datetime(2016, 11, 4, 13, 51, 30, 123456, tzinfo=plus2)
    assert encode_value(col("timestamptz"), moment) == "2016-11-04T11:51:30.123456Z"
    # no precision given: always six digits, zeros included (the connector's tz_zero case)
    whole = datetime(2016, 11, 4, 13, 51, 30, tzinfo=plus2)
    assert encode_value(col("timestamptz"), whole) == "2016-11-04T11:51:30.000000Z"
    assert encode_value(col("timestamptz(3)"), whole.replace(microsecond=120000)) == (
        "2016-11-04T11:51:30.120Z"
    )
    assert encode_value(col("timestamptz(0)"), whole) == "2016-11-04T11:51:30Z"
    with pytest.raises(ValueError, match="precision"):
        encode_value(col("timestamptz(3)"), moment)
    assert encode_value(col("timestamptz"), datetime(1, 1, 1, tzinfo=UTC)) == (
        "0001-01-01T00:00:00.000000Z"
    )


def test_zoned_time_is_utc_with_trimmed_fraction() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert encode_value(col("timetz"), time(13, 51, 30, 123789, plus2)) == "11:51:30.123789Z"
    assert encode_value(col("timetz"), time(13, 51, 30, 123000, plus2)) == "11:51:30.123Z"
    assert encode_value(col("timetz"), time(13, 51, 30, tzinfo=plus2)) == "11:51:30Z"
    assert encode_value(col("timetz"), time(1, 0, tzinfo=plus2)) == "23:00:00Z"
    minus = timezone(-timedelta(hours=5, minutes=30))
    assert encode_value(col("timetz"), time(20, 0, tzinfo=minus)) == "01:30:00Z"


def test_interval_uses_the_average_month() -> None:
    # 'P1Y2M3DT4H5M6.78S': 14 months of 30.4375 days, 3 days, 4:05:06.78
    interval = PgInterval(months=14, days=3, micros=((4 * 60 + 5) * 60 + 6) * 10**6 + 780000)
    assert encode_value(col("interval"), interval) == 37_091_106_780_000
    assert encode_value(col("interval"), PgInterval(months=1)) == 2_629_800_000_000
    assert encode_value(col("interval"), PgInterval(days=-1)) == -86_400_000_000
    assert encode_value(col("interval"), PgInterval(micros=-1_500_000)) == -1_500_000
    assert encode_value(col("interval"), timedelta(hours=1, microseconds=5)) == 3_600_000_005
    assert encode_value(col("interval"), PgInterval()) == 0


def test_text_like_values() -> None:
    assert encode_value(col("char(8)"), "abc") == "abc     "
    assert encode_value(col("varchar(3)"), "Zoë") == "Zoë"
    with pytest.raises(ValueError, match="longer"):
        encode_value(col("varchar(2)"), "abc")
    assert encode_value(col("bytea"), b"\x01\x02\x03") == "AQID"
    assert encode_value(col("bytea"), b"") == ""
    assert encode_value(col("uuid"), "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11") == (
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    )
    assert encode_value(col("enum:mood"), "ok") == "ok"
    with pytest.raises(ValueError, match="label"):
        encode_value(col("enum:mood"), "angry")
    assert encode_value(col("xml"), "<foo>bar</foo>") == "<foo>bar</foo>"
    assert encode_value(col("inet"), "192.168.2.0/12") == "192.168.2.0/12"
    assert encode_value(col("macaddr"), "08:00:2B:01:02:03") == "08:00:2b:01:02:03"
    assert encode_value(col("real"), 3.3) == 3.3  # the shortest text of the 32-bit float


def test_json_and_jsonb_text() -> None:
    value = {"bb": 1, "a": {"z": True, "y": None}, "c": ["Zoë", 2.5]}
    assert encode_value(col("json"), value) == '{"bb":1,"a":{"z":true,"y":null},"c":["Zoë",2.5]}'
    # jsonb: Postgres' normalised output, keys by length then bytes
    assert encode_value(col("jsonb"), value) == (
        '{"a": {"y": null, "z": true}, "c": ["Zoë", 2.5], "bb": 1}'
    )
    assert encode_value(col("jsonb"), '{"bar":"baz"}') == '{"bar": "baz"}'
    assert encode_value(col("json"), '{"bar":  "baz"}') == '{"bar":  "baz"}'  # json keeps text


def test_arrays_encode_each_element() -> None:
    assert encode_value(col("integer[]"), [1, None, 3]) == [1, None, 3]
    assert encode_value(col("integer[]"), []) == []
    assert encode_value(col("text[]"), ["a", None, ""]) == ["a", None, ""]
    assert encode_value(col("numeric(10,2)[]"), [Decimal("12.34"), None]) == ["BNI=", None]
    assert encode_value(col("date[]"), [date(1969, 12, 31)]) == [-1]
    assert encode_value(col("integer"), None) is None


# -- schemas -----------------------------------------------------------------------


def test_decimal_field_as_in_the_brief() -> None:
    assert connect_field(ColumnSpec("price", "numeric(10,2)")) == {
        "type": "bytes",
        "optional": True,
        "name": "org.apache.kafka.connect.data.Decimal",
        "version": 1,
        "parameters": {"scale": "2", "connect.decimal.precision": "10"},
        "field": "price",
    }


@pytest.mark.parametrize(
    ("pg_type", "expected"),
    [
        ("smallint", {"type": "int16"}),
        ("integer", {"type": "int32"}),
        ("int8", {"type": "int64"}),
        ("boolean", {"type": "boolean"}),
        ("real", {"type": "float"}),
        ("double precision", {"type": "double"}),
        ("text", {"type": "string"}),
        ("varchar(40)", {"type": "string"}),
        ("char(8)", {"type": "string"}),
        ("inet", {"type": "string"}),
        ("cidr", {"type": "string"}),
        ("macaddr", {"type": "string"}),
        ("bytea", {"type": "bytes"}),
        (
            "money",
            {"type": "bytes", "name": tg.DECIMAL, "version": 1, "parameters": {"scale": "2"}},
        ),
        (
            "numeric(12)",
            {
                "type": "bytes",
                "name": tg.DECIMAL,
                "version": 1,
                "parameters": {"scale": "0", "connect.decimal.precision": "12"},
            },
        ),
        ("date", {"type": "int32", "name": "io.debezium.time.Date", "version": 1}),
        ("time", {"type": "int64", "name": "io.debezium.time.MicroTime", "version": 1}),
        ("time(3)", {"type": "int32", "name": "io.debezium.time.Time", "version": 1}),
        ("time(4)", {"type": "int64", "name": "io.debezium.time.MicroTime", "version": 1}),
        ("timetz", {"type": "string", "name": "io.debezium.time.ZonedTime", "version": 1}),
        ("timestamp", {"type": "int64", "name": "io.debezium.time.MicroTimestamp", "version": 1}),
        ("timestamp(3)", {"type": "int64", "name": "io.debezium.time.Timestamp", "version": 1}),
        (
            "timestamptz",
            {"type": "string", "name": "io.debezium.time.ZonedTimestamp", "version": 1},
        ),
        ("interval", {"type": "int64", "name": "io.debezium.time.MicroDuration", "version": 1}),
        ("uuid", {"type": "string", "name": "io.debezium.data.Uuid", "version": 1}),
        ("json", {"type": "string", "name": "io.debezium.data.Json", "version": 1}),
        ("jsonb", {"type": "string", "name": "io.debezium.data.Json", "version": 1}),
        ("xml", {"type": "string", "name": "io.debezium.data.Xml", "version": 1}),
        (
            "enum:mood",
            {
                "type": "string",
                "name": "io.debezium.data.Enum",
                "version": 1,
                "parameters": {"allowed": "sad,ok,happy"},
            },
        ),
        (
            "enum:size(S,M,L)",
            {
                "type": "string",
                "name": "io.debezium.data.Enum",
                "version": 1,
                "parameters": {"allowed": "S,M,L"},
            },
        ),
    ],
)
def test_scalar_fields(pg_type: str, expected: dict[str, Any]) -> None:
    field = connect_field(ColumnSpec("x", pg_type))
    assert field == {"type": expected["type"], "optional": True, **expected, "field": "x"}
    # the JsonConverter's key order: type, optional, name, version, parameters, field
    order = ["type", "optional", "name", "version", "parameters", "field"]
    assert list(field) == [k for k in order if k in field]


def test_variable_scale_decimal_field() -> None:
    assert connect_field(ColumnSpec("amount", "numeric")) == {
        "type": "struct",
        "fields": [
            {"type": "int32", "optional": False, "field": "scale"},
            {"type": "bytes", "optional": False, "field": "value"},
        ],
        "optional": True,
        "name": "io.debezium.data.VariableScaleDecimal",
        "version": 1,
        "doc": "Variable scaled decimal",
        "field": "amount",
    }


def test_array_fields() -> None:
    assert connect_field(ColumnSpec("ids", "integer[]")) == {
        "type": "array",
        "items": {"type": "int32", "optional": True},
        "optional": True,
        "field": "ids",
    }
    assert connect_field(ColumnSpec("tags", "text[]", nullable=False)) == {
        "type": "array",
        "items": {"type": "string", "optional": True},
        "optional": False,
        "field": "tags",
    }
    assert connect_field(ColumnSpec("prices", "numeric(10,2)[]"))["items"] == {
        "type": "bytes",
        "optional": True,
        "name": "org.apache.kafka.connect.data.Decimal",
        "version": 1,
        "parameters": {"scale": "2", "connect.decimal.precision": "10"},
    }
    # the connector builds enum elements without .optional()
    assert connect_field(ColumnSpec("moods", "enum:mood[]"))["items"]["optional"] is False
    with pytest.raises(ValueError, match="no schema"):
        connect_field(ColumnSpec("m", "money[]"))


def test_optional_follows_nullability_and_keys() -> None:
    assert connect_field(ColumnSpec("a", "integer", nullable=False))["optional"] is False
    assert connect_field(ColumnSpec("a", "integer"), in_key=True)["optional"] is False
    fields = {f["field"]: f for f in tg.row_schema(ORDER_LINES)["fields"]}
    assert fields["order_id"]["optional"] is False
    assert fields["unit_price"]["optional"] is True


def test_unknown_types_are_refused_when_the_table_is_described() -> None:
    with pytest.raises(ValueError):
        TableSpec("public", "t", (ColumnSpec("a", "geometry"),), ())
    with pytest.raises(ValueError, match="primary key"):
        TableSpec("public", "t", (ColumnSpec("a", "integer"),), ("b",))
    with pytest.raises(ValueError, match="enum"):
        TableSpec("public", "t", (ColumnSpec("a", "enum:nope"),), ())


def test_typed_rows_covers_every_type() -> None:
    types = {c.pg_type for c in TYPED_ROWS.columns}
    scalars = ("smallint", "integer", "bigint", "boolean", "real", "date", "time", "timetz")
    scalars += ("timestamp", "timestamptz", "interval", "uuid", "json", "jsonb", "xml", "money")
    scalars += ("numeric", "bytea", "inet", "cidr", "macaddr", "text")
    for wanted in scalars:
        assert wanted in types
    for wanted in ("double precision", "numeric(10,2)", "numeric(38,10)", "enum:mood"):
        assert wanted in types
    for wanted in ("integer[]", "text[]", "numeric(10,2)[]", "varchar(40)", "char(8)"):
        assert wanted in types
    # every column has a schema and every generated row encodes
    source = TableSource(TYPED_ROWS, seed=5)
    for message in source.to_messages(source.snapshot(30)):
        assert payload(message)["after"]["id"]


# -- TOAST ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pg_type", "expected"),
    [
        ("text", PLACEHOLDER),
        ("varchar(40)", PLACEHOLDER),
        ("char(8)", PLACEHOLDER),
        ("json", PLACEHOLDER),
        ("jsonb", PLACEHOLDER),
        ("xml", PLACEHOLDER),
        ("bytea", PLACEHOLDER_B64),  # the placeholder's bytes, base64 in JSON
        ("text[]", [PLACEHOLDER]),
        ("varchar(10)[]", [PLACEHOLDER]),
        ("jsonb[]", [PLACEHOLDER]),
        ("bytea[]", [PLACEHOLDER_B64]),
        ("integer[]", PLACEHOLDER_BYTES),  # one number per placeholder byte
        ("date[]", PLACEHOLDER_BYTES),
        ("bigint[]", PLACEHOLDER_BYTES),
        ("uuid[]", [PLACEHOLDER_UUID]),
        ("numeric(10,2)[]", None),  # fails the array schema: the connector sends null
        ("boolean[]", None),
    ],
)
def test_toast_placeholder_per_type(pg_type: str, expected: Any) -> None:
    assert toast_placeholder(col(pg_type)) == expected
    assert encode_value(col(pg_type), UNCHANGED_TOAST) == expected


def test_fixed_size_types_are_never_toasted() -> None:
    for pg_type in ("integer", "uuid", "timestamptz", "numeric(10,2)", "enum:mood"):
        with pytest.raises(ValueError, match="never TOASTed"):
            toast_placeholder(col(pg_type))


def test_toasted_update_sends_placeholders_for_untouched_columns() -> None:
    source = TableSource(TYPED_ROWS, seed=11, null_share=0.0)
    source.snapshot(3)
    key = next(iter(source.rows))
    change = source.update(key, toast=True)
    after = payload(source.encode(change))["after"]
    assert payload(source.encode(change))["before"] is None
    row = source.rows[key]
    toasted = 0
    for column in TYPED_ROWS.columns:
        encoded = after[column.name]
        if tg.is_toastable(column):
            assert encoded == toast_placeholder(column), column.name
            toasted += 1
        else:
            assert encoded == encode_value(column, row[column.name]), column.name
    assert toasted == 10
    assert after["c_bytea"] == PLACEHOLDER_B64
    assert after["c_int_array"] == PLACEHOLDER_BYTES
    assert after["c_text_array"] == [PLACEHOLDER]
    assert after["c_jsonb"] == PLACEHOLDER
    assert after["c_numeric_array"] is None
    # the simulated row itself keeps its values
    assert all(v is not UNCHANGED_TOAST for v in row.values())


# -- keys, deletes, key changes ------------------------------------------------------------


def test_composite_key_json_and_schema() -> None:
    source = TableSource(ORDER_LINES, seed=2)
    message = source.to_messages([source.insert()])[0]
    assert message.key is not None
    key = json.loads(message.key)
    assert key["schema"] == {
        "type": "struct",
        "fields": [
            {"type": "int64", "optional": False, "field": "order_id"},
            {"type": "int32", "optional": False, "field": "line_no"},
        ],
        "optional": False,
        "name": "neuronews.public.order_lines.Key",
    }
    assert list(key["payload"]) == ["order_id", "line_no"]
    value = json.loads(message.value or b"")
    assert value["schema"]["name"] == "neuronews.public.order_lines.Envelope"
    assert value["schema"]["fields"][0]["name"] == "neuronews.public.order_lines.Value"
    assert value["payload"]["source"]["schema"] == "public"
    assert value["payload"]["source"]["table"] == "order_lines"
    assert source.topic == "neuronews.public.order_lines"
    bare = TableSource(ORDER_LINES, seed=2, wrapper=False)
    bare_message = bare.to_messages([bare.insert()])[0]
    assert json.loads(bare_message.key or b"") == key["payload"]
    assert bare_message.key == json.dumps(key["payload"], separators=(",", ":")).encode()


def test_composite_key_parts_repeat_across_rows() -> None:
    lines = TableSource(ORDER_LINES, seed=4)
    lines.snapshot(60)
    orders = {order_id for order_id, _ in lines.rows}
    assert 1 < len(orders) < 30
    assert max(line_no for _, line_no in lines.rows) > 1
    notes = TableSource(TENANT_NOTES, seed=4)
    notes.snapshot(60)
    tenants = {tenant for tenant, _ in notes.rows}
    assert 1 < len(tenants) < 30
    assert all(isinstance(day, date) for _, day in notes.rows)
    assert len(notes.rows) == 60  # no key is used twice


def test_delete_has_key_only_before_image_and_a_tombstone() -> None:
    source = TableSource(ORDER_LINES, seed=3)
    source.snapshot(4)
    key = next(iter(source.rows))
    delete, tombstone = source.to_messages([source.delete(key)])
    body = payload(delete)
    assert body["op"] == "d"
    assert body["after"] is None
    assert body["before"] == {
        "order_id": key[0],
        "line_no": key[1],
        "sku": None,
        "quantity": None,
        "unit_price": None,
        "note": None,
    }
    assert tombstone.value is None
    assert tombstone.key == delete.key
    assert tombstone.partition == delete.partition
    assert key not in source.rows
    flat = TableSource(ORDER_LINES, seed=3, event_format="flattened")
    flat.snapshot(4)
    (only,) = flat.to_messages([flat.delete(next(iter(flat.rows)))])
    assert payload(only)["__deleted"] == "true"
    assert payload(only)["__op"] == "d"


def test_key_change_is_delete_plus_create_with_key_headers() -> None:
    source = TableSource(ORDER_LINES, seed=6)
    source.snapshot(5)
    old = next(iter(source.rows))
    gone, born = source.change_key(old)
    assert gone.lsn == born.lsn and gone.tx_id == born.tx_id
    new = born.key
    assert new is not None and new != old and new in source.rows and old not in source.rows
    delete, tombstone, create = source.to_messages([gone, born])
    old_text = f'{{"order_id":{old[0]},"line_no":{old[1]}}}'.encode()
    new_text = f'{{"order_id":{new[0]},"line_no":{new[1]}}}'.encode()
    assert create.headers == ((OLDKEY_HEADER, old_text),)
    assert delete.headers == ((NEWKEY_HEADER, new_text),)
    assert tombstone.headers == delete.headers and tombstone.value is None
    assert payload(create)["op"] == "c"
    assert payload(create)["after"]["sku"] == source.rows[new]["sku"]
    assert json.loads(create.key or b"")["payload"] == {"order_id": new[0], "line_no": new[1]}


def test_key_header_prints_like_values_convert_to_string() -> None:
    assert key_header(TENANT_NOTES, ('o"brien\\', date(1970, 1, 2))) == (
        b'{"tenant":"o\\"brien\\\\","day":1}'
    )
    priced = TableSpec("public", "p", (ColumnSpec("price", "numeric(10,2)", False),), ("price",))
    assert key_header(priced, (Decimal("-1"),)) == b'{"price":-1.00}'
    tiny = TableSpec("public", "p", (ColumnSpec("v", "numeric(12,9)", False),), ("v",))
    assert key_header(tiny, (Decimal("0.000000001"),)) == b'{"v":1E-9}'  # BigDecimal.toString()


def test_table_without_primary_key() -> None:
    spec = TableSpec("audit", "events", (ColumnSpec("at", "timestamptz"), col("text")), ())
    source = TableSource(spec, seed=1)
    source.snapshot(2)
    row_id = next(iter(source.rows))
    row = dict(source.rows[row_id])
    messages = source.to_messages([source.insert(), source.update(row_id, toast=True)])
    messages += source.to_messages([source.delete(row_id)])
    assert [m.key for m in messages] == [None] * 4
    assert {m.partition for m in messages} == {0}
    update = payload(messages[1])
    assert update["before"] == {c.name: encode_value(c, row[c.name]) for c in spec.columns}
    assert PLACEHOLDER not in json.dumps(update)  # REPLICA IDENTITY FULL: no placeholders
    assert payload(messages[2])["before"]["c"] == encode_value(spec.column("c"), row["c"])
    assert messages[3].value is None  # the tombstone, with a null key as the delete
    with pytest.raises(ValueError, match="no primary key"):
        source.change_key(row_id)
    assert tg.key_schema(spec) is None


def test_add_column_mid_stream() -> None:
    source = TableSource(TENANT_NOTES, seed=8)
    source.snapshot(3)
    first = source.to_messages([source.insert()])[0]
    source.add_column(ColumnSpec("priority", "smallint"))
    existing = next(iter(source.rows))
    later = source.to_messages([source.insert(), source.delete(existing)])
    assert "priority" not in payload(first)["after"]
    names = [f["field"] for f in json.loads(first.value or b"")["schema"]["fields"][1]["fields"]]
    assert names == ["tenant", "day", "body"]
    schema = json.loads(later[0].value or b"")["schema"]["fields"][1]
    assert [f["field"] for f in schema["fields"]] == ["tenant", "day", "body", "priority"]
    assert schema["fields"][-1] == {"type": "int16", "optional": True, "field": "priority"}
    assert "priority" in payload(later[0])["after"]
    assert payload(later[1])["before"]["priority"] is None
    assert source.rows and all("priority" in row for row in source.rows.values())
    # the changes already made keep the columns they were made with
    assert "priority" not in payload(source.to_messages([source._emitted[3]])[0])["after"]
    with pytest.raises(ValueError, match="nullable"):
        source.add_column(ColumnSpec("strict", "integer", nullable=False))


# -- workloads ------------------------------------------------------------------------


def test_same_seed_same_messages() -> None:
    def run(seed: int) -> list[tg.TableMessage]:
        source = TableSource(TYPED_ROWS, seed=seed)
        return source.random_history(
            300,
            40,
            snapshot_rows=20,
            toast_share=0.3,
            pk_change_share=0.05,
            redelivery_share=0.05,
            added_columns=(ColumnSpec("late", "text"),),
        )

    assert run(9) == run(9)
    assert run(9) != run(10)


def test_random_history_mixes_every_kind_of_change() -> None:
    source = TableSource(ORDER_LINES, seed=12)
    messages = source.random_history(
        800,
        60,
        snapshot_rows=30,
        toast_share=0.3,
        pk_change_share=0.05,
        added_columns=(ColumnSpec("discount", "numeric(5,2)"), ColumnSpec("tags", "text[]")),
    )
    ops = [payload(m)["op"] if m.value is not None else "tombstone" for m in messages]
    for op in ("r", "c", "u", "d", "tombstone"):
        assert op in ops
    assert any(h[0] == OLDKEY_HEADER for m in messages for h in m.headers)
    assert any(PLACEHOLDER.encode() in (m.value or b"") for m in messages)
    last = json.loads(messages[-1].value or b"null") or json.loads(messages[-2].value or b"")
    fields = [f["field"] for f in last["schema"]["fields"][1]["fields"]]
    assert fields[-2:] == ["discount", "tags"]
    snapshot = [payload(m)["source"]["snapshot"] for m in messages[:30]]
    assert snapshot[0] == "first" and snapshot[-1] == "last" and set(snapshot[1:-1]) == {"true"}
    assert all(0 <= m.partition < 3 for m in messages)


def test_random_values_reach_the_edge_cases() -> None:
    source = TableSource(TYPED_ROWS, seed=21)
    source.snapshot(300)
    rows = list(source.rows.values())

    def seen(name: str) -> list[Any]:
        return [row[name] for row in rows]

    assert None in seen("c_text") and None in seen("c_numeric")
    assert any(v is not None and v < 0 for v in seen("c_numeric"))
    assert any(v is not None and v == 0 for v in seen("c_numeric"))
    assert Decimal("99999999.99") in seen("c_numeric") or Decimal("-99999999.99") in seen(
        "c_numeric"
    )
    assert any(v is not None and v < date(1970, 1, 1) for v in seen("c_date"))
    assert any(v is not None and v.microsecond % 1000 for v in seen("c_timestamp"))
    assert any(v is not None and not v.isascii() for v in seen("c_text"))
    assert [] in seen("c_int_array")
    assert any(v and None in v for v in seen("c_text_array"))
    assert any(isinstance(v, dict) and isinstance(v.get("nested"), dict) for v in seen("c_jsonb"))
    assert any(v is not None and v.months < 0 for v in seen("c_interval"))


def test_produce_passes_headers_to_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []

    class Result:
        partition = 1
        offset = 7

    class Future:
        def get(self, timeout: float) -> Result:
            return Result()

    class FakeProducer:
        def __init__(self, **config: Any) -> None:
            self.config = config

        def send(self, topic: str, **kwargs: Any) -> Future:
            sent.append({"topic": topic, **kwargs})
            return Future()

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    import kafka

    monkeypatch.setattr(kafka, "KafkaProducer", FakeProducer)
    source = TableSource(ORDER_LINES, seed=1)
    source.snapshot(2)
    messages = source.to_messages(source.change_key(next(iter(source.rows))))
    from cdc_iceberg.settings import Settings

    produced = tg.produce_table_messages(Settings(), "neuronews.public.order_lines", messages)
    assert [p.offset for p in produced] == [7, 7, 7]
    assert [s["topic"] for s in sent] == ["neuronews.public.order_lines"] * 3
    assert sent[2]["headers"] == [messages[2].headers[0]]
    assert sent[1]["value"] is None
