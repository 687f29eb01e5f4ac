"""What a user types into the backfill and reset forms is checked before anything runs.

Injection attempts, look-alike characters, huge numbers, negative offsets and
impossible times are refused with a message naming the field; no identifier
that could change a SQL statement gets through. The broker is replaced by fixed
offsets here (pure validation logic); the forms against a real broker are
covered by tests/integration/test_dags.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from cdc_airflow import backfill
from cdc_airflow.backfill import (
    BackfillFormError,
    check_offsets_in_topic,
    parse_offsets,
    parse_timestamp_ms,
    plan_backfill,
    run_segment,
)
from cdc_airflow.operators import flag

from cdc_iceberg import reset
from cdc_iceberg.settings import Settings, SettingsError, check_identifier

NOW_MS = 1_780_000_000_000  # 2026-05-28

INJECTIONS = [
    "x; DROP TABLE y",
    "x`; DROP TABLE y; --",
    "`x`",
    "x'",
    'x"',
    "x -- comment",
    "x/*c*/",
    "x\n",
    "x\r\nDROP",
    "x\x00",
    "x y",
    "",
    " x",
    "1x",
    "x.y",
    "\uff58",  # fullwidth x
    "\u0430rticles",  # Cyrillic a
    "articles\u200b",  # zero-width space
    "artícles",
    "x" * 129,
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_identifiers_refuse_anything_but_ascii_words(value: str) -> None:
    with pytest.raises(SettingsError):
        check_identifier(value)


@pytest.mark.parametrize("value", ["x", "_x", "word_count", "X9", "x" * 128])
def test_identifiers_accept_plain_words(value: str) -> None:
    assert check_identifier(value) == value


@pytest.mark.parametrize(
    "table", [f"neuronews.{bad}" for bad in INJECTIONS] + ["neuronews", "a.b.c", "a..b", ".b"]
)
def test_table_settings_refuse_injection(table: str) -> None:
    with pytest.raises(SettingsError):
        Settings(iceberg_table=table)


def test_identifier_check_needs_text() -> None:
    with pytest.raises(SettingsError):
        check_identifier(None)  # type: ignore[arg-type]


# -- offsets ------------------------------------------------------------


def test_offsets_parse() -> None:
    assert parse_offsets('{"0": 120, "1": 0, "12": 9223372036854775807}', "f") == {
        0: 120,
        1: 0,
        12: 2**63 - 1,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"0": "1; DROP TABLE x"}', "not partition: offset"),
        ('{"0": -1}', "negative"),
        ('{"0": -2}', "negative"),
        ('{"0": 1.5}', "not partition: offset"),
        ('{"0": 1.0}', "not partition: offset"),
        ('{"0": true}', "not partition: offset"),
        ('{"0": null}', "not partition: offset"),
        ('{"0": [1]}', "not partition: offset"),
        ('{"0": 1e400}', "not partition: offset"),
        ('{"0": NaN}', "not an offset"),
        ('{"0": Infinity}', "not an offset"),
        ('{"0": -Infinity}', "not an offset"),
        ('{"0": 9223372036854775808}', "out of range"),
        ('{"0": ' + "9" * 5000 + "}", "not JSON"),
        ('{"99999999999": 1}', "not partition: offset"),
        ('{"4294967296": 1}', "out of range"),
        ('{"2147483648": 1}', "out of range"),
        ('{"-1": 5}', "not partition: offset"),
        ('{"+1": 5}', "not partition: offset"),
        ('{" 1": 5}', "not partition: offset"),
        ('{"1 ": 5}', "not partition: offset"),
        ('{"1\\n": 5}', "not partition: offset"),
        ('{"\u0663": 5}', "not partition: offset"),  # Arabic-Indic three
        ('{"\u00b2": 5}', "not partition: offset"),  # superscript two
        ('{"\uff11": 5}', "not partition: offset"),  # fullwidth one
        ('{"0; DROP TABLE x": 5}', "not partition: offset"),
        ('{"0": 1, "0": 2}', "given twice"),
        ('{"0": 1, "00": 2}', "given twice"),
        ("[1, 2]", "JSON object"),
        ("{}", "JSON object"),
        ('"0"', "JSON object"),
        ("120", "JSON object"),
        ("0: 120", "not JSON"),
        ("{'0': 120}", "not JSON"),
        ('{"0": 120} ; DROP TABLE x', "not JSON"),
        ("", "required"),
        (None, "required"),
        (" " * 20_000, "too long"),
    ],
)
def test_bad_offsets_are_refused(text: str | None, message: str) -> None:
    with pytest.raises(BackfillFormError, match=message) as error:
        parse_offsets(text, "start_offsets")
    assert str(error.value).startswith("start_offsets:")


def test_offsets_that_are_not_text_are_refused() -> None:
    with pytest.raises(BackfillFormError, match="expected text"):
        parse_offsets({"0": 1}, "stop_offsets")  # type: ignore[arg-type]


def test_offsets_must_exist_in_the_topic() -> None:
    beginning, end = {0: 10, 1: 0}, {0: 100, 1: 50}
    check_offsets_in_topic({0: 10, 1: 50}, beginning, end, "f")
    with pytest.raises(BackfillFormError, match="no partition 2"):
        check_offsets_in_topic({2: 0}, beginning, end, "f")
    with pytest.raises(BackfillFormError, match="ends at 100"):
        check_offsets_in_topic({0: 101}, beginning, end, "f")
    with pytest.raises(BackfillFormError, match="deleted by retention"):
        check_offsets_in_topic({0: 9}, beginning, end, "f")


# -- timestamps ---------------------------------------------------------


def test_timestamps_parse() -> None:
    assert parse_timestamp_ms("2026-01-01T00:00:00Z", NOW_MS) == 1_767_225_600_000
    assert parse_timestamp_ms("2026-01-01T01:00:00+01:00", NOW_MS) == 1_767_225_600_000
    assert parse_timestamp_ms(" 1970-01-01T00:00:00Z ", NOW_MS) == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2099-01-01T00:00:00Z", "in the future"),
        ("2026-05-28T23:59:59Z", "in the future"),
        ("9999-12-31T23:59:59Z", "in the future"),
        ("1969-12-31T23:59:59Z", "before 1970"),
        ("0001-01-01T00:00:00+00:00", "before 1970"),
        ("2026-01-01T00:00:00", "time zone"),
        ("2026-13-01T00:00:00Z", "not an ISO-8601"),
        ("2026-02-30T00:00:00Z", "not an ISO-8601"),
        ("99999-01-01T00:00:00Z", "not an ISO-8601"),
        ("yesterday", "not an ISO-8601"),
        ("now()", "not an ISO-8601"),
        ("1767225600000", "not an ISO-8601"),
        ("2026-01-01T00:00:00Z; DROP TABLE x", "not an ISO-8601"),
        ("2026-01-01T00:00:00Z'--", "not an ISO-8601"),
        ("\uff12\uff10\uff12\uff16-01-01T00:00:00Z", "not an ISO-8601"),  # fullwidth digits
        ("2026-01-01T00:00:00Z" + "0" * 100, "too long"),
        ("", "required"),
        (None, "required"),
    ],
)
def test_bad_timestamps_are_refused(text: str | None, message: str) -> None:
    with pytest.raises(BackfillFormError, match=message):
        parse_timestamp_ms(text, NOW_MS)


# -- the whole backfill form ---------------------------------------------


class FakeTopic:
    """Offsets of a two-partition topic; records every broker call made."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from cdc_iceberg import kafka_offsets

        def beginning(settings: Settings, topic: str | None = None) -> dict[int, int]:
            self.calls.append(f"beginning:{settings.iceberg_table}")
            return {0: 5, 1: 0}

        def end(settings: Settings, topic: str | None = None) -> dict[int, int]:
            self.calls.append("end")
            return {0: 100, 1: 40}

        def for_time(settings: Settings, timestamp_ms: int) -> dict[int, int]:
            self.calls.append(f"time:{timestamp_ms}")
            return {0: 50, 1: 20}

        monkeypatch.setattr(kafka_offsets, "beginning_offsets", beginning)
        monkeypatch.setattr(kafka_offsets, "end_offsets", end)
        monkeypatch.setattr(kafka_offsets, "offsets_for_timestamp", for_time)


