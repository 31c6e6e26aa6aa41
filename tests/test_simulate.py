"""The loop simulation: the policy decides a digest, the tenant is enforced, lift appears."""

from __future__ import annotations

import pytest

from dashboard.cli import simulate
from loops.delivery import PolicySettings
from tests.support.jobs import NOW

pytestmark = pytest.mark.slow


def test_three_weeks_close_the_loop(app) -> None:
    rows = simulate.simulate(3, PolicySettings(), now=NOW, echo=lambda _line: None)
    first, second, third = rows
    assert not first.enforced and first.modes["report.ready"] == "digest"
    assert first.modes["mention"] == "immediate"
    assert second.enforced and third.enforced
    # Reads of report.ready in digests count from week 2 on: the ratio moves up.
    assert third.ratios["report.ready"][0] > first.ratios["report.ready"][0]
    treated, holdout = third.lift["report.ready"]
    assert treated is not None and holdout is not None and treated > holdout
    lines = simulate.table(rows)
    assert lines[0].split() == [
        "week",
        "tenant",
        "feature",
        "mode",
        "ratio",
        "[95%",
        "interval]",
        "n",
        "treated",
        "holdout",
    ]
    assert any(line.split()[:4] == ["1", "shadow", "report.ready", "digest"] for line in lines)


def test_the_simulation_runs_once_per_database(app, runner) -> None:
    simulate.simulate(1, PolicySettings(), now=NOW, echo=lambda _line: None)
    again = runner.invoke(args=["demo", "simulate", "--weeks", "1"])
    assert again.exit_code == 1
    assert again.output.strip().splitlines() == [
        "Error: tenant loopback already exists: the simulation runs once per database"
    ]
