"""Progress for long commands: a bar on a terminal, nothing at all when output is piped."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import click


class Progress:
    """What a long command reports to: steps done, and the total once it is known."""

    def __init__(self, bar: Any):
        self._bar = bar

    def set_total(self, total: int) -> None:
        """The number of steps, for a command that learns it only after it began."""
        self._bar.length = max(0, total)

    def advance(self, steps: int = 1) -> None:
        self._bar.update(steps)

    def advance_to(self, done: int, total: int | None = None) -> None:
        """Report absolute progress (``done`` of ``total`` steps)."""
        if total is not None:
            self.set_total(total)
        if done > self._bar.pos:
            self._bar.update(done - self._bar.pos)


def on_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced by something file-like
        return False


def _console_handlers() -> list[logging.Handler]:
    consoles = {sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__}
    return [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler)
        and not isinstance(h, logging.FileHandler)
        and h.stream in consoles
    ]


@contextmanager
def quiet_info_logs() -> Iterator[None]:
    """Hold back INFO lines on the console (warnings still show) while a command prints.

    The jobs log an INFO line per tenant; on a terminal those lines land in the
    middle of the command's own table or bar.
    """
    handlers = _console_handlers()
    before = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(max(h.level, logging.WARNING))
    try:
        yield
    finally:
        for h, level in zip(handlers, before, strict=True):
            h.setLevel(level)


@contextmanager
def progress(label: str, total: int | None = None) -> Iterator[Progress]:
    """A progress bar on stdout when it is a terminal; silent (no bar, no label) otherwise.

    INFO log lines are held back for the duration either way, so what the
    command prints afterwards is not interleaved with them.
    """
    bar = click.progressbar(
        length=total or 0,
        label=label,
        hidden=not on_terminal(),
        show_pos=True,
        show_percent=True,
        width=30,
    )
    with quiet_info_logs(), bar:
        yield Progress(bar)