@pytest.fixture
def topic(monkeypatch: pytest.MonkeyPatch) -> FakeTopic:
    fake = FakeTopic()
    fake.install(monkeypatch)
    return fake


BASE = Settings(checkpoint_location="/data/checkpoints/cdc")


def test_backfill_form_resolves_to_offsets(topic: FakeTopic) -> None:
    plan = plan_backfill(
        {
            "start_from": "offsets",
            "start_offsets": '{"0": 10, "1": 0}',
            "stop_at": "offsets",
            "stop_offsets": '{"0": 90, "1": 40}',
            "target_table": "neuronews.articles_copy",
        },
        "manual__2026-01-01T00:00:00+00:00",
        BASE,
    )
    assert plan["table"] == "neuronews.articles_copy"
    assert plan["starting_offsets"] == '{"neuronews.public.articles": {"0": 10, "1": 0}}'
    assert plan["stop_offsets"] == '{"0": 90, "1": 40}'
    assert plan["checkpoint"] == "/data/checkpoints/cdc_backfill/manual__2026-01-01T00_00_00_00_00"
    assert plan["consumer_group"] == f"{BASE.kafka_consumer_group}_backfill"


@pytest.mark.parametrize("table", [f"neuronews.{bad}" for bad in INJECTIONS] + [42, ["a.b"]])
def test_backfill_refuses_injected_table_before_touching_kafka(
    topic: FakeTopic, table: Any
) -> None:
    with pytest.raises(BackfillFormError, match="target_table"):
        plan_backfill({"target_table": table}, "run", BASE)
    assert topic.calls == []


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"start_from": "earliest; DROP TABLE x"}, "start_from"),
        ({"start_from": "EARLIEST"}, "start_from"),
        ({"start_from": ["earliest"]}, "start_from"),
        ({"stop_at": "forever"}, "stop_at"),
        ({"start_from": "timestamp", "start_timestamp": "2099-01-01T00:00:00Z"}, "future"),
        ({"start_from": "timestamp", "start_timestamp": "' OR 1=1 --"}, "ISO-8601"),
        ({"start_from": "timestamp"}, "required"),
        ({"start_from": "offsets", "start_offsets": '{"0": -1}'}, "negative"),
        ({"start_from": "offsets"}, "required"),
        ({"stop_at": "offsets", "stop_offsets": '{"0": 1e30}'}, "not partition"),
    ],
)
def test_backfill_refuses_bad_choices_before_touching_kafka(
    topic: FakeTopic, form: dict[str, Any], message: str
) -> None:
    with pytest.raises(BackfillFormError, match=message):
        plan_backfill(form, "run", BASE)
    assert topic.calls == []


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"start_from": "offsets", "start_offsets": '{"7": 0}'}, "no partition 7"),
        ({"start_from": "offsets", "start_offsets": '{"0": 1000}'}, "ends at 100"),
        ({"start_from": "offsets", "start_offsets": '{"0": 1}'}, "deleted by retention"),
        ({"stop_at": "offsets", "stop_offsets": '{"0": 101}'}, "ends at 100"),
        ({"stop_at": "offsets", "stop_offsets": '{"0": 4}'}, "before its start"),
    ],
)
def test_backfill_offsets_are_checked_against_the_topic(
    topic: FakeTopic, form: dict[str, Any], message: str
) -> None:
    with pytest.raises(BackfillFormError, match=message):
        plan_backfill(form, "run", BASE)


