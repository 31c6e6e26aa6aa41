"""Errors the tune job's callers can act on, each with a message meant for people."""

from __future__ import annotations


class TuneError(Exception):
    """Base class for errors raised by the jobs package."""


class QueueUnavailable(TuneError):
    """Redis (the job queue) is unreachable, so nothing could be enqueued."""


class InvalidSchedule(TuneError):
    """The configured cron string cannot be parsed."""
