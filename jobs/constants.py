"""Named constants of the tune job: job functions, Redis keys, id prefixes, default timings."""

from __future__ import annotations

# Job functions, referenced by dotted path so enqueuers never import the job code.
PERFORM_RUNS_FUNC = "jobs.tune_engagement.perform_runs"
SCHEDULED_FUNC = "jobs.runs.enqueue_scheduled_runs"

# RQ job ids may hold only letters, digits, "_" and "-".
RUN_JOB_PREFIX = "tune-runs-"
SCHEDULE_JOB_PREFIX = "engagement-loops-schedule-"

# Redis keys owned by this app (rq and rq-scheduler keep their own under "rq:").
SCHEDULER_HEARTBEAT_KEY = "engagement-loops:scheduler:alive"
SCHEDULE_RECONCILE_LOCK = "engagement-loops:schedule:reconcile"

# Calibration keys.
RATE_PREFIX = "engagement-rate:"
RATIO_PREFIX = "engagement-ratio:"

# PostgreSQL work_mem for the tune's aggregation transaction (SET LOCAL): the
# distinct-user counts of a large tenant sort tens of MB; the default 4MB spills to disk.
AGGREGATE_WORK_MEM = "64MB"

# Abandoned-run detection. A running job writes heartbeat_at every HEARTBEAT_S;
# a run whose heartbeat is older than STALE_AFTER_S is swept to failed by the next
# sweep (every worker every SWEEP_INTERVAL_S, the scheduler every loop, every
# status poll). After a SIGKILL the last heartbeat is at most HEARTBEAT_S old, it turns
# stale STALE_AFTER_S after it was written, and a sweep follows within SWEEP_INTERVAL_S:
# the run is failed at most STALE_AFTER_S + SWEEP_INTERVAL_S = 75 s after the kill.
DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_STALE_AFTER_S = 60.0
DEFAULT_SWEEP_INTERVAL_S = 15.0
DEFAULT_SCHEDULER_INTERVAL_S = 15

# "Run now — all tenants" fans out one RQ job per this many tenants (status stays
# per tenant). Fewer, larger jobs cut per-job queue overhead at 1,000 tenants.
DEFAULT_BATCH_SIZE = 50

ABANDONED = "abandoned"
ERROR_MAX_CHARS = 2000

# Results of finished jobs are only for operators (the tune_runs row is the record).
RUN_JOB_RESULT_TTL = 24 * 3600
RUN_JOB_FAILURE_TTL = 7 * 24 * 3600
