"""Bad input at volume: 10,000 generated messages through the real job.

Hypothesis draws the seed of the generator that builds the messages: non-UTF-8
bytes, broken, huge and non-object JSON, empty values, missing keys, null or
non-numeric ordering fields, unknown ops, out-of-range numbers, strings in
numeric fields, NaN, wrong schema blocks, raw number forms (1e3, -0.0, 1E16),
booleans and objects in string columns, timestamps without a zone or outside
years 1-9999, duplicate keys, single quotes, lone surrogate escapes, a BOM or
text after the object, blocks given as JSON strings, mixed with valid changes.
None may stop the job; each invalid record lands in the dead-letter table
exactly once with a reason; the valid ones produce the table the reference fold
predicts. tests/jobs/test_parser_agreement.py compares the same messages record
by record without Kafka.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_fold import fold
from support import assert_table_equals_fold, dead_letters, send

from cdc_iceberg import kafka_offsets
from cdc_iceberg.generator import ArticleSource, Message
from cdc_iceberg.settings import Settings
from jobs.cdc_to_iceberg import drain

# Long (10,000 records through the job): runs with `make test-faults`.
pytestmark = [pytest.mark.integration, pytest.mark.faults]

MESSAGES = 10_000

ODD_NUMBERS = ["NaN", "Infinity", "1e400", "12.5", "0x10", "", " 7 ", "-", "+7", "007", "\u0663"]
# JSON number forms, spliced into the text unquoted (json.dumps cannot write them)
NUMBER_LITERALS = ["1e3", "1.0", "-0", "-0.0", "2.50", "1E16", "1e-5", "1e400", "NaN", "-Infinity"]
TIMESTAMPS = [
    "not a date",
    "",
    "yesterday",
    "2026-13-45T99:00:00Z",
    "2026-02-03T04:05:06.123456Z",
    "2026-02-03T04:05:06",
    "2026-02-03 04:05:06.5+02:00",
    "2026-02-03T04:05:06.1234567Z",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:59:59.999999Z",
    "10000-01-01T00:00:00Z",
    " 2026-02-03T04:05:06Z",
    "2026-02-03T04:05:06+18:30",
    "2026-02-29T00:00:00Z",
    "2026-02",
]
STRING_VALUES: list[Any] = [True, False, 17, -0, 2**70, [1, "é"], {"a": {"b": [None, "\u0001"]}}]
# Byte-level damage to an otherwise valid envelope
SPLICES = [
    (b"", b" trailing"),
    (b"", b"{}"),
    (b"\xef\xbb\xbf", b""),
    (b" \n", b"\n "),
    (b"", b"\x00"),
]
OPS: list[Any] = ["c", "u", "d", "r", "x", "", "C", None, 1, "t"]
JUNK = [b"", b"[]", b"null", b"42", b'"text"', b"{", b'{"a":', b"\x80\x81\x82"]


def _text(rng: random.Random) -> str:
    alphabet = 'abcxyz Ωé漢字\u00e9"\\{}[]:,'
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))


def _number(rng: random.Random) -> Any:
    return rng.choice(
        [
            rng.randrange(-(2**70), 2**70),
            rng.randrange(0, 5000),
            rng.choice(ODD_NUMBERS),
            rng.choice([True, False]),
            None,
            [1, 2],
        ]
    )


def _mangle(rng: random.Random, text: bytes) -> bytes:
    """Damage that json.dumps cannot produce: raw JSON number forms, NaN, duplicate keys,
    single quotes, invalid UTF-8, lone surrogate escapes, text before or after the object."""
    how = rng.randrange(8)
    if how == 0 and b'"word_count": ' in text:
        literal = rng.choice(NUMBER_LITERALS).encode()
        return re.sub(rb'"word_count": [^,}]+', b'"word_count": ' + literal, text, count=1)
    if how == 1 and b'"title": ' in text:
        literal = rng.choice(NUMBER_LITERALS).encode()
        return re.sub(rb'"title": "[^"]*"', b'"title": ' + literal, text, count=1)
    if how == 2:
        field = rng.choice([b'"op": ', b'"article_id": ', b'"ts_ms": ', b'"after": '])
        return text.replace(field, field + b'"x", ' + field, 1)
    if how == 3:
        return text.replace(b'"op"', b"'op'", 1)
    if how == 4 and b'"title": "' in text:
        return text.replace(b'"title": "', b'"title": "' + rng.choice([b"\xff", b"\xc3("]), 1)
    if how == 5 and b'"title": "' in text:
        escape = rng.choice([b"\\ud800", b"\\udc00x", b"\\ud83d\\ude00", b"\\\\ud800"])
        return text.replace(b'"title": "', b'"title": "' + escape, 1)
    if how == 6:
        before, after = rng.choice(SPLICES)
        return before + text + after
    return text


def junk_value(rng: random.Random) -> bytes | None:
    """One record value: a mutated Debezium envelope or plain junk."""
    kind = rng.randrange(12)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 60))
    if kind == 1:
        return rng.choice(JUNK)
    if kind == 2:
        return json.dumps(
            {"payload": _text(rng), "schema": rng.choice([None, _text(rng)])}
        ).encode()
    row: dict[str, Any] = {"article_id": rng.choice([None, "k1", "k2", "k3"])}
    if rng.random() < 0.5:
        row["word_count"] = _number(rng)
    if rng.random() < 0.5:
        row["published_at"] = rng.choice([*TIMESTAMPS, None])
    if rng.random() < 0.5:
        row["title"] = _text(rng) if rng.random() < 0.8 else rng.choice(STRING_VALUES)
    source: Any = {"ts_ms": _number(rng), "lsn": _number(rng)}
    if kind == 3:
        source = rng.choice([None, _text(rng)])
    op = rng.choice(OPS)
    body: dict[str, Any] = {
        "op": op,
        "after": None if op == "d" else row,
        "before": row if op == "d" else None,
        "source": source,
    }
    if kind == 4:
        body["after"] = rng.choice([None, 17, "not an object"])
    if kind == 5 and rng.randrange(100) == 0:
        body["title"] = "x" * 150_000  # a huge record now and then
    if kind == 6:  # a block as a JSON string holding JSON
        name = rng.choice(["source", "after", "before"])
        body[name] = json.dumps(body[name])
    schema = rng.choice([None, _text(rng), {"fields": "wrong"}])
    text = json.dumps({"schema": schema, "payload": body} if rng.random() < 0.5 else body).encode()
    return _mangle(rng, text) if kind >= 9 else text


def fuzz_messages(seed: int) -> list[Message]:
    """A valid history of changes with junk interleaved at random places.

    Each key's changes keep their order, as Debezium writes them into one partition:
    a TOAST placeholder means "unchanged since the previous change of this row",
    which only holds when the previous change arrives first.
    """
    rng = random.Random(seed)
    good = ArticleSource(seed=seed % 1000, partitions=2).random_history(2000, 200)
    junk = [
        Message(
            rng.choice([b'{"article_id": "k1"}', None, b"\xff", b'{"article_id": "k2"} x']),
            junk_value(rng),
            rng.randrange(2),
        )
        for _ in range(MESSAGES - len(good))
    ]
    slots = sorted(rng.sample(range(MESSAGES), len(junk)))
    out: list[Message] = []
    good_iter, junk_iter = iter(good), iter(junk)
    taken = set(slots)
    for position in range(MESSAGES):
        out.append(next(junk_iter) if position in taken else next(good_iter))
    return out


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1))
def test_ten_thousand_generated_messages(spark: Any, base_settings: Settings, seed: int) -> None:
    # a fresh topic, table and checkpoint per run: Hypothesis may run one seed twice
    name = f"t{seed}_{uuid.uuid4().hex[:8]}"
    pipeline = base_settings.replace(
        kafka_topic=f"fuzz.{name}",
        kafka_consumer_group=f"fuzz_{name}",
        iceberg_table=f"fuzz.{name}",
        checkpoint_location=f"{base_settings.checkpoint_location}_fuzz_{name}",
        max_offsets_per_trigger=2500,
    )
    records = send(pipeline, fuzz_messages(seed), partitions=2)

    result = drain(spark, pipeline)

    expected = fold(records)
    letters = dead_letters(pipeline)
    coordinates = [(d["kafka_partition"], d["kafka_offset"]) for d in letters]
    assert len(coordinates) == len(set(coordinates)), "a record was dead-lettered twice"
    assert set(coordinates) == set(expected.dead)
    assert all(d["reason"] for d in letters)
    tombstones = sum(1 for r in records if r.value is None)
    totals = result.totals()
    assert totals["events_in"] == len(records)
    assert totals["kafka_tombstones"] == tombstones
    assert totals["dead_lettered"] == len(expected.dead)
    assert_table_equals_fold(pipeline, expected.rows)
    assert kafka_offsets.committed_offsets(pipeline) == kafka_offsets.end_offsets(pipeline)
