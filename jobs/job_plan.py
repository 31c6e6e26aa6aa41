"""How an all-tenant request is cut into RQ jobs: by signal volume as well as tenant count.

Pure: it takes each run's expected volume and returns the jobs, heaviest first.

Tenants are far from equal (at the bench's 1,000 tenants the 50 largest hold two thirds
of the signals). Cut by count alone, the job holding the largest tenants sets the wall
time of the whole run while the other workers sit idle. So a job holds at most
``max_tenants`` tenants *and* at most ``max_signals`` signals (a tenant larger than that
is a job alone), and the jobs are enqueued heaviest first: the workers take the long
jobs first and the small ones fill in behind them, the usual longest-first rule for
spreading jobs over identical workers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PlannedJob:
    """One RQ job: its runs (ascending ids) and their expected signals."""

    run_ids: tuple[int, ...]
    signals: int


def plan_jobs(
    run_ids: Sequence[int],
    signals_by_run: Mapping[int, int],
    *,
    max_tenants: int,
    max_signals: int,
) -> list[PlannedJob]:
    """Pack runs into jobs of at most ``max_tenants`` runs and ``max_signals`` signals.

    A run missing from ``signals_by_run`` (a tenant never tuned) counts as 0. The
    largest runs are packed first, each job is filled as far as both limits allow,
    and the jobs come back heaviest first (ties by their first run id). Every run
    is in exactly one job.
    """
    if max_tenants < 1 or max_signals < 1:
        raise ValueError("max_tenants and max_signals must be at least 1")
    volume = {int(r): max(0, int(signals_by_run.get(r, 0))) for r in run_ids}
    order = sorted(volume, key=lambda r: (-volume[r], r))
    jobs: list[PlannedJob] = []
    current: list[int] = []
    load = 0
    for run_id in order:
        v = volume[run_id]
        if current and (len(current) >= max_tenants or load + v > max_signals):
            jobs.append(PlannedJob(tuple(sorted(current)), load))
            current, load = [], 0
        current.append(run_id)
        load += v
    if current:
        jobs.append(PlannedJob(tuple(sorted(current)), load))
    return sorted(jobs, key=lambda j: (-j.signals, j.run_ids[0]))
