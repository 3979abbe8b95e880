"""The scale environment on one machine: what docs/scaling.md draws, on loopback ports.

    PostgreSQL primary (own initdb, :5433) --streaming--> replica (pg_basebackup, :5434)
    PgBouncer (transaction pooling, :6432) -> primary
    Redis Cluster: 3 masters + 3 replicas (:7000-7005)
    two app nodes (uvicorn, free ports): DATABASE_URL = PgBouncer, DATABASE_REPLICA_URL = the
    replica, REDIS_URL = a cluster node with REDIS_CLUSTER=1

Self-contained: the machine's own PostgreSQL and Redis are never touched or reconfigured.
`python -m tests.scale.env up|down|status` (`make scale-up` / `make scale-down`); the scale
tests' session fixture (tests/scale/conftest.py) uses the same functions. State (data dirs,
logs, pids, ports) lives in CHATENGINE_SCALE_DIR (default /tmp/chatengine-scale).
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("CHATENGINE_SCALE_DIR", "/tmp/chatengine-scale"))
DATABASE = "chatengine"
PRIMARY_PORT = 5433
REPLICA_PORT = 5434
PGBOUNCER_PORT = 6432
REDIS_PORTS = tuple(range(7000, 7006))
NODES = 2
# What the app nodes run with; tests shorten the replica's timings to watch them work.
NODE_SETTINGS = {
    "DB_TRANSACTION_POOLING": "1",
    "REDIS_CLUSTER": "1",
    "DEBUG": "0",
    "SECRET_KEY": "scale-test-environment-not-a-secret-0123456789abcdef",
    "SESSION_COOKIE_SECURE": "0",  # the admin over plain http on loopback
    "CSRF_COOKIE_SECURE": "0",
    "CHATENGINE_REPLICA_MAX_LAG_S": "3",
    "CHATENGINE_REPLICA_CHECK_S": "0.5",
    "CHATENGINE_CACHE_RETRY_S": "0.5",
    "CHATENGINE_THROTTLE_READS": "100000/min",
    "CHATENGINE_THROTTLE_WRITES": "100000/min",
    "CHATENGINE_THROTTLE_REPLIES": "100000/min",
    "LOG_LEVEL": "WARNING",
    "LOG_FORMAT": "json",
}


class EnvironmentError_(RuntimeError):
    pass


def missing_tools() -> list[str]:
    """The programs the environment needs that this machine lacks."""
    needed = ["redis-server", "redis-cli", "pgbouncer"]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if pg_bin() is None:
        missing.append("PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup)")
    return missing


def pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_basebackup").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root, and PgBouncer too; CI runs as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], *, what: str, env: dict | None = None, timeout: float = 120) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise EnvironmentError_(f"{what} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise EnvironmentError_(f"timed out waiting for {what}")
        time.sleep(0.1)


def dsn(port: int, dbname: str = DATABASE) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/{dbname}"


def _save(state: dict) -> None:
    (STATE_DIR / "state.json").write_text(json.dumps(state, indent=2))


def load() -> dict | None:
    path = STATE_DIR / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


# --- PostgreSQL ---------------------------------------------------------------------------
def _pg_ctl(data: Path, action: str, *extra: str) -> None:
    cmd = [str(pg_bin() / "pg_ctl"), "-D", str(data), "-w", "-t", "60", action, *extra]
    _run(_as_postgres(cmd), what=f"pg_ctl {action} {data.name}")


def start_postgres(data: Path) -> None:
    _pg_ctl(data, "start", "-l", str(data.parent / f"{data.name}.log"))


def stop_postgres(data: Path, *, mode: str = "fast") -> None:
    if (data / "postmaster.pid").exists():
        _pg_ctl(data, "stop", "-m", mode)


def _start_primary(state: dict) -> None:
    pg = STATE_DIR / "pg"
    pg.mkdir()
    if os.geteuid() == 0:
        shutil.chown(pg, "postgres", "postgres")
    primary = pg / "primary"
    _run(
        _as_postgres(
            [
                *(str(pg_bin() / "initdb"), "-D", str(primary), "-U", "postgres"),
                *("--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync"),
            ]
        ),
        what="initdb",
    )
    with open(primary / "postgresql.conf", "a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {PRIMARY_PORT}\n"
            f"unix_socket_directories = '{pg}'\n"
            "wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n"
            # A long admin search on the replica is not cancelled by the primary's vacuum.
            "hot_standby_feedback = on\n"
            # UTC, so Django never needs a SET TIME ZONE (a session setting) on connect.
            "timezone = 'UTC'\n"
            # A throwaway test cluster: durability is not what it tests.
            "fsync = off\nfull_page_writes = off\n"
            "shared_buffers = 64MB\nmax_connections = 60\n"
        )
    (primary / "pg_hba.conf").write_text(
        "local all all trust\n"
        "host all all 127.0.0.1/32 trust\n"
        "host replication all 127.0.0.1/32 trust\n"
    )
    start_postgres(primary)
    state["primary"] = {"port": PRIMARY_PORT, "data": str(primary)}
    _save(state)
    create = f"CREATE DATABASE {DATABASE}"
    _run(
        [str(pg_bin() / "psql"), dsn(PRIMARY_PORT, "postgres"), "-qc", create],
        what="CREATE DATABASE",
    )


def _start_replica(state: dict) -> None:
    replica = STATE_DIR / "pg" / "replica"
    _run(
        _as_postgres(
            [
                *(str(pg_bin() / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(PRIMARY_PORT)),
                *("-U", "postgres", "-D", str(replica), "-R", "-X", "stream", "-c", "fast"),
            ]
        ),
        what="pg_basebackup",
    )
    with open(replica / "postgresql.conf", "a") as conf:
        conf.write(f"\nport = {REPLICA_PORT}\n")
    start_postgres(replica)
    state["replica"] = {"port": REPLICA_PORT, "data": str(replica)}
    _save(state)


def _start_pgbouncer(state: dict) -> None:
    home = STATE_DIR / "pgbouncer"
    home.mkdir()
    (home / "userlist.txt").write_text('"postgres" ""\n')
    (home / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{DATABASE} = host=127.0.0.1 port={PRIMARY_PORT} dbname={DATABASE}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {PGBOUNCER_PORT}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {home / 'userlist.txt'}\nadmin_users = postgres\n"
        "pool_mode = transaction\n"
        # Far fewer server connections than clients: what transaction pooling is for, and
        # what makes the concurrency tests queue on it.
        "default_pool_size = 8\nmax_client_conn = 500\n"
        f"logfile = {home / 'pgbouncer.log'}\npidfile = {home / 'pgbouncer.pid'}\n"
    )
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
        for child in home.iterdir():
            shutil.chown(child, "postgres", "postgres")
    _run(_as_postgres(["pgbouncer", "-d", str(home / "pgbouncer.ini")]), what="pgbouncer")
    _wait(lambda: not _port_free(PGBOUNCER_PORT), timeout=20, what="PgBouncer to listen")
    state["pgbouncer"] = {"port": PGBOUNCER_PORT, "pidfile": str(home / "pgbouncer.pid")}
    _save(state)


# --- Redis Cluster ------------------------------------------------------------------------
def redis_cli(port: int, *args: str, check: bool = True) -> str:
    cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args]
    if not check:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    return _run(cmd, what=f"redis-cli {' '.join(args)}", timeout=60)


def start_redis_node(port: int) -> None:
    home = STATE_DIR / "redis" / str(port)
    home.mkdir(parents=True, exist_ok=True)
    _run(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(home)),
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            # A dead master is replaced by its replica about 2 s after it stops answering.
            *("--cluster-node-timeout", "1000"),
            # Slots of the other masters keep serving while one master's slots fail over.
            *("--cluster-require-full-coverage", "no"),
            *("--save", "", "--appendonly", "no", "--daemonize", "yes"),
            *("--pidfile", str(home / "redis.pid"), "--logfile", str(home / "redis.log")),
        ],
        what=f"redis-server :{port}",
    )
    _wait(lambda: redis_cli(port, "ping", check=False).strip() == "PONG", timeout=20, what="redis")


def cluster_settled() -> bool:
    """Every node sees the cluster ok, and every master has a replica in sync."""
    masters_with_replica = 0
    for port in REDIS_PORTS:
        if "cluster_state:ok" not in redis_cli(port, "cluster", "info", check=False):
            return False
        info = redis_cli(port, "info", "replication", check=False)
        if "role:slave" in info and "master_link_status:up" not in info:
            return False
        if "role:master" in info and "connected_slaves:1" in info:
            masters_with_replica += 1
    return masters_with_replica == 3


def _start_redis_cluster(state: dict) -> None:
    for port in REDIS_PORTS:
        start_redis_node(port)
    state["redis_ports"] = list(REDIS_PORTS)
    _save(state)
    redis_cli(
        REDIS_PORTS[0],
        "--cluster",
        "create",
        *(f"127.0.0.1:{port}" for port in REDIS_PORTS),
        "--cluster-replicas",
        "1",
        "--cluster-yes",
    )
    _wait(cluster_settled, timeout=60, what="the Redis Cluster to settle")


# --- app nodes ----------------------------------------------------------------------------
def node_env(**extra: str) -> dict[str, str]:
    """The environment of an app process (a node, a manage.py command) in this topology."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE", "REDIS", "DB_", "CHATENGINE_", "PYTEST"))
        and k != "DJANGO_SETTINGS_MODULE"
    }
    env.update(NODE_SETTINGS)
    env.update(
        DJANGO_SETTINGS_MODULE="chatengine.settings",
        PYTHONPATH=str(ROOT),
        DATABASE_URL=dsn(PGBOUNCER_PORT),
        DATABASE_REPLICA_URL=dsn(REPLICA_PORT),
        REDIS_URL=f"redis://127.0.0.1:{REDIS_PORTS[0]}/0",
    )
    env.update(extra)
    return env


