"""Readiness checks: can this process reach the database and the cache right now?

Each check runs in its own daemon thread and the caller waits at most `timeout` seconds for all
of them, so a dependency that hangs (a black-holed host, a stuck server) makes the probe answer
"timeout" quickly instead of hanging the probe and the worker serving it.
"""

import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Callable

from django.core.cache import caches
from django.db import connections

logger = logging.getLogger("chatengine.health")

OK = "ok"
TIMEOUT = "timeout"


def check_database() -> None:
    # A fresh connection in this thread: it proves new connections work (what a restarted
    # worker needs), and it is closed here so probes never pile up connections.
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()


def check_cache() -> None:
    # A round trip, not just "no exception": a cache configured to swallow errors
    # (django-redis IGNORE_EXCEPTIONS) answers None instead of raising.
    cache = caches["default"]
    key = f"chatengine:readyz:{uuid.uuid4().hex}"
    cache.set(key, "1", timeout=10)
    if cache.get(key) != "1":
        raise RuntimeError("the cache did not return the value just written")
    cache.delete(key)


CHECKS: dict[str, Callable[[], None]] = {"database": check_database, "cache": check_cache}


def run_checks(*, timeout: float, checks: dict[str, Callable[[], None]] = CHECKS) -> dict[str, str]:
    """Run every check concurrently; each result is "ok", "timeout" or "error: <ExceptionType>"."""
    results: dict[str, str] = {}

    def run(name: str, check: Callable[[], None]) -> None:
        try:
            check()
        except Exception as exc:
            logger.warning("readiness check %s failed", name, exc_info=True, extra={"check": name})
            results[name] = f"error: {type(exc).__name__}"
        else:
            results[name] = OK

    threads = []
    for name, check in checks.items():
        # copy_context: the check's own log lines keep the probe's request id.
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run, args=(run, name, check), name=f"readyz-{name}", daemon=True
        )
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {name: results.get(name, TIMEOUT) for name in checks}
