"""Cutting an all-tenant request into RQ jobs by tenant count and signal volume."""

from __future__ import annotations

import pytest

from jobs.job_plan import PlannedJob, plan_jobs


def test_a_tenant_larger_than_the_budget_is_a_job_alone_and_goes_first() -> None:
    volumes = {1: 900, 2: 400, 3: 50, 4: 40, 5: 30}
    jobs = plan_jobs([1, 2, 3, 4, 5], volumes, max_tenants=50, max_signals=500)
    assert jobs == [PlannedJob((1,), 900), PlannedJob((2, 3, 4), 490), PlannedJob((5,), 30)]


def test_small_tenants_fill_jobs_up_to_the_tenant_count() -> None:
    jobs = plan_jobs(list(range(1, 8)), {}, max_tenants=3, max_signals=1_000)
    assert [j.run_ids for j in jobs] == [(1, 2, 3), (4, 5, 6), (7,)]
    assert all(j.signals == 0 for j in jobs)


def test_every_run_is_in_exactly_one_job_and_limits_hold() -> None:
    volumes = {r: (r * 7919) % 1_000 for r in range(1, 301)}
    jobs = plan_jobs(list(volumes), volumes, max_tenants=20, max_signals=2_500)
    runs = [r for j in jobs for r in j.run_ids]
    assert sorted(runs) == list(volumes)
    for j in jobs:
        assert len(j.run_ids) <= 20
        assert j.signals == sum(volumes[r] for r in j.run_ids)
        assert j.signals <= 2_500 or len(j.run_ids) == 1
    assert [j.signals for j in jobs] == sorted((j.signals for j in jobs), reverse=True)


def test_the_count_limit_alone_reproduces_plain_batches() -> None:
    """Unknown volumes (no tenant tuned yet): jobs of max_tenants in run order."""
    jobs = plan_jobs([5, 6, 7, 8, 9], {}, max_tenants=2, max_signals=10)
    assert [j.run_ids for j in jobs] == [(5, 6), (7, 8), (9,)]


def test_no_runs_no_jobs_and_bad_limits_refused() -> None:
    assert plan_jobs([], {}, max_tenants=5, max_signals=5) == []
    with pytest.raises(ValueError):
        plan_jobs([1], {}, max_tenants=0, max_signals=5)