def manage(*args: str, **extra: str) -> str:
    """Run a manage.py command as the nodes would (through PgBouncer, on the cluster)."""
    return _run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        what=f"manage.py {args[0]}",
        env=node_env(**extra),
        timeout=300,
    )


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def alive(state: dict) -> bool:
    """Whether a recorded environment is fully up and answering."""
    nodes = state.get("nodes", [])
    return bool(state.get("ready") and nodes) and all(_ready(node["url"]) for node in nodes)


def _start_nodes(state: dict) -> None:
    state["nodes"] = []
    for index in range(NODES):
        port = _free_port()
        log = open(STATE_DIR / f"node-{index}.log", "ab")  # noqa: SIM115 (the child keeps it)
        # Node 0 uses psycopg's pool in front of PgBouncer, node 1 Django's persistent
        # connections: both ways through a transaction pooler are exercised.
        env = node_env(DB_POOL="1" if index == 0 else "0")
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "chatengine.asgi:application"),
                *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
                # Stopping does not wait on clients' idle keep-alive connections.
                *("--timeout-graceful-shutdown", "2"),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        state["nodes"].append({"url": f"http://127.0.0.1:{port}", "pid": proc.pid})
        _save(state)
    for node in state["nodes"]:
        _wait(lambda node=node: _ready(node["url"]), timeout=90, what=f"{node['url']}/readyz")


