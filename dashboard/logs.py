"""Log lines: key=value text (LOG_FORMAT=text) or one JSON object a line (LOG_FORMAT=json).

Both carry the same fields: time, level, logger, and the event's own
``key=value`` pairs (``event=tune_finished tenant=acme ms=183``), which the
JSON form also lifts into fields of their own. Secrets are redacted before
either formatter sees a record (``security.install_log_redaction``); the JSON
formatter redacts its output once more, since it renders tracebacks itself.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask
from pythonjsonlogger.json import JsonFormatter

from dashboard.security import redact

TEXT_FORMAT = "%(asctime)s level=%(levelname)s %(name)s %(message)s"
FORMATS = ("text", "json")
# key=value, key='quoted value' or key="quoted value" (as %r renders strings).
_PAIR = re.compile(
    r"(?<![\w.])([A-Za-z_][A-Za-z0-9_]*)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)"
)
# Fields of the JSON line itself, which a message's pairs never overwrite.
_RESERVED = frozenset({"time", "level", "logger", "message", "exc_info", "stack_info"})


def message_fields(message: str) -> dict[str, str]:
    """The ``key=value`` pairs of a log message, quotes removed; the last of a key wins."""
    fields: dict[str, str] = {}
    for key, raw in _PAIR.findall(message):
        value = raw
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            value = raw[1:-1]
        if key not in _RESERVED:
            fields[key] = value
    return fields


class KeyValueJsonFormatter(JsonFormatter):
    """One JSON object a line: time, level, logger, message and the message's pairs."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        for key, value in message_fields(record.getMessage()).items():
            log_data.setdefault(key, value)

    def format(self, record: logging.LogRecord) -> str:
        # Tracebacks are rendered here from the exception itself, past the record
        # factory's redaction of exc_text: redact the whole line.
        return redact(super().format(record))


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return KeyValueJsonFormatter()
    return logging.Formatter(TEXT_FORMAT)


class _AppHandler(logging.StreamHandler):
    """The console handler this module installs (so a second app can re-format it)."""


def configure_logging(app: Flask) -> None:
    """Log to stderr in LOG_FORMAT, at LOG_LEVEL, unless the process configured logging itself."""
    # Both were read and validated at start (loops.settings), typed.
    level: str = app.config["LOG_LEVEL"]
    log_format: str = app.config["LOG_FORMAT"]
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _AppHandler)]
    if ours:
        for handler in ours:
            handler.setFormatter(formatter(log_format))
    elif not root.handlers:
        handler = _AppHandler()
        handler.setFormatter(formatter(log_format))
        root.addHandler(handler)
        root.setLevel(level)
    app.logger.setLevel(level)
    # Alembic announces each of its plugins at INFO whenever an app is created.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
