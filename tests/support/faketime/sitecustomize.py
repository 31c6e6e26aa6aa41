"""Loaded only under tests/support/at_date.sh: time.sleep as a relative select().

That script leaves the monotonic clock real (libfaketime's shifted one makes Python's
timed lock waits sleep for the shift); libfaketime then refuses Python's absolute
clock_nanosleep with EINVAL, and a relative select() sleeps the same.
"""

import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    select.select([], [], [], seconds)


time.sleep = _sleep