# --- up / down ----------------------------------------------------------------------------
def up() -> dict:
    """Start everything; returns the state (ports, URLs, pids). Raises if already running."""
    missing = missing_tools()
    if missing:
        raise EnvironmentError_(f"missing: {', '.join(missing)}")
    if load() is not None:
        raise EnvironmentError_(f"already up (state in {STATE_DIR}); run down first")
    busy = [
        p for p in (PRIMARY_PORT, REPLICA_PORT, PGBOUNCER_PORT, *REDIS_PORTS) if not _port_free(p)
    ]
    if busy:
        raise EnvironmentError_(f"ports in use: {busy}")
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    STATE_DIR.mkdir(parents=True)
    STATE_DIR.chmod(0o755)
    state: dict = {"dir": str(STATE_DIR), "database": DATABASE}
    _save(state)
    try:
        _start_primary(state)
        _run(
            [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
            what="migrate",
            env=node_env(DATABASE_URL=dsn(PRIMARY_PORT), DATABASE_REPLICA_URL=""),
            timeout=300,
        )
        _start_replica(state)
        _start_pgbouncer(state)
        _start_redis_cluster(state)
        _start_nodes(state)
    except BaseException:
        down()
        raise
    state["ready"] = True
    _save(state)
    return state


def _stop_nodes(pids: list[int], *, grace_s: float = 3.0) -> None:
    """SIGTERM every node's process group, then SIGKILL what is left after `grace_s`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def down() -> None:
    """Stop whatever the state says was started, then remove the state directory."""
    state = load()
    if state is None:
        return
    _stop_nodes([node["pid"] for node in state.get("nodes", [])])
    if "pgbouncer" in state:
        pidfile = Path(state["pgbouncer"]["pidfile"])
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
    for port in state.get("redis_ports", []):
        redis_cli(port, "shutdown", "nosave", check=False)
    for name in ("replica", "primary"):
        if name in state:
            try:
                stop_postgres(Path(state[name]["data"]), mode="immediate")
            except EnvironmentError_ as exc:
                print(exc, file=sys.stderr)
    shutil.rmtree(STATE_DIR, ignore_errors=True)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "up":
        state = up()
        print(f"up: nodes {[n['url'] for n in state['nodes']]}; state in {STATE_DIR}")
        print(f"  PgBouncer {dsn(PGBOUNCER_PORT)}  replica {dsn(REPLICA_PORT)}")
        print(f"  Redis Cluster 127.0.0.1:{REDIS_PORTS[0]}-{REDIS_PORTS[-1]}")
    elif command == "down":
        down()
        print("down")
    elif command == "status":
        state = load()
        print(json.dumps(state, indent=2) if state else "down")
    else:
        print("usage: python -m tests.scale.env up|down|status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
