"""Argument parsing and progress output shared by the conversations management commands."""

import re
from datetime import UTC, datetime, time, timedelta
from typing import IO

from django.core.management.base import BaseCommand, CommandError, OutputWrapper
from django.utils.dateparse import parse_date, parse_datetime

_DURATION = re.compile(r"^\s*(\d+)\s*([hdw])\s*$", re.IGNORECASE)
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: str, *, option: str) -> timedelta:
    """`90d`, `12h`, `2w` -> timedelta; `CommandError` (exit status 1) otherwise."""
    match = _DURATION.match(value)
    if not match or int(match.group(1)) == 0:
        raise CommandError(
            f"{option}: {value!r} is not a duration like 90d, 12h or 2w (a positive whole "
            "number of hours, days or weeks)."
        )
    return timedelta(**{_UNITS[match.group(2).lower()]: int(match.group(1))})


def parse_moment(value: str, *, option: str) -> datetime:
    """An ISO date (midnight UTC) or date-time (naive = UTC) -> aware datetime."""
    try:
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            moment = datetime.combine(day, time.min) if day else None
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(
            f"{option}: {value!r} is not an ISO date or date-time (e.g. 2026-01-31 or "
            "2026-01-31T12:00:00+00:00)."
        )
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Progress:
    """One self-overwriting status line, shown only on a terminal and at verbosity >= 1."""

    def __init__(self, out: OutputWrapper | IO[str], *, verbosity: int, label: str, total: int):
        stream = getattr(out, "_out", out)
        self.enabled = verbosity >= 1 and getattr(stream, "isatty", lambda: False)()
        self.stream = stream
        self.label, self.total = label, total
        self.shown = False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        pct = f" ({100 * done // self.total}%)" if self.total else ""
        self.stream.write(f"\r{self.label}: {done:,}/{self.total:,}{pct}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


class ConversationsCommand(BaseCommand):
    """Base of these commands: every bad argument exits with status 1.

    A bad value raises `CommandError` (status 1); argparse's own usage errors (unknown
    option, missing value) would exit with 2, so they are mapped to 1 too: scripts check one
    status for "you called it wrong".
    """

    def run_from_argv(self, argv):
        try:
            super().run_from_argv(argv)
        except SystemExit as exc:
            if exc.code == 2:
                raise SystemExit(1) from None
            raise
