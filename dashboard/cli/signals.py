"""`signals prune [--dry-run]`: apply SIGNAL_RETENTION_DAYS now. Bad input: one line, exit 1."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy.exc import SQLAlchemyError

from dashboard.cli.progress import progress
from jobs.maintenance import prune_signals
from loops.database import db
from loops.partitions import NotPartitioned, PartitionLockTimeout
from loops.retention import PruneBusy

signals_cli = AppGroup("signals", help="Loop signals: retention.")


@signals_cli.command("prune")
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
def signals_prune(dry_run: bool) -> None:
    """Remove signals older than SIGNAL_RETENTION_DAYS and keep partitions ahead.

    Prints one line: how many signals went (and, on PostgreSQL, partitions dropped
    and created). The daily counts behind the charts are kept.
    """
    label = "Counting signals to prune" if dry_run else "Pruning signals"
    try:
        with progress(label) as bar:
            outcome = prune_signals(
                dry_run=dry_run, progress=lambda done, total: bar.advance_to(done, total)
            )
    except (NotPartitioned, PartitionLockTimeout, PruneBusy) as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        db.session.rollback()
        first_line = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise click.ClickException(f"database error: {first_line}") from None
    click.echo(str(outcome))


def init_app(app: Flask) -> None:
    app.cli.add_command(signals_cli)
