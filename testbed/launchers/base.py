"""What every launcher shares: the handle, free ports, and private broker processes.

``LocalProcess`` starts a broker binary as a private process: its own session (so Ctrl-C in the
terminal reaches the orchestrator, which stops it in order, not the broker mid-run), its own temporary
folder, its log file in the run folder. ``stop()`` ends the whole process group (TERM, then KILL) and
removes the temporary folder; it is safe to call twice, and an ``atexit`` hook calls it if the
orchestrator forgets.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable

from brokers.base import Endpoint
from testbed.errors import BrokerError


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the broker binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class BrokerHandle:
    """A broker ready for a run. Subclasses stop what they started and sample its resources."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint

    def sample(self) -> dict:
        """Broker-side resource figures for timeseries.csv (``broker_cpu_pct``, ``broker_rss_mb``)."""
        return {}

    def stop(self) -> None:
        pass

    def __enter__(self) -> "BrokerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class LocalProcess:
    """One private broker process (a process group of its own) and its temporary folder."""

    def __init__(self, name: str, argv: list[str], log_path: str, env: dict | None = None,
                 cwd: str | None = None, tmp_dir: str | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.tmp_dir = tmp_dir
        self.proc: subprocess.Popen | None = None
        self._ps = None
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        self._log = open(log_path, "ab")
        try:
            self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
        except FileNotFoundError:
            self._log.close()
            self._remove_tmp()
            raise
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 8192))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def wait_ready(self, check: Callable[[], object], timeout_s: float, what: str = "") -> object:
        """Call ``check`` until it returns without raising (a real client round trip), or fail clearly
        (the process died: its last log lines; the time ran out: the last error)."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise BrokerError(f"{self.name} exited during start-up (code {self.proc.returncode}); "
                                  f"last log lines: {self.log_tail()}")
            try:
                return check()
            except Exception as exc:  # noqa: BLE001 - not ready yet
                last = exc
            time.sleep(0.2)
        raise BrokerError(f"{self.name} did not become ready within {timeout_s:g}s{what}: {last}")

    def sample(self) -> dict:
        """CPU% (of one core, summed over the process tree) and RSS in MB of the broker."""
        try:
            import psutil
            if self._ps is None:
                self._ps = psutil.Process(self.proc.pid)
                self._kids = {}
                self._ps.cpu_percent(None)
            procs = [self._ps]
            for child in self._ps.children(recursive=True):
                if child.pid not in self._kids:
                    self._kids[child.pid] = child
                    child.cpu_percent(None)
                procs.append(self._kids[child.pid])
            cpu = sum(p.cpu_percent(None) for p in procs)
            rss = sum(p.memory_info().rss for p in procs)
            return {"broker_cpu_pct": round(cpu, 1), "broker_rss_mb": round(rss / 2**20, 1)}
        except Exception:  # noqa: BLE001 - the broker may be gone: leave the figures empty
            return {}

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (e.g. epmd, beam children)
            except (ProcessLookupError, PermissionError):
                pass
        if not self._log.closed:
            self._log.close()
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self.tmp_dir:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir = None


class LocalHandle(BrokerHandle):
    """A broker run as local processes (one or more ``LocalProcess``)."""

    def __init__(self, endpoint: Endpoint, processes: list[LocalProcess]):
        super().__init__(endpoint)
        self.processes = processes

    def sample(self) -> dict:
        return self.processes[0].sample() if self.processes else {}

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.stop()


def private_tmp(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=f"testbed-{prefix}-")


def require_binary(path_or_name: str, package: str) -> str:
    """The binary's path, or a clear error naming the Debian package that provides it."""
    found = shutil.which(path_or_name) or (path_or_name if os.access(path_or_name, os.X_OK) else None)
    if not found:
        raise BrokerError(f"{path_or_name} not found: install the Debian package {package!r} "
                          f"(apt-get install {package}) or run `make setup`")
    return found
