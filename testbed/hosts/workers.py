"""Stage processes on hosts, as the orchestrator sees them: what testbed/orchestration/stages.py does
with a ``multiprocessing.Process`` and its events, for a process that runs on another host.

``RemoteWorker``: ``start()``, ``is_alive()``, ``pid``, ``exitcode``, ``kill()``, ``terminate()``,
``join(timeout)``, ``name``, ``signal(sig)`` (pause/resume), and ``conn``: the record stream the
Collector reads (a ``PendingConnection`` until the process connects). Liveness comes from the host's
agent through a cached status (handle.py): asking every poll costs no Ray call.

``ControlGroup``: ``start_evt``, ``stop_evt`` (``set()``, ``is_set()``, ``wait(t)``) and ``t0``
(``.value``) for the orchestrator, as ``multiprocessing.Event``/``Value`` are today: setting them sends a
control message on every connected stage's connection (``t0`` converted to that host's clock by its
``ClockMap``), mirrors the value onto local ``multiprocessing`` objects when given (stages left on this
machine), and a stage that connects later (a restarted replica) is told the state at once.
"""
from __future__ import annotations

import os
import secrets
import signal as _signal
import threading
import time

from testbed.hosts import wire
from testbed.hosts.clock import IdentityClock
from testbed.hosts.listener import PendingConnection, StageListener

SPAWN_TIMEOUT_S = 60.0
JOIN_POLL_S = 0.05


class ControlGroup:
    def __init__(self, local_start=None, local_stop=None, local_t0=None):
        self._lock = threading.Lock()
        self._members: dict[str, tuple[object, object]] = {}  # worker -> (connection, clock map)
        self._state = {"t0": 0, "start": False, "stop": False}
        self.start_evt = _Flag(self, "start", local_start)
        self.stop_evt = _Flag(self, "stop", local_stop)
        self.t0 = _StartTime(self, local_t0)

    def join(self, worker: str, conn, clock) -> None:
        """A stage that just connected: told the state so far."""
        with self._lock:
            self._members[worker] = (conn, clock or IdentityClock())
            self._send(worker, self._snapshot(clock or IdentityClock()))

    def leave(self, worker: str) -> None:
        with self._lock:
            self._members.pop(worker, None)

    def _snapshot(self, clock) -> dict:
        s = self._state
        out = {}
        if s["t0"]:
            out["t0"] = clock.to_host(s["t0"])
        if s["start"]:
            out["start"] = True
        if s["stop"]:
            out["stop"] = True
        return out

    def _send(self, worker: str, fields: dict) -> None:
        if not fields:
            return
        conn, _ = self._members[worker]
        try:
            conn.send_bytes(wire.control(**fields))
        except (OSError, ValueError):  # a stage that is gone: its exit is seen elsewhere
            pass

    def _set(self, key: str, value) -> None:
        with self._lock:
            self._state[key] = value
            for worker, (_, clock) in list(self._members.items()):
                self._send(worker, {key: clock.to_host(value)} if key == "t0" else {key: True})

    def state(self, key: str):
        return self._state[key]


class _Flag:
    def __init__(self, group: ControlGroup, key: str, local=None):
        self.group, self.key, self.local = group, key, local
        self._evt = threading.Event()

    def set(self) -> None:
        if self.local is not None:
            self.local.set()
        self._evt.set()
        self.group._set(self.key, True)

    def is_set(self) -> bool:
        return self._evt.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._evt.wait(timeout)


class _StartTime:
    def __init__(self, group: ControlGroup, local=None):
        self.group, self.local = group, local

    @property
    def value(self) -> int:
        return self.group.state("t0")

    @value.setter
    def value(self, ns: int) -> None:
        if self.local is not None:
            self.local.value = ns
        self.group._set("t0", int(ns))


class RemoteWorker:
    """One stage process on a host: ``target`` ("module:function") with JSON ``args`` (wire.py's
    placeholders for its connection and control objects), started by the host's agent."""

    def __init__(self, host, listener: StageListener, control: ControlGroup, name: str, target: str, args,
                 log_path: str | None = None, cwd: str | None = None):
        self.host, self.listener, self.control = host, listener, control
        self.name, self.target, self.args = name, target, list(args)
        self.log_path, self.cwd = log_path, cwd if cwd is not None else os.getcwd()
        self.id = f"{name.replace(' ', '-')}-{secrets.token_hex(4)}"
        self.conn = PendingConnection(name)
        self._pid: int | None = None
        self._code: int | None = None

    @property
    def agent(self):
        return self.host.agent

    def start(self) -> None:
        clock = getattr(self.host, "clock", None)
        self.listener.expect(self.id, self.conn, lambda conn: self.control.join(self.id, conn, clock))
        payload = {"name": self.name, "host": self.host.name, "address": list(self.listener.address),
                   "authkey": self.listener.authkey.hex(), "target": self.target, "args": self.args,
                   "cwd": self.cwd}
        try:
            self._pid = self.agent.call("spawn", self.id, payload, self.log_path, timeout_s=SPAWN_TIMEOUT_S)
        except BaseException:
            self.listener.forget(self.id)
            raise

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def exitcode(self) -> int | None:
        if self._code is None and self._pid is not None:
            self._code = self.agent.stage_exits().get(self.id)
        return self._code

    def is_alive(self) -> bool:
        if self._pid is None or self._code is not None:
            return False
        exits = self.agent.stage_exits()
        if self.agent.dead:  # its host is gone, and so is the process (the parent-death signal)
            self._code = exits.get(self.id) if exits.get(self.id) is not None else -9
            return False
        code = exits.get(self.id)  # not there yet: just started
        if code is not None:
            self._code = code
        return code is None

    def join(self, timeout: float | None = None) -> None:
        if self._pid is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._code is None:
            try:
                code = self.agent.stage_exits(fresh=True).get(self.id)
            except Exception:  # noqa: BLE001 - the host is gone: so is the process
                code = self.agent.stage_exits().get(self.id, -9)
            if code is not None:
                self._code = code
                break
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(JOIN_POLL_S)
        self.control.leave(self.id)

    def signal(self, sig: int) -> None:
        if self._pid is not None:
            self.agent.call("stage_signal", self.id, int(sig))

    def kill(self) -> None:
        self.signal(_signal.SIGKILL)

    def terminate(self) -> None:
        self.signal(_signal.SIGTERM)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return self.agent.call("stage_log_tail", self.id, lines, timeout_s=10)
        except Exception:  # noqa: BLE001 - only for an error message
            return ""

    def close(self) -> None:
        """Forget the worker (after it ended): its connection and descriptors."""
        self.listener.forget(self.id)
        self.control.leave(self.id)
        self.conn.close()
