"""Named constants of the tune job: job functions, Redis keys, id prefixes, limits."""

from __future__ import annotations

from loops import calibrations

# Job functions, referenced by dotted path so enqueuers never import the job code.
PERFORM_RUNS_FUNC = "jobs.tune_engagement.perform_runs"
SCHEDULED_FUNC = "jobs.runs.enqueue_scheduled_runs"
DIGEST_FUNC = "jobs.digest.deliver_due_digests"
MAINTENANCE_FUNC = "jobs.maintenance.run_maintenance"

# Held notifications fall due on the hour (DIGEST_HOUR_UTC:00): the digest job runs hourly.
DIGEST_CRON = "0 * * * *"

# Daily signal maintenance (prune old signals, create partitions ahead): at a quiet
# hour, off the full hour so it does not start together with the digest.
MAINTENANCE_CRON = "17 3 * * *"
# Dropping a month partition waits for its lock and may first recount a month of
# signals into the daily counts: give it longer than a scheduled job's default.
MAINTENANCE_TIMEOUT_S = 3600

# RQ job ids may hold only letters, digits, "_" and "-".
RUN_JOB_PREFIX = "tune-runs-"
SCHEDULE_JOB_PREFIX = "engagement-loops-schedule-"

# Redis keys owned by this app (rq and rq-scheduler keep their own under "rq:").
SCHEDULER_HEARTBEAT_KEY = "engagement-loops:scheduler:alive"
SCHEDULE_RECONCILE_LOCK = "engagement-loops:schedule:reconcile"

# Calibration keys: written once, in the domain.
RATE_PREFIX = calibrations.RATE_PREFIX
RATIO_PREFIX = calibrations.RATIO_PREFIX

# PostgreSQL work_mem for the tune's aggregation transaction (SET LOCAL): the
# distinct-user counts of a large tenant sort tens of MB; the default 4MB spills to disk.
AGGREGATE_WORK_MEM = "64MB"
# ... and no parallel workers for it: a tune keeps every core busy with its own jobs
# (one per RQ worker), so a query's helper processes only add their start-up and
# contend with the other jobs; measured serial, the 10M-signal tune went from 9.5 s to
# 8.4 s and the 3M one from 3.9 s to 3.0 s (docs/PERFORMANCE.md).
AGGREGATE_PARALLEL_WORKERS = 0

# Abandoned-run timings (TUNE_HEARTBEAT_S, TUNE_STALE_AFTER_S, TUNE_SWEEP_INTERVAL_S) and
# TUNE_BATCH_SIZE are settings: defaults and reasoning in loops/settings.py.
DEFAULT_SCHEDULER_INTERVAL_S = 15

ERROR_MAX_CHARS = 2000

# Results of finished jobs are only for operators (the tune_runs row is the record).
RUN_JOB_RESULT_TTL = 24 * 3600
RUN_JOB_FAILURE_TTL = 7 * 24 * 3600