def test_a_future_timestamp_never_reaches_kafka_as_latest(topic: FakeTopic) -> None:
    plan = plan_backfill(
        {"start_from": "timestamp", "start_timestamp": "2026-01-01T00:00:00Z"}, "run", BASE
    )
    assert "time:1767225600000" in topic.calls
    assert plan["starting_offsets"] == '{"neuronews.public.articles": {"0": 50, "1": 20}}'


@pytest.mark.parametrize("run_id", ["..", ".", "../../etc", "/abs/path", "a/../../b", ".hidden"])
def test_run_ids_stay_inside_the_backfill_checkpoints(run_id: str) -> None:
    segment = run_segment(run_id)
    assert "/" not in segment
    assert segment not in ("", ".", "..")
    assert not segment.startswith(".")
    base = Path("/data/checkpoints/cdc_backfill")
    assert (base / segment).resolve().parent == base


# -- the reset form -------------------------------------------------------


@pytest.fixture
def reset_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    from cdc_iceberg import kafka_offsets, table_state

    monkeypatch.setattr(table_state, "committed_offsets", lambda settings: {0: 7})
    monkeypatch.setattr(kafka_offsets, "beginning_offsets", lambda settings: {0: 0})
    monkeypatch.setattr(kafka_offsets, "end_offsets", lambda settings: {0: 9})
    return Settings(checkpoint_location=str(tmp_path / "checkpoint"))


