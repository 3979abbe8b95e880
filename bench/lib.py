"""Benchmark plumbing: servers in their own processes, wrk as the load generator, statistics."""

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

WRK_REPORT = r"""
done = function(summary, latency, requests)
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d,"
    .. "\"status_errors\":%d,\"connect_errors\":%d,\"read_errors\":%d,\"write_errors\":%d,"
    .. "\"timeouts\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s")


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DEBUG": "0",
            "SECRET_KEY": env.get("SECRET_KEY", "bench-secret-key-" + "x" * 40),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONPATH": str(ROOT),
            # Benchmarks measure the engine, not the throttle.
            "CHATENGINE_THROTTLE_READS": "none",
            "CHATENGINE_THROTTLE_WRITES": "none",
            "CHATENGINE_THROTTLE_REPLIES": "none",
        }
    )
    env.update(extra or {})
    return env


SERVERS = {
    # name: (description, argv builder)
    "gunicorn-sync": (
        "gunicorn, 4 sync workers (WSGI)",
        lambda port: [
            str(VENV_BIN / "gunicorn"),
            "chatengine.wsgi:application",
            "--bind", f"127.0.0.1:{port}",
            "--workers", "4",
            "--worker-class", "sync",
            "--keep-alive", "5",
            "--preload",
        ],
    ),
    "gunicorn-gthread": (
        "gunicorn, 2 workers x 8 threads (WSGI)",
        lambda port: [
            str(VENV_BIN / "gunicorn"),
            "chatengine.wsgi:application",
            "--bind", f"127.0.0.1:{port}",
            "--workers", "2",
            "--threads", "8",
            "--worker-class", "gthread",
            "--preload",
        ],
    ),
    "uvicorn": (
        "uvicorn, 2 workers (ASGI)",
        lambda port: [
            str(VENV_BIN / "uvicorn"),
            "chatengine.asgi:application",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--workers", "2",
            # TCP_NODELAY on each connection (chatengine/uvicorn_http.py, uvicorn#3149).
            "--http", "chatengine.uvicorn_http:NoDelayH11Protocol",
            "--no-access-log",
            "--log-level", "warning",
        ],
    ),
}  # fmt: skip
SERVERS["uvicorn-pool"] = (
    "uvicorn, 2 workers (ASGI), psycopg connection pool",
    SERVERS["uvicorn"][1],
)


def _gunicorn_sync_2(app: str):
    return lambda port: [
        str(VENV_BIN / "gunicorn"), app,
        "--bind", f"127.0.0.1:{port}",
        "--workers", "2",
        "--worker-class", "sync",
        "--preload",
    ]  # fmt: skip


# The plain DRF comparison: chatengine and its plain peer under the very same server.
SERVERS["gunicorn-sync-2"] = (
    "gunicorn, 2 sync workers (WSGI)",
    _gunicorn_sync_2("chatengine.wsgi:application"),
)
SERVERS["plain-drf"] = (
    "plain DRF peer, gunicorn, 2 sync workers (WSGI)",
    _gunicorn_sync_2("bench.plain.wsgi:application"),
)
SERVER_ENV = {
    "uvicorn-pool": {"DB_POOL": "1"},
    "plain-drf": {"DJANGO_SETTINGS_MODULE": "bench.plain.settings"},
}


@contextmanager
def running_server(kind: str, *, env_extra: dict[str, str] | None = None):
    """Start one server kind on a free port; yield (base_url, process); stop it after."""
    port = free_port()
    argv = SERVERS[kind][1](port)
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{kind}-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=server_env({**SERVER_ENV.get(kind, {}), **(env_extra or {})}),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def process_tree_rss_kb(pid: int) -> dict[int, int]:
    """Peak RSS (VmHWM, kB) of a process and its children, by pid."""
    result = {}
    pids = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        pids += [int(p) for p in out.stdout.split()]
    except FileNotFoundError:
        pass
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        if match:
            result[p] = int(match.group(1))
    return result


def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    lua_request: str = "",
    headers: dict[str, str] | None = None,
) -> dict:
    """Run wrk once; returns requests/s, p50/p99 in ms and error counts."""
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(lua_request + "\n" + WRK_REPORT)
    script.close()
    argv = [
        "wrk",
        "-t", "1",
        "-c", str(connections),
        "-d", f"{max(1, int(seconds))}s",
        "--timeout", "10s",
        "-s", script.name,
    ]  # fmt: skip
    for key, value in (headers or {}).items():
        argv += ["-H", f"{key}: {value}"]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    os.unlink(script.name)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON "))
    raw = json.loads(line[len("WRKJSON ") :])
    errors = sum(raw[k] for k in raw if k.endswith("_errors") or k == "timeouts")
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": errors,
        "requests": raw["requests"],
    }


def median_of(runs: list[dict]) -> dict:
    """Median of each figure over repeated runs (errors are summed, not medianed)."""
    keys = [k for k in runs[0] if k not in ("errors", "requests")]
    merged = {k: statistics.median(r[k] for r in runs) for k in keys}
    merged["errors"] = sum(r["errors"] for r in runs)
    merged["requests"] = sum(r["requests"] for r in runs)
    merged["runs"] = len(runs)
    return merged


def http_json(method: str, url: str, *, token: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else {}


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def plain_ratios(plain: dict) -> list[tuple[str, str, dict, dict]]:
    """(row label, endpoint, chatengine figures, plain figures) for each compared row."""
    e = plain["endpoints"]
    rows = [
        ("authenticated no-op", "noop", "chatengine"),
        ("history, newest 50, from Redis", "history", "chatengine-redis"),
        ("history, newest 50, cache off (PostgreSQL)", "history", "chatengine-postgres"),
        ("append", "append", "chatengine"),
    ]
    return [
        (label, endpoint, e[endpoint][who], e[endpoint]["plain"])
        for label, endpoint, who in rows
        if endpoint in e
    ]
