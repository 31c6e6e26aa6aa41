"""`tune run` from the command line: the table, exit codes, enqueue, dry run, one-line errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from loops.database import db
from loops.models import Calibration, TuneRun
from loops.redis_conn import make_redis
from loops.timeutil import utcnow

DAY = timedelta(days=1)


def rows(output: str) -> dict[str, list[str]]:
    """The per-tenant table, keyed by tenant slug."""
    table = {}
    for line in output.splitlines():
        parts = line.split()
        if parts and parts[0] != "tenant":
            table[parts[0]] = parts[1:]
    return table


def one_line_error(result, text: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert text in lines[0]
    assert "Traceback" not in result.output


@pytest.fixture
def tenants(make, signals):  # type: ignore[no-untyped-def]
    acme, globex = make.org("acme"), make.org("globex")
    signals.engage_many(acme, "mention", utcnow() - DAY, 60)
    signals.engage_many(globex, "mention", utcnow() - DAY, 30)
    signals.delivery(globex, "mention", utcnow() - DAY, read_at=utcnow() - DAY)
    return acme, globex


def test_tune_run_wait_prints_the_table_and_exits_zero(runner, tenants) -> None:
    result = runner.invoke(args=["tune", "run", "--wait"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].split() == [
        "tenant",
        "run",
        "state",
        "calibrations",
        "ms",
        "error",
    ]
    table = rows(result.output)
    assert table["acme"][1:3] == ["succeeded", "1"]
    assert table["globex"][1:3] == ["succeeded", "2"]
    assert all(cells[3].isdigit() for cells in table.values())  # ms
    values = dict(db.session.execute(select(Calibration.key, Calibration.value)).all())
    assert values["engagement-ratio:mention"] == 1.0
    runs = db.session.execute(select(TuneRun.trigger, TuneRun.requested_by)).all()
    assert all(t == "cli" and (who or "").startswith("cli") for t, who in runs)


def test_tune_run_wait_exits_non_zero_when_a_tenant_fails(app, runner, tenants) -> None:
    app.config["TUNE_TEST_FAIL_TENANTS"] = "acme"
    result = runner.invoke(args=["tune", "run", "--wait"])
    assert result.exit_code == 1
    table = rows(result.output)
    assert table["acme"][1] == "failed"
    assert "test hook" in " ".join(table["acme"])
    assert table["globex"][1:3] == ["succeeded", "2"]
    assert "1 of 2 tenant run(s) failed" in result.output


def test_tune_run_wait_for_one_tenant(runner, tenants) -> None:
    result = runner.invoke(args=["tune", "run", "--wait", "--tenant", "globex"])
    assert result.exit_code == 0, result.output
    assert set(rows(result.output)) == {"globex"}


def test_unknown_tenant_is_a_one_line_error(runner, tenants) -> None:
    for extra in ([], ["--wait"], ["--dry-run"]):
        one_line_error(
            runner.invoke(args=["tune", "run", "--tenant", "nope", *extra]),
            "no tenant with slug 'nope'",
        )


def test_tune_run_enqueues_and_prints_run_ids_de_duplicated(app, runner, tenants) -> None:
    first = runner.invoke(args=["tune", "run", "--tenant", "acme"])
    assert first.exit_code == 0, first.output
    assert first.output.startswith("run 1 tenant=acme state=queued")
    again = runner.invoke(args=["tune", "run"])
    assert "run 1 tenant=acme state=queued" in again.output
    assert "run 2 tenant=globex state=queued" in again.output
    assert db.session.execute(select(func.count()).select_from(TuneRun)).scalar_one() == 2


def test_tune_run_with_redis_down_is_a_one_line_error(app, runner, tenants) -> None:
    app.extensions["redis"] = make_redis("redis://127.0.0.1:1/0")
    one_line_error(runner.invoke(args=["tune", "run"]), "Redis")
    assert db.session.execute(select(func.count()).select_from(TuneRun)).scalar_one() == 0


def test_tune_run_wait_needs_no_redis(app, runner, tenants) -> None:
    app.extensions["redis"] = make_redis("redis://127.0.0.1:1/0")
    assert runner.invoke(args=["tune", "run", "--wait"]).exit_code == 0


def test_a_tenant_with_an_active_run_is_left_alone(runner, tenants) -> None:
    runner.invoke(args=["tune", "run", "--tenant", "acme"])  # queued for a worker
    result = runner.invoke(args=["tune", "run", "--wait"])
    assert result.exit_code == 0
    table = rows(result.output)
    assert table["acme"][1] == "queued" and "left alone" in " ".join(table["acme"])
    assert table["globex"][1] == "succeeded"


def test_dry_run_prints_the_difference_and_writes_nothing(runner, tenants) -> None:
    runner.invoke(args=["tune", "run", "--wait", "--tenant", "acme"])
    result = runner.invoke(args=["tune", "run", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "nothing written" in lines[0]
    acme = next(line.split() for line in lines if line.startswith("acme"))
    assert acme == ["acme", "engagement-rate:mention", "2.0000", "2.0000", "+0.0%", "60", "1"]
    globex = [line.split() for line in lines if line.startswith("globex")]
    assert ["globex", "engagement-ratio:mention", "-", "1.0000", "new", "1", "1"] in globex
    assert db.session.execute(select(func.count()).select_from(TuneRun)).scalar_one() == 1
    keys = db.session.execute(select(Calibration.key).where(Calibration.org_id == tenants[1].id))
    assert keys.all() == []
