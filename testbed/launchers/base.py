"""What every launcher shares: the handle, free ports, private broker processes, the readiness probe.

``LocalProcess`` starts a program as a private process: its own session (so Ctrl-C in the terminal
reaches the orchestrator, which stops it in order, not the broker mid-run), its log file in the run
folder, the parent-death signal (it dies with the orchestrator, even a SIGKILLed one: lifeline.py).
``stop()`` ends the whole process group (TERM, then KILL after the process's grace) and removes its
temporary folder; it is safe to call twice, and an ``atexit`` hook calls it if the orchestrator forgets. ``signal``/``pause``/``resume`` act on the whole group (for fault injection).
"""
from __future__ import annotations

import atexit
import contextvars
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable

from brokers.base import Endpoint
from testbed.errors import BrokerError
from testbed.launchers import lifeline

OWNER_FILE = "owner"
#: set around a launch by whoever puts a proxy in front of the broker (network faults): called with the
#: broker's named ports once they are picked, before it starts; returns {port name: port to advertise}
PORTS_HOOK: contextvars.ContextVar = contextvars.ContextVar("testbed_ports_hook", default=None)


def advertised_ports(ports: dict[str, int]) -> dict[str, int]:
    hook = PORTS_HOOK.get()
    return dict(hook(ports)) if hook is not None else {}


#: listening ports are picked from here up to just below the kernel's ephemeral range
LISTEN_PORTS_FROM = 20000


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the broker binds it a moment later).

    Picked below the kernel's ephemeral range, so that no outgoing connection made in between (a
    cluster's nodes connect to each other for seconds before the last member binds its ports) can be
    given it: a port the kernel hands out itself (bind to 0) is one of those, and a broker cluster's
    member once failed to start with ``eaddrinuse`` that way."""
    top = _ephemeral_low()
    if top - LISTEN_PORTS_FROM >= 1000:
        for _ in range(200):
            port = secrets.randbelow(top - LISTEN_PORTS_FROM) + LISTEN_PORTS_FROM
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
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

    # -- control of what the launcher started (none for embedded and external brokers) ------------
    def pids(self) -> list[int]:
        """Process ids of the broker's server processes (the main one first)."""
        return []

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the broker (its process group, or its container)."""
        raise BrokerError(f"the {self.endpoint.launcher} launcher started no process to signal")

    def pause(self) -> None:
        raise BrokerError(f"the {self.endpoint.launcher} launcher started no process to pause")

    def resume(self) -> None:
        raise BrokerError(f"the {self.endpoint.launcher} launcher started no process to resume")

    def kill(self) -> None:
        """SIGKILL the broker (it stays down until ``restart``)."""
        raise BrokerError(f"the {self.endpoint.launcher} launcher started no broker to kill")

    def restart(self) -> None:
        """Start the broker again on the same ports and data (a running one is stopped first);
        returns once it answers a real round trip."""
        raise BrokerError(f"the {self.endpoint.launcher} launcher started no broker to restart")

    def __enter__(self) -> "BrokerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def log_tail(path: str, lines: int = 5, window: int = 8192) -> str:
    """The last ``lines`` lines of a log file (its last ``window`` bytes), joined with " | " for one error
    line; "" when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - window))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


class LocalProcess:
    """One private broker process (a process group of its own) and its temporary folder."""

    def __init__(self, name: str, argv: list[str], log_path: str, env: dict | None = None,
                 cwd: str | None = None, tmp_dir: str | None = None, stop_grace_s: float = 10.0,
                 on_exit: Callable[[int | None], None] | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.tmp_dir = tmp_dir
        self.stop_grace_s = stop_grace_s
        self.on_exit = on_exit  # called once after the process is gone, with its exit code
        self.proc: subprocess.Popen | None = None
        self._ps = None
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        self._log = open(log_path, "ab")
        try:
            self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
                                         preexec_fn=lifeline.die_with_parent())
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

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def wait(self, timeout_s: float) -> bool:
        """Wait for the process to exit; True when it has."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        """SIGKILL the whole group; returns once the process is gone (at most 10 s)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait(10)

    def log_tail(self, lines: int = 5) -> str:
        return log_tail(self.log_path, lines)

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

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout_s: float | None = None) -> None:
        timeout_s = self.stop_grace_s if timeout_s is None else timeout_s
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
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (helpers, children)
            except (ProcessLookupError, PermissionError):
                pass
        if not self._log.closed:
            self._log.close()
        if proc is not None and self.on_exit is not None:
            on_exit, self.on_exit = self.on_exit, None
            on_exit(proc.returncode)
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self.tmp_dir:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir = None


