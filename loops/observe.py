"""Hooks through which the domain and the jobs report what they did, for whoever measures it.

The domain knows nothing of Prometheus: the dashboard registers a listener
(``dashboard.metrics``) that turns these calls into metrics. With no listener
registered every call is a no-op, and a listener that fails never breaks the
caller: measuring must not change what is measured.
"""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger(__name__)


class Listener(Protocol):
    def signals_recorded(self, kind: str, count: int) -> None: ...

    def run_finished(self, job: str, state: str, seconds: float | None) -> None: ...


_listeners: list[Listener] = []


def add_listener(listener: Listener) -> None:
    """Register ``listener`` once per process (apps created again reuse the first)."""
    if listener not in _listeners:
        _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def signals_recorded(kind: str, count: int = 1) -> None:
    """``count`` signals of ``kind`` (ENGAGE, DELIVER…) were written to loop_signals."""
    if count <= 0:
        return
    for listener in list(_listeners):
        try:
            listener.signals_recorded(kind, count)
        except Exception:
            log.exception("event=observe_listener_failed hook=signals_recorded kind=%s", kind)


def run_finished(job: str, state: str, seconds: float | None = None) -> None:
    """A run of ``job`` (``digest``…) ended in ``state`` after ``seconds`` of work."""
    for listener in list(_listeners):
        try:
            listener.run_finished(job, state, seconds)
        except Exception:
            log.exception("event=observe_listener_failed hook=run_finished job=%s", job)
