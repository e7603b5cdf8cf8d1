"""Processes and databases the benchmark makes, and takes down again, whatever happens.

Every server runs in its own process group; ``stop_all`` (also run at exit and on SIGTERM/SIGINT)
stops each one by its own id, and every scratch database (an SQLite folder, a PostgreSQL database
named ``qr_oidc_bench_<hex>``) is removed.

Pinning: on a machine with two cores or more and ``taskset``, every server runs on core 0
(``SERVER_CORE``) and every load generator (wrk, the long-poll client) on core 1 (``LOAD_CORE``),
so that a server never shares its core with the load it answers; ``set_pinning(False)`` turns it
off (``--no-pin``). PostgreSQL is the machine's own service and is not pinned.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

PYTHON = sys.executable
QR_OIDC = shutil.which("qr-oidc", path=str(Path(PYTHON).parent)) or "qr-oidc"
ROOT = Path(__file__).resolve().parent.parent

_servers: list[Server] = []
_cleanups: list = []

SERVER_CORE, LOAD_CORE = 0, 1
_pinning = {"on": bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2}


def set_pinning(on: bool) -> None:
    _pinning["on"] = bool(on) and bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2


def pinning() -> bool:
    return _pinning["on"]


def pinned(argv: list[str], core: int) -> list[str]:
    """``argv`` run on ``core`` alone (``taskset -c``, which execs: the pid stays the command's)
    when pinning is on; ``argv`` itself otherwise."""
    if not _pinning["on"]:
        return list(argv)
    return [shutil.which("taskset") or "taskset", "-c", str(core), *argv]


class pinned_here:
    """``with pinned_here(core):`` runs the calling thread on ``core`` (when pinning is on)."""

    def __init__(self, core: int):
        self.core = core
        self.saved = None

    def __enter__(self):
        if _pinning["on"]:
            self.saved = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {self.core})
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            os.sched_setaffinity(0, self.saved)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One server process (``qr-oidc serve``, ``bench.bare``, node-oidc-provider) and its
    children, pinned to ``SERVER_CORE`` (see ``pinned``)."""

    def __init__(self, name: str, argv: list[str], env: dict, folder: Path, port: int,
                 ready_path: str, ready_port: int | None = None):
        self.name, self.argv, self.env, self.port = name, pinned(argv, SERVER_CORE), env, port
        self.ready_url = f"http://127.0.0.1:{ready_port or port}{ready_path}"
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.log_path = folder / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, cwd=ROOT)
        _servers.append(self)
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.ready_url, timeout=2).ok and self.workers():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer in {timeout:.0f} s:\n{self.log()}")

    def workers(self) -> list[int]:
        """The processes that answer requests: the master's children (gunicorn, or any server
        with a supervisor), else the server's one process."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return children(self.proc.pid) or [self.proc.pid]

    def tree(self) -> list[int]:
        """The server's process and all its descendants."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *descendants(self.proc.pid)]

    def tree_rss_mib(self) -> float:
        """Resident memory of the whole process tree, MiB (the sum of every process's RSS)."""
        total = 0.0
        for pid in self.tree():
            try:
                total += memory(pid).get("rss_mib", 0.0)
            except OSError:
                pass
        return total

    def tree_cpu_seconds(self) -> float:
        """CPU time (user + system) the process tree has used so far, seconds."""
        total = 0
        for pid in self.tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        return total / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            workers = descendants(proc.pid)
            proc.terminate()  # gunicorn's master stops its workers on SIGTERM
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            for pid in workers:  # a worker the master did not take down
                _kill_pid(pid)
        if proc is not None:
            # anything left in the server's own process group (it was started in a new session,
            # so the group is the server's alone)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None
        if self in _servers:
            _servers.remove(self)


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    except OSError:
        pass
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def memory(pid: int) -> dict:
    """Resident memory of one process, MiB: RSS (from /proc/PID/status) and PSS (shared pages
    split among the processes sharing them, from /proc/PID/smaps_rollup)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss_mib"] = int(line.split()[1]) / 1024
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss_mib"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def stop_all() -> None:
    for server in _servers:
        try:
            server.stop()
        except Exception as exc:  # keep stopping the others
            print(f"bench: could not stop {server.name}: {exc}", file=sys.stderr)
    while _cleanups:
        try:
            _cleanups.pop()()
        except Exception as exc:
            print(f"bench: cleanup failed: {exc}", file=sys.stderr)


def register_cleanup(fn) -> None:
    """``fn()`` runs in ``stop_all`` (before the scratch folders go)."""
    _cleanups.append(fn)


def _on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def install_cleanup() -> None:
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)


def raise_open_files() -> int:
    """Raise this process's soft limit of open files to its hard limit (servers started later
    inherit it: 10^4 held long polls are 10^4 sockets on each side); returns the new limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


# -- databases -----------------------------------------------------------------------------------
PG_ADMIN_URL = (os.environ.get("QR_OIDC_BENCH_PG_URL")
                or os.environ.get("QR_OIDC_TEST_DATABASE_URL")
                or "postgresql://root@127.0.0.1:5432/test")


def _pg_admin():
    import psycopg

    return psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://"),
                           autocommit=True, connect_timeout=5)


def postgres_available() -> bool:
    try:
        with _pg_admin():
            return True
    except Exception:
        return False


class Scratch:
    """Scratch databases for one backend: SQLite files in a temporary folder, or PostgreSQL
    databases made with CREATE DATABASE and dropped at the end."""

    def __init__(self, backend: str, folder: Path):
        self.backend = backend
        self.folder = folder
        self.made: list[str] = []
        _cleanups.append(self.drop_all)

    def url(self, label: str) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.folder / (label + '.db')}"
        name = f"qr_oidc_bench_{label}_{secrets.token_hex(4)}"
        with _pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        base = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0]
        return base.replace("postgresql://", "postgresql+psycopg://", 1) + "/" + name

    def drop_all(self) -> None:
        while self.made:
            name = self.made.pop()
            with _pg_admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def scratch_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="qr-oidc-bench-"))
    _cleanups.insert(0, lambda: shutil.rmtree(folder, ignore_errors=True))
    return folder