class LocalHandle(BrokerHandle):
    """A broker run as local processes: helpers first, the server last (``server``)."""

    def __init__(self, endpoint: Endpoint, processes: list[LocalProcess]):
        super().__init__(endpoint)
        self.processes = processes

    @property
    def server(self) -> LocalProcess | None:
        return self.processes[-1] if self.processes else None

    def sample(self) -> dict:
        return self.server.sample() if self.server else {}  # the server's process tree, not its helpers

    def pids(self) -> list[int]:
        return [p.pid for p in reversed(self.processes) if p.alive() or p.returncode is not None]

    def signal(self, sig: int) -> None:
        if self.server is not None:
            self.server.signal(sig)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    #: set by the local launcher: () -> a new server process from the same recipe (same argv, ports,
    #: folder and log), returned once it answers
    respawn: Callable[[], "LocalProcess"] | None = None

    def kill(self) -> None:
        if self.server is not None:
            self.server.kill()

    def restart(self) -> None:
        if self.respawn is None:
            raise BrokerError("this broker was not started from a recipe: it cannot be restarted")
        old = self.server
        if old is not None and old.alive():
            old.signal(signal.SIGTERM)
            if not old.wait(old.stop_grace_s):
                self.kill()
        if old is not None:
            old.tmp_dir = None  # the folder (its data) is the new process's now
            old.stop(timeout_s=1.0)
        new = self.respawn()
        self.processes[-1] = new
        self.endpoint.extra["pid"] = new.pid
        self.endpoint.extra["restarts"] = self.endpoint.extra.get("restarts", 0) + 1

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.stop()


def private_tmp(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=f"testbed-{prefix}-")


def write_owner(tmp_dir: str) -> None:
    """Mark ``tmp_dir`` as belonging to this (live) process: cleanup leaves it alone while we run."""
    import psutil
    with open(os.path.join(tmp_dir, OWNER_FILE), "w") as fh:
        fh.write(f"{os.getpid()} {psutil.Process().create_time():.3f}\n")
    lifeline.track_dir(tmp_dir)  # removed (with what points into it) if this process dies first


def resolve_binary(binary) -> str:
    """Where a recipe's ``Binary`` is on this machine, or a clear error saying how to install it."""
    if binary.find is not None:
        return binary.find()
    path = binary.path
    found = shutil.which(path) or (path if os.path.isabs(path) and os.access(path, os.X_OK) else None)
    if not found:
        raise BrokerError(f"{path} not found: {binary.install_hint()}")
    return found


def named_ports(names: tuple[str, ...], host: str = "127.0.0.1") -> dict[str, int]:
    """One distinct free port per name, on ``host``."""
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        p = free_port(host)
        if p not in ports.values():
            ports[names[len(ports)]] = p
    return ports


def port_facts(ports: dict[str, int]) -> dict:
    """{"port": first, "<name>_port": the others} for run.json's broker.launch."""
    out = {}
    for i, (name, port) in enumerate(ports.items()):
        out["port" if i == 0 else f"{name}_port"] = port
    return out


class ReadyProbe:
    """A real client round trip: the recipe's own probe, else the adapter's connect + server_impl.
    Calling it returns what answers (the implementation string); raises while not ready."""

    def __init__(self, spec, recipe, url: str, label: str, launcher: str, timeout_s: float = 3.0):
        self.inner = recipe.probe(url, label) if recipe is not None and recipe.probe else None
        self.spec, self.url, self.label, self.launcher, self.timeout_s = spec, url, label, launcher, timeout_s

    def __call__(self) -> str:
        if self.inner is not None:
            return self.inner()
        import brokers
        b = brokers.get(self.spec.name)(Endpoint(self.spec.name, self.url, {}, self.label, self.launcher))
        b.connect(self.timeout_s)
        try:
            return b.server_impl()
        finally:
            b.close()

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def impl_string(impl, recipe, answer: str, binary: str, log_text: str) -> str:
    """What run.json calls the broker: the server's own answer, or the implementation's label with the
    version the server itself reports (its log, its binary) where it says one."""
    if not impl.label:
        return answer
    said = recipe.version(binary, log_text) if recipe is not None and recipe.version else ""
    return impl.impl_label(said)