def test_reset_plans_a_valid_request(reset_state: Settings) -> None:
    plan = reset.plan_reset(reset_state, "offsets", " neuronews.articles ", "latest")
    assert (plan.offsets_before, plan.offsets_after) == ({0: 7}, {0: 9})


@pytest.mark.parametrize(
    ("scope", "confirm", "reset_to", "message"),
    [
        ("full-rebuild; DROP TABLE x", "neuronews.articles", "earliest", "scope"),
        ("Checkpoint", "neuronews.articles", "earliest", "scope"),
        (None, "neuronews.articles", "earliest", "scope"),
        ("offsets", "neuronews.articles; DROP TABLE x", "earliest", "confirmation"),
        ("offsets", "neuronews.\u0430rticles", "earliest", "confirmation"),  # Cyrillic a
        ("offsets", "NEURONEWS.ARTICLES", "earliest", "confirmation"),
        ("offsets", "neuronews.articles\u200b", "earliest", "confirmation"),
        ("offsets", "", "earliest", "confirmation"),
        ("offsets", None, "earliest", "confirmation"),
        ("offsets", "neuronews.articles", "-2", "reset_to"),
        ("offsets", "neuronews.articles", "earliest'--", "reset_to"),
    ],
)
def test_reset_refuses_bad_requests(
    reset_state: Settings, scope: Any, confirm: Any, reset_to: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        reset.plan_reset(reset_state, scope, confirm, reset_to)


@pytest.mark.parametrize("value", ["ture", "maybe", "2", "False; DROP", "on second thought"])
def test_dry_run_flag_refuses_anything_but_yes_or_no(value: str) -> None:
    with pytest.raises(AirflowFailException, match="dry_run"):
        flag(value, "dry_run", default=True)


def test_dry_run_flag_values() -> None:
    assert flag("False", "dry_run", default=True) is False
    assert flag(" true ", "dry_run", default=False) is True
    assert flag(None, "dry_run", default=True) is True
    assert flag("", "dry_run", default=True) is True
    assert flag(False, "dry_run", default=True) is False


def test_reset_operator_refuses_an_injected_table(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdc_airflow.operators import CdcResetOperator

    monkeypatch.setattr(backfill.Settings, "from_env", classmethod(lambda cls: Settings()))
    operator = CdcResetOperator(
        task_id="reset",
        scope="offsets",
        confirm="x",
        table="neuronews.articles; DROP TABLE neuronews.articles",
        kafka_conn_id="no_such_connection_for_this_test",
    )
    with pytest.raises(AirflowFailException, match="is not a table name"):
        operator.execute({})


# -- the forms' own schemas (first line of defence, in the UI) ---------------


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    from cdc_iceberg.settings import PROJECT_ROOT

    found = {}
    for dag_id in ("cdc_backfill", "cdc_reset"):
        bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / f"{dag_id}.py"))
        assert not bag.import_errors, bag.import_errors
        found[dag_id] = bag.dags[dag_id]
    return found


@pytest.mark.parametrize(
    ("dag_id", "name"), [("cdc_backfill", "target_table"), ("cdc_reset", "table")]
)
def test_table_params_refuse_injection(dags: dict[str, Any], dag_id: str, name: str) -> None:
    from airflow.sdk.definitions.param import Param

    schema = dags[dag_id].params.get_param(name).schema
    assert Param("neuronews.articles", **schema).resolve() == "neuronews.articles"
    for bad in INJECTIONS:
        with pytest.raises(Exception, match=r"(?i)invalid|does not match|too long|ParamValidation"):
            Param(f"neuronews.{bad}", **schema).resolve()
