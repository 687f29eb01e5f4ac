"""Benchmark figures from two machines are never put side by side."""

from __future__ import annotations

from bench.run import carry_over, same_machine

HERE = {"cpu_model": "Intel(R) Xeon(R) Processor", "nproc": 2, "memory_gib": 23.5, "kernel": "a"}
SAME = {**HERE, "kernel": "b", "load_average_at_start": [3.0, 2.0, 1.0]}
OTHER_CPU = {**HERE, "cpu_model": "AMD EPYC"}
MORE_CORES = {**HERE, "nproc": 8}


def test_same_machine_compares_cpu_cores_and_memory_only() -> None:
    assert same_machine(HERE, SAME)
    assert not same_machine(HERE, OTHER_CPU)
    assert not same_machine(HERE, MORE_CORES)
    assert not same_machine(HERE, {**HERE, "memory_gib": 7.8})


def test_missing_facts_are_not_the_same_machine() -> None:
    assert not same_machine(HERE, None)
    assert not same_machine(None, HERE)
    assert not same_machine({}, {})
    bare = {"cpu_model": None, "nproc": None, "memory_gib": None}
    assert not same_machine(bare, bare)


def test_carry_over_keeps_only_contenders_measured_here() -> None:
    stored = {
        "written_at": "2026-11-28T09:35:00+0000",
        "machine": HERE,
        "contenders": {
            "product": {"drain_s": 300.0},  # this run measured it again: the fresh one stays
            "naive": {"drain_s": 70.0},  # measured by the stored run, on this machine
            "pyiceberg": {"drain_s": 500.0, "from_run": "older", "machine": OTHER_CPU},
            "append": {"drain_s": 150.0, "from_run": "2026-11-27T22:00:00+0000"},
        },
    }
    fresh = {"contenders": {"product": {"drain_s": 140.0}}}
    left = carry_over(stored, fresh, SAME)
    ran = fresh["contenders"]
    assert ran["product"] == {"drain_s": 140.0}
    assert ran["naive"]["drain_s"] == 70.0
    assert ran["naive"]["from_run"] == "2026-11-28T09:35:00+0000"
    assert ran["naive"]["machine"] == HERE
    assert ran["append"]["from_run"] == "2026-11-27T22:00:00+0000"
    assert "pyiceberg" not in ran
    assert left == ["pyiceberg"]


def test_carry_over_from_another_machine_keeps_nothing() -> None:
    stored = {"machine": OTHER_CPU, "contenders": {"naive": {"drain_s": 143.4}}}
    fresh = {"contenders": {"product": {"drain_s": 141.9}}}
    assert carry_over(stored, fresh, HERE) == ["naive"]
    assert set(fresh["contenders"]) == {"product"}
    assert carry_over(None, fresh, HERE) == []
