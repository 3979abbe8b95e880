"""The read replica (DATABASE_REPLICA_URL): used only by reads that say they tolerate lag.

A client must always read its own writes, so nothing goes to the replica by default: every
read the router is asked about and every write go to the primary (`PrimaryRouter`). A read
that tolerates lag (the admin's list pages and searches, export_sessions) asks for `alias()`
and runs `.using()` it. That alias is the replica while it answers and is at most
CHATENGINE_REPLICA_MAX_LAG_S behind, and the primary otherwise; a query the replica fails
anyway can be retried on the primary after `failed()`.

Checking costs one short query on the replica at most every CHATENGINE_REPLICA_CHECK_S per
process; a replica that is down or too far behind is not asked again for that long, so a
dead replica costs one connect timeout per process per interval, not one per request.
"""

import contextlib
import logging
import threading
import time

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from chatengine.backoff import Backoff
from chatengine.events import log_event

REPLICA = "replica"

# Seconds the replica's replay is behind: 0 while it has replayed everything it received from
# a live stream (an idle primary writes nothing, which is not lag); otherwise the age of the
# last transaction it replayed. NULL (nothing replayed yet, no stream) counts as too far behind.
_LAG_SQL = """
SELECT CASE
  WHEN NOT pg_is_in_recovery() THEN 0
  WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
       AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN 0
  ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float
END
"""


class PrimaryRouter:
    """Writes always go to the primary, even for an instance read from the replica; reads go
    where their queryset says (`.using()`), else to the primary; only the primary migrates."""

    def db_for_read(self, model, **hints):
        return None  # the instance's own database if it has one, else the primary

    def db_for_write(self, model, **hints):
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        return True  # one data set, two copies

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == DEFAULT_DB_ALIAS


class _Health:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.checked_at = float("-inf")
        self.usable = False
        self.backoff = Backoff()  # after a failure: not asked again, warned once a minute
        self.lag_warnings = Backoff()  # only the once-a-minute clock


_health = _Health()


def configured() -> bool:
    return REPLICA in settings.DATABASES


def alias() -> str:
    """The database for a read that tolerates lag: the replica if usable, else the primary."""
    if not configured() or not _health.backoff.available():
        return DEFAULT_DB_ALIAS
    now = time.monotonic()
    if now - _health.checked_at >= settings.CHATENGINE_REPLICA_CHECK_S and _health.lock.acquire(
        blocking=False
    ):
        # One thread checks; the others go on with the last answer meanwhile.
        try:
            _health.usable = _check()
            _health.checked_at = time.monotonic()
        finally:
            _health.lock.release()
    return REPLICA if _health.usable else DEFAULT_DB_ALIAS


def _check() -> bool:
    try:
        with connections[REPLICA].cursor() as cursor:
            cursor.execute(_LAG_SQL)
            (lag,) = cursor.fetchone()
    except Exception as exc:  # any failure means "read the primary", never an error page
        failed(exc)
        return False
    max_lag = settings.CHATENGINE_REPLICA_MAX_LAG_S
    if lag is None or lag > max_lag:
        warn = _health.lag_warnings.failed(retry_s=None)
        log_event(
            "replica.lagging",
            level=logging.WARNING if warn else logging.DEBUG,
            lag_s=None if lag is None else round(lag, 1),
            max_lag_s=max_lag,
        )
        return False
    return True


def failed(exc: BaseException) -> None:
    """The replica failed a query: read the primary until the next check is due."""
    with contextlib.suppress(Exception):  # a broken connection may fail to close cleanly
        connections[REPLICA].close()
    # No lock: alias() may hold it while its check calls this.
    _health.usable = False
    _health.checked_at = time.monotonic()
    warn = _health.backoff.failed(retry_s=settings.CHATENGINE_REPLICA_CHECK_S)
    log_event(
        "replica.unavailable",
        level=logging.WARNING if warn else logging.DEBUG,
        error=type(exc).__name__,
    )


def reset() -> None:
    """Forget the last check (tests, and after reconfiguring)."""
    _health.reset()
