"""Two drains launched on one checkpoint: one applies everything, the other is refused.

Both are spark-submitted at the same moment on the same pipeline. The one
that takes the checkpoint lock first drains the topic; the other must stop
with exit code 2 and a message naming the checkpoint, having written nothing,
while the first is still running. Then every invariant holds.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from harness import describe, run_job, start_job, wait_job
from invariants import assert_rerun_changes_nothing, check_invariants
from support import send

from cdc_iceberg.generator import ArticleSource
from cdc_iceberg.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.faults]

NAME = "two drains launched on one checkpoint"


def test_second_drain_on_one_checkpoint_is_refused(
    pipeline: Settings, scenario_report: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario_report(
        name=NAME,
        injected="two spark-submits of the drain started together on one checkpoint",
        invariants=["I1", "I2", "I3", "I4", "I5", "I6", "refused with exit 2"],
    )
    started = time.monotonic()
    # enough small batches that the winner is still draining when the loser starts
    settings = pipeline.replace(max_offsets_per_trigger=100)
    source = ArticleSource(seed=72, partitions=2)
    records = send(settings, source.random_history(1500, 200, snapshot_rows=50), 2)

    first, second = start_job(settings), start_job(settings)
    outcomes: dict[str, Any] = {}
    while len(outcomes) < 2:
        for name, job in (("first", first), ("second", second)):
            if name not in outcomes and not job.running():
                outcomes[name] = (time.monotonic(), wait_job(job))
        time.sleep(0.2)

    refused = [n for n, (_, r) in outcomes.items() if r.returncode == 2]
    won = [n for n, (_, r) in outcomes.items() if r.returncode == 0]
    details = {n: describe(r, 1500) for n, (_, r) in outcomes.items()}
    assert len(refused) == 1 and len(won) == 1, f"expected one refusal, one success: {details}"
    loser, winner = outcomes[refused[0]], outcomes[won[0]]
    assert "another drain is running on checkpoint" in loser[1].stdout + loser[1].stderr
    assert '"event": "cdc_drain_failed"' in loser[1].stdout
    assert loser[0] < winner[0], "the refusal came only after the winner had finished"
    assert "cdc_batch" not in loser[1].stdout, "the refused drain ran a batch"

    counts = check_invariants(settings, records)
    assert_rerun_changes_nothing(settings, lambda: run_job(settings))
    counts["refused_before_winner_ended_s"] = round(winner[0] - loser[0], 1)
    scenario_report(name=NAME, counts=counts)
    with capsys.disabled():
        print(f"\n{NAME}: {time.monotonic() - started:.0f} s, {counts}")
