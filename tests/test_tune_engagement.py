"""The tune job: the rate math, per-tenant orchestration, ratio, dry run, atomicity."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from jobs import tune_engagement
from jobs.runs import create_queued_runs, run_in_process
from jobs.tune_engagement import (
    compute_engagement_ratio,
    compute_engagement_scale,
    dry_run,
    tune_tenant,
)
from loops.database import db
from loops.models import Calibration, RunState, RunTrigger, SignalDailyCount, TuneRun
from loops.timeutil import utcnow
from tests.support.jobs import NOW, fresh_run

DAY = timedelta(days=1)

# --- the math: the seed's six, then properties ----------------------------------


def test_rate_is_signals_per_day() -> None:
    assert compute_engagement_scale(60, 30) == 2.0
    assert compute_engagement_scale(15, 30) == 0.5


def test_rate_is_zero_for_non_positive_days() -> None:
    assert compute_engagement_scale(10, 0) == 0.0
    assert compute_engagement_scale(10, -7) == 0.0


def test_rate_is_zero_for_non_positive_count() -> None:
    assert compute_engagement_scale(0, 30) == 0.0
    assert compute_engagement_scale(-5, 30) == 0.0


def test_rate_is_rounded_to_four_decimals() -> None:
    assert compute_engagement_scale(1, 3) == 0.3333
    assert compute_engagement_scale(2, 3) == 0.6667
    assert compute_engagement_scale(10, 7) == 1.4286


def test_rate_is_zero_for_non_finite_input() -> None:
    for count, days in [
        (math.nan, 30),
        (10, math.nan),
        (math.inf, 30),
        (10, math.inf),
        (-math.inf, 1),
    ]:
        assert compute_engagement_scale(count, days) == 0.0


def test_rate_accepts_fractional_counts_and_days() -> None:
    assert compute_engagement_scale(7.5, 2.5) == 3.0
    assert compute_engagement_scale(1, 30) == 0.0333


finite = st.floats(allow_nan=True, allow_infinity=True)
realistic_count = st.integers(min_value=-1000, max_value=10**9)
realistic_days = st.floats(min_value=-10, max_value=3650, allow_nan=False)


@given(finite, finite)
def test_rate_is_never_negative_nan_or_infinite(count: float, days: float) -> None:
    rate = compute_engagement_scale(count, days)
    assert math.isfinite(rate)
    assert rate >= 0.0


@given(realistic_count, realistic_days)
def test_rate_has_at_most_four_decimals(count: int, days: float) -> None:
    rate = compute_engagement_scale(count, days)
    assert round(rate, 4) == rate


@given(realistic_count, realistic_count, st.integers(min_value=1, max_value=3650))
def test_rate_is_monotone_in_count(a: int, b: int, days: int) -> None:
    low, high = sorted((a, b))
    assert compute_engagement_scale(low, days) <= compute_engagement_scale(high, days)


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6))
def test_ratio_is_a_fraction_with_four_decimals(engaged: int, delivered: int) -> None:
    ratio = compute_engagement_ratio(engaged, delivered)
    assert 0.0 <= ratio <= 1.0
    assert round(ratio, 4) == ratio
    if delivered == 0:
        assert ratio == 0.0


def test_ratio_examples() -> None:
    assert compute_engagement_ratio(3, 4) == 0.75
    assert compute_engagement_ratio(1, 3) == 0.3333
    assert compute_engagement_ratio(0, 5) == 0.0
    assert compute_engagement_ratio(5, 0) == 0.0


# --- orchestration ---------------------------------------------------------------


def calibrations(org_id: int) -> dict[str, Calibration]:
    db.session.rollback()
    rows = db.session.execute(
        select(Calibration)
        .where(Calibration.org_id == org_id)
        .execution_options(populate_existing=True)
    ).scalars()
    return {c.key: c for c in rows}


def tune(org_ids: list[int] | None = None, now=NOW):  # type: ignore[no-untyped-def]
    results, _ = run_in_process(org_ids, trigger=RunTrigger.CLI, requested_by="test", now=now)
    return {r.org_id: r for r in results}


def test_loops_disabled_records_skipped_runs_and_writes_nothing(app, make, signals) -> None:
    org = make.org()
    signals.engage(org, "mention", NOW - DAY)
    for value in ("false", "TRUE", "1", "yes", ""):
        app.config["LOOPS_ENABLED"] = value
        result = tune([org.id])[org.id]
        assert result.state == RunState.SKIPPED.value
        assert fresh_run(result.run_id).state == "skipped"
        assert fresh_run(result.run_id).finished_at is not None
    assert calibrations(org.id) == {}


def test_every_tenant_is_tuned(make, signals) -> None:
    orgs = [make.org(f"tenant-{i}") for i in range(3)]
    for i, org in enumerate(orgs):
        signals.engage_many(org, "mention", NOW - 2 * DAY, 30 * (i + 1))
    results = tune()
    assert set(results) == {o.id for o in orgs}
    for i, org in enumerate(orgs):
        assert results[org.id].state == "succeeded"
        assert results[org.id].calibrations_written == 1
        assert calibrations(org.id)["engagement-rate:mention"].value == float(i + 1)
        run = fresh_run(results[org.id].run_id)
        assert (run.trigger, run.requested_by, run.calibrations_written) == ("cli", "test", 1)
        assert run.started_at is not None and run.finished_at is not None


def test_one_failing_tenant_does_not_stop_the_others_nor_half_write(
    make, signals, monkeypatch
) -> None:
    good_before, bad, good_after = make.org("a-good"), make.org("b-bad"), make.org("c-good")
    for org in (good_before, bad, good_after):
        signals.engage_many(org, "mention", NOW - DAY, 30)
    real_apply = tune_engagement.rollup.apply_many

    def apply_many(changes_by_org):  # type: ignore[no-untyped-def]
        # Fails after the calibrations were already flushed: first the chunk's
        # shared write, then the bad tenant's own when each is written alone.
        if bad.id in changes_by_org:
            raise RuntimeError("disk on fire")
        return real_apply(changes_by_org)

    monkeypatch.setattr(tune_engagement.rollup, "apply_many", apply_many)
    results = tune()
    assert results[good_before.id].state == "succeeded"
    assert results[good_after.id].state == "succeeded"
    assert results[bad.id].state == "failed"
    run = fresh_run(results[bad.id].run_id)
    assert run.state == "failed"
    assert run.error == "RuntimeError: disk on fire"
    assert run.calibrations_written == 0
    assert calibrations(bad.id) == {}  # rolled back as one transaction
    assert "engagement-rate:mention" in calibrations(good_after.id)


def test_signals_are_aggregated_per_feature(make, signals) -> None:
    org, other = make.org(), make.org()
    signals.engage_many(org, "mention", NOW - 3 * DAY, 45, users=9)
    signals.engage_many(org, "comment.reply", NOW - 10 * DAY, 6, users=2)
    signals.engage_many(other, "mention", NOW - DAY, 300)  # another tenant's: not counted
    signals.delivery(org, "mention", NOW - 3 * DAY)  # a DELIVER is not an ENGAGE
    result = tune([org.id])[org.id]
    cal = calibrations(org.id)
    assert cal["engagement-rate:mention"].value == 1.5
    assert cal["engagement-rate:mention"].sample_size == 45
    assert cal["engagement-rate:mention"].distinct_users == 9
    assert cal["engagement-rate:mention"].window_days == 30
    assert cal["engagement-rate:mention"].computed_at == NOW
    assert cal["engagement-rate:mention"].run_id == result.run_id
    assert cal["engagement-rate:comment.reply"].value == 0.2
    assert cal["engagement-rate:comment.reply"].distinct_users == 2


def test_lookback_window_is_half_open_thirty_days(make, signals) -> None:
    org = make.org()
    boundary = NOW - timedelta(days=30)
    signals.engage(org, "mention", boundary)  # exactly at the boundary: in
    signals.engage(org, "mention", boundary + timedelta(seconds=1))  # a second inside: in
    signals.engage(org, "mention", boundary - timedelta(seconds=1))  # a second outside: out
    signals.engage(org, "mention", NOW)  # at "now": out (the window ends before now)
    signals.engage(org, "mention", NOW - timedelta(seconds=1))  # in
    tune([org.id])
    assert calibrations(org.id)["engagement-rate:mention"].sample_size == 3
    assert calibrations(org.id)["engagement-rate:mention"].value == 0.1


def test_lookback_follows_config(app, make, signals) -> None:
    app.config["TUNE_LOOKBACK_DAYS"] = 7
    org = make.org()
    signals.engage_many(org, "mention", NOW - 6 * DAY, 14)
    signals.engage_many(org, "mention", NOW - 8 * DAY, 100)
    tune([org.id])
    cal = calibrations(org.id)["engagement-rate:mention"]
    assert (cal.value, cal.sample_size, cal.window_days) == (2.0, 14, 7)


def test_existing_rows_update_in_place_and_new_ones_are_created(make, signals) -> None:
    org = make.org()
    signals.engage_many(org, "mention", NOW - DAY, 30)
    first = tune([org.id], now=NOW)[org.id]
    before = calibrations(org.id)["engagement-rate:mention"]
    row_id = before.id
    signals.engage_many(org, "mention", NOW + DAY - timedelta(hours=1), 30)
    signals.engage_many(org, "report.ready", NOW + DAY - timedelta(hours=1), 3)
    second = tune([org.id], now=NOW + DAY)[org.id]
    cal = calibrations(org.id)
    after = cal["engagement-rate:mention"]
    assert after.id == row_id  # same row, updated in place
    assert after.value == 2.0 and after.sample_size == 60
    # It explains itself: what it replaced, and which runs wrote each.
    assert (after.previous_value, after.previous_sample_size) == (1.0, 30)
    assert after.previous_computed_at == NOW
    assert (after.run_id, after.previous_run_id) == (second.run_id, first.run_id)
    assert cal["engagement-rate:report.ready"].value == 0.1
    assert cal["engagement-rate:report.ready"].previous_value is None
    count = db.session.execute(
        select(func.count()).select_from(Calibration).where(Calibration.org_id == org.id)
    ).scalar_one()
    assert count == 2


def test_features_without_signals_keep_their_old_row(make, signals) -> None:
    org = make.org()
    signals.engage_many(org, "digest.weekly", NOW - 40 * DAY, 10)
    signals.engage_many(org, "digest.weekly", NOW - 35 * DAY, 10)
    signals.engage_many(org, "mention", NOW - DAY, 3)
    tune([org.id], now=NOW - 20 * DAY)
    old = calibrations(org.id)["engagement-rate:digest.weekly"]
    tune([org.id], now=NOW)  # digest.weekly has no signals in this window
    kept = calibrations(org.id)["engagement-rate:digest.weekly"]
    assert (kept.id, kept.value, kept.computed_at) == (old.id, old.value, NOW - 20 * DAY)
    assert calibrations(org.id)["engagement-rate:mention"].computed_at == NOW


def test_engagement_ratio_is_the_share_of_deliveries_first_read(make, signals) -> None:
    org = make.org()
    t = NOW - 5 * DAY
    signals.delivery(org, "mention", t, read_at=t + timedelta(hours=1), user_id=1)
    signals.delivery(org, "mention", t, read_at=t + timedelta(hours=2), user_id=2)
    signals.delivery(org, "mention", t, read_at=None, user_id=2)
    signals.delivery(org, "mention", t, read_at=NOW + timedelta(hours=1), user_id=3)  # read later
    # Delivered before the window: neither numerator nor denominator, even if read inside.
    signals.delivery(org, "mention", NOW - 31 * DAY, read_at=NOW - DAY)
    # Delivered but never read, for a feature nobody engaged with.
    signals.delivery(org, "billing.alert", t)
    tune([org.id])
    cal = calibrations(org.id)
    ratio = cal["engagement-ratio:mention"]
    assert (ratio.value, ratio.sample_size, ratio.distinct_users) == (0.5, 4, 3)
    assert cal["engagement-ratio:billing.alert"].value == 0.0
    assert "engagement-rate:billing.alert" not in cal
    # The rate counts ENGAGE in the window, including the one for the old delivery.
    assert cal["engagement-rate:mention"].sample_size == 3


def test_ratio_is_skipped_when_nothing_was_delivered(make, signals) -> None:
    org = make.org()
    signals.engage_many(org, "mention", NOW - DAY, 5)
    tune([org.id])
    assert set(calibrations(org.id)) == {"engagement-rate:mention"}


def test_ratio_rounds_to_four_decimals(make, signals) -> None:
    org = make.org()
    for i in range(3):
        signals.delivery(org, "mention", NOW - DAY, read_at=NOW - DAY if i == 0 else None)
    tune([org.id])
    assert calibrations(org.id)["engagement-ratio:mention"].value == 0.3333


def test_run_refreshes_the_daily_counts_the_charts_read(make, signals) -> None:
    org = make.org()
    signals.engage_many(org, "mention", NOW - 2 * DAY, 4)
    signals.delivery(org, "mention", NOW - 2 * DAY)
    tune([org.id])
    rows = db.session.execute(
        select(SignalDailyCount.kind, SignalDailyCount.count).where(
            SignalDailyCount.org_id == org.id, SignalDailyCount.day == (NOW - 2 * DAY).date()
        )
    ).all()
    assert sorted(rows) == [("DELIVER", 1), ("ENGAGE", 4)]


def test_dry_run_reports_changes_and_writes_nothing(make, signals) -> None:
    org = make.org()
    signals.engage_many(org, "mention", NOW - DAY, 30, users=3)
    tune([org.id], now=NOW)
    signals.engage_many(org, "mention", NOW + DAY - timedelta(hours=1), 6)
    signals.delivery(org, "task.assigned", NOW)
    runs_before = db.session.execute(select(func.count()).select_from(TuneRun)).scalar_one()
    changes = {c.key: c for c in dry_run(org.id, NOW + DAY)}
    mention = changes["engagement-rate:mention"]
    assert (mention.old_value, mention.new_value, mention.sample_size) == (1.0, 1.2, 36)
    assert mention.change_pct == 20.0
    assert mention.distinct_users == 3
    ratio = changes["engagement-ratio:task.assigned"]
    assert (ratio.old_value, ratio.new_value, ratio.change_pct) == (None, 0.0, None)
    assert calibrations(org.id)["engagement-rate:mention"].value == 1.0
    assert "engagement-ratio:task.assigned" not in calibrations(org.id)
    assert db.session.execute(select(func.count()).select_from(TuneRun)).scalar_one() == (
        runs_before
    )


def test_a_run_that_is_not_queued_is_left_alone(make, signals) -> None:
    """A duplicate delivery of a job (or a swept run) never tunes twice."""
    org = make.org()
    signals.engage_many(org, "mention", NOW - DAY, 30)
    result = tune([org.id])[org.id]
    before = calibrations(org.id)["engagement-rate:mention"]
    again = tune_tenant(org.id, result.run_id, NOW + DAY)
    assert again.state == "succeeded" and again.calibrations_written == 0
    after = calibrations(org.id)["engagement-rate:mention"]
    assert (after.computed_at, after.previous_value) == (before.computed_at, None)


def test_a_run_swept_while_working_writes_nothing(app, make, signals, monkeypatch) -> None:
    org = make.org()
    signals.engage_many(org, "mention", NOW - DAY, 30)
    _runs, created = create_queued_runs(
        [org.id], trigger=RunTrigger.MANUAL, requested_by="t", now=NOW
    )
    real = tune_engagement.compute_batch

    def swept_meanwhile(org_ids, now, lookback_days, **kw):  # type: ignore[no-untyped-def]
        # Another process (a status poll) declares the run abandoned mid-way.
        with db.engine.begin() as conn:
            conn.execute(
                text("UPDATE tune_runs SET state='failed', error='abandoned: test' WHERE id=:i"),
                {"i": created[0]},
            )
        return real(org_ids, now, lookback_days, **kw)

    monkeypatch.setattr(tune_engagement, "compute_batch", swept_meanwhile)
    result = tune_tenant(org.id, created[0], NOW)
    assert result.state == "failed"
    assert fresh_run(created[0]).error == "abandoned: test"
    assert calibrations(org.id) == {}


def test_test_hook_fails_named_tenants(app, make, signals) -> None:
    app.config["TUNE_TEST_FAIL_TENANTS"] = "bad-one"
    bad, good = make.org("bad-one"), make.org("good-one")
    for org in (bad, good):
        signals.engage_many(org, "mention", NOW - DAY, 3)
    results = tune()
    assert results[bad.id].state == "failed"
    assert "TUNE_TEST_FAIL_TENANTS" in (results[bad.id].error or "")
    assert results[good.id].state == "succeeded"


@pytest.mark.parametrize("lookback", [1, 30, 90])
def test_the_rate_is_count_over_the_configured_window(app, make, signals, lookback) -> None:
    app.config["TUNE_LOOKBACK_DAYS"] = lookback
    org = make.org()
    signals.engage_many(org, "mention", NOW - timedelta(hours=1), 45)
    tune([org.id])
    assert calibrations(org.id)["engagement-rate:mention"].value == compute_engagement_scale(
        45, lookback
    )


def test_the_whole_loop_through_the_api(make, api_as) -> None:
    """Deliver through the API, read some, tune, and read the calibrations back."""
    from loops.models import Role

    admin, viewer, reader = make.user(role=Role.ADMIN), make.user(role=Role.VIEWER), make.user()
    org = make.org("acme")
    make.member(reader, org)
    sender, client, looker = api_as(admin), api_as(reader), api_as(viewer)
    cold = looker.get("/api/v1/orgs/acme/calibrations/engagement-rate:mention").get_json()
    assert cold["value"] is None  # cold start
    ids = [
        sender.post(
            "/api/v1/notifications", json={"user_id": reader.id, "feature": "mention", "title": "t"}
        ).get_json()["id"]
        for _ in range(4)
    ]
    for nid in ids[:3]:
        assert client.post(f"/api/v1/notifications/{nid}/read").get_json()["first_read"]
    client.delete(f"/api/v1/notifications/{ids[0]}/read")
    client.post(f"/api/v1/notifications/{ids[0]}/read")  # not a first read again
    tune([org.id], now=utcnow() + timedelta(seconds=1))
    rate = looker.get("/api/v1/orgs/acme/calibrations/engagement-rate:mention").get_json()
    ratio = looker.get("/api/v1/orgs/acme/calibrations/engagement-ratio:mention").get_json()
    assert (rate["value"], rate["sample_size"]) == (0.1, 3)
    assert (ratio["value"], ratio["sample_size"]) == (0.75, 4)


# --- chunks: one aggregation for many tenants, each still its own run ------------


def test_a_chunk_of_tenants_gets_the_same_calibrations_as_each_tenant_alone(make, signals) -> None:
    orgs = [make.org(f"chunk-{i}") for i in range(4)]
    for i, org in enumerate(orgs):
        signals.engage_many(org, "mention", NOW - DAY, 3 * (i + 1), users=i + 1)
        for j in range(i + 2):
            signals.delivery(org, "task.assigned", NOW - 2 * DAY, NOW - DAY if j % 2 else None)
    together = tune_engagement.compute_batch([o.id for o in orgs], NOW, 30)
    for org in orgs:
        # The estimate's prior sees the other tenants' fresh counts only when they are
        # in the same batch (alone, it sees their stored ones: none yet here).
        alone = tune_engagement.compute_calibrations(org.id, NOW, 30)
        assert [replace(c, estimate=None) for c in together[org.id]] == [
            replace(c, estimate=None) for c in alone
        ]
    last = {c.key: c for c in together[orgs[3].id]}
    assert last["engagement-rate:mention"].sample_size == 12
    assert last["engagement-rate:mention"].distinct_users == 4
    ratio = last["engagement-ratio:task.assigned"]
    assert (ratio.sample_size, ratio.value) == (5, 0.4)  # 2 of 5 deliveries first-read


def test_a_failed_chunk_aggregate_falls_back_to_each_tenant_alone(
    make, signals, monkeypatch, caplog
) -> None:
    orgs = [make.org(f"fallback-{i}") for i in range(3)]
    for org in orgs:
        signals.engage_many(org, "mention", NOW - DAY, 30)
    real = tune_engagement.compute_batch

    def only_single_tenants(org_ids, now, lookback_days, **kw):  # type: ignore[no-untyped-def]
        if len(org_ids) > 1:
            raise RuntimeError("statement timeout")
        return real(org_ids, now, lookback_days, **kw)

    monkeypatch.setattr(tune_engagement, "compute_batch", only_single_tenants)
    results = tune([o.id for o in orgs])
    assert {r.state for r in results.values()} == {"succeeded"}
    for org in orgs:
        assert calibrations(org.id)["engagement-rate:mention"].value == 1.0
    assert "event=tune_batch_aggregate_failed tenants=3" in caplog.text


def test_a_chunk_claims_its_runs_before_aggregating(make, signals, monkeypatch) -> None:
    """While a chunk aggregates, each of its tenants shows as running, not queued."""
    orgs = [make.org(f"claimed-{i}") for i in range(3)]
    for org in orgs:
        signals.engage_many(org, "mention", NOW - DAY, 3)
    seen: list[set[str]] = []
    real = tune_engagement.compute_batch

    def watch(org_ids, now, lookback_days, **kw):  # type: ignore[no-untyped-def]
        with db.engine.connect() as conn:
            states = conn.execute(
                select(TuneRun.state).where(TuneRun.org_id.in_(list(org_ids)))
            ).scalars()
            seen.append(set(states))
        return real(org_ids, now, lookback_days, **kw)

    monkeypatch.setattr(tune_engagement, "compute_batch", watch)
    tune([o.id for o in orgs])
    assert seen == [{"running"}]


def test_unchanged_daily_counts_are_not_rewritten(make, signals) -> None:
    org = make.org()
    signals.engage_many(org, "mention", NOW - 2 * DAY, 4)
    tune([org.id])
    stored = tune_engagement.rollup.stored([org.id], (NOW - 30 * DAY).date())[org.id]
    recounted = tune_engagement.rollup.recount([org.id], (NOW - 30 * DAY).date())[org.id]
    assert stored == recounted
    assert tune_engagement.rollup.changes(stored, recounted) == ({}, [])


def test_a_later_run_recounts_the_days_since_the_previous_run(make, signals) -> None:
    """Days that ended before the last successful run are final; later days are recounted."""
    org = make.org()
    # A run stamps its start with the clock, and the next run recounts from that day on:
    # the story is told around that start (a pinned NOW would drift out of the window
    # as the calendar moves on).
    start = utcnow()
    signals.engage_many(org, "mention", start - 10 * DAY, 2)
    first = tune([org.id], now=start)[org.id]
    first_day = fresh_run(first.run_id).started_at
    assert first_day is not None
    # A day the periodic refresh missed (workers down), after the first run: healed.
    signals.engage_many(org, "mention", first_day + DAY, 3)
    later = first_day + 2 * DAY
    tune([org.id], now=later)
    counts = tune_engagement.rollup.stored([org.id], (later - 40 * DAY).date())[org.id]
    assert counts[("ENGAGE", "mention", (first_day + DAY).date())] == 3
    assert counts[("ENGAGE", "mention", (start - 10 * DAY).date())] == 2


def test_the_first_run_recounts_the_whole_window(make, signals) -> None:
    org = make.org()
    signals.engage_many(org, "mention", NOW - 29 * DAY, 5)
    tune([org.id])
    counts = tune_engagement.rollup.stored([org.id], (NOW - 40 * DAY).date())[org.id]
    assert counts == {("ENGAGE", "mention", (NOW - 29 * DAY).date()): 5}


def test_a_run_swept_in_a_chunk_leaves_the_other_tenants_written(
    make, signals, monkeypatch
) -> None:
    orgs = [make.org(f"swept-chunk-{i}") for i in range(3)]
    for org in orgs:
        signals.engage_many(org, "mention", NOW - DAY, 30)
    _runs, created = create_queued_runs(
        [o.id for o in orgs], trigger=RunTrigger.MANUAL, requested_by="t", now=NOW
    )
    victim = created[1]
    real = tune_engagement.compute_batch

    def swept_meanwhile(org_ids, now, lookback_days, **kw):  # type: ignore[no-untyped-def]
        with db.engine.begin() as conn:
            conn.execute(
                text("UPDATE tune_runs SET state='failed', error='abandoned: test' WHERE id=:i"),
                {"i": victim},
            )
        return real(org_ids, now, lookback_days, **kw)

    monkeypatch.setattr(tune_engagement, "compute_batch", swept_meanwhile)
    results = {r.run_id: r for r in tune_engagement.perform_runs_now(created, now=NOW)}
    assert results[victim].state == "failed"
    assert fresh_run(victim).error == "abandoned: test"
    assert calibrations(orgs[1].id) == {}
    for org, run_id in ((orgs[0], created[0]), (orgs[2], created[2])):
        assert results[run_id].state == "succeeded"
        assert calibrations(org.id)["engagement-rate:mention"].value == 1.0


def test_later_chunks_fit_their_prior_to_the_earlier_chunks_fresh_counts(
    make, signals, monkeypatch
) -> None:
    """A job reads the stored counts once; each chunk then sees its predecessors' new ones,
    exactly as if it had read them back from the database."""
    monkeypatch.setattr(tune_engagement, "AGGREGATE_CHUNK", 2)
    orgs = [make.org(f"prior-{i}") for i in range(5)]
    for i, org in enumerate(orgs):
        for j in range(10 + 5 * i):
            signals.delivery(
                org, "task.assigned", NOW - 2 * DAY, NOW - DAY if j % (i + 2) else None
            )
    tune([o.id for o in orgs])
    written = {o.id: calibrations(o.id)["engagement-ratio:task.assigned"].estimate for o in orgs}
    # The last chunk alone, reading every other tenant's counts from the database now.
    again = tune_engagement.compute_batch([orgs[4].id], NOW, 30)
    [ratio] = [c for c in again[orgs[4].id] if c.is_ratio]
    assert ratio.estimate == pytest.approx(written[orgs[4].id])
    assert len(set(written.values())) > 1  # the estimates differ: the test can tell them apart
