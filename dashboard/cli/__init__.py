"""Operator commands under `flask --app wsgi …`: accounts, tune and rq processes, demo data.

Bad input exits non-zero with one line, never a traceback.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from dashboard.cli import accounts, demo, jobs, policy, signals

    for part in (accounts, jobs, demo, policy, signals):
        part.init_app(app)
