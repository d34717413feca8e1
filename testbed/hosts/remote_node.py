"""A host as a ``Node`` (testbed/launchers/nodes.py): the launchers' calls, carried out by its agent.

``RemoteNode(agent)`` binds what it starts to the host's address; ``start_process`` returns a
``RemoteProcess`` with the ``LocalProcess`` interface (pid, alive(), returncode, wait(), kill(),
signal(), stop(), wait_ready(), log_tail(), sample(), name, tmp_dir, stop_grace_s), each a short call to
the agent: a launcher does not know where its broker runs. ``wait_ready``'s check (a client round trip
to the broker) runs here, on the orchestrator, over the hosts' network; only ``alive()`` is asked
remotely. Paths (logs, folders) are the host's: on simulated hosts, this machine's.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from testbed.errors import BrokerError
from testbed.hosts.handle import AgentHandle
from testbed.launchers.nodes import Node

READY_POLL_S = 0.2
WAIT_STEP_S = 0.5


class RemoteNode(Node):
    def __init__(self, agent: AgentHandle):
        self.agent = agent
        self.name = agent.name
        self.address = agent.address

    def describe(self) -> str:
        return f"host {self.name} ({self.address})"

    def resolve_binary(self, binary) -> str:
        return self.agent.call("resolve_binary", binary)

    def free_ports(self, names: tuple[str, ...]) -> dict[str, int]:
        return self.agent.call("free_ports", list(names))

    def make_dir(self, prefix: str) -> str:
        return self.agent.call("make_dir", prefix)

    def remove_dir(self, path: str) -> None:
        self.agent.call("remove_dir", path)

    def write_plan(self, folder: str, plan) -> None:
        self.agent.call("write_plan", folder, list(plan.dirs), dict(plan.files))

    def run_step(self, step, cwd: str) -> None:
        self.agent.call("run_step", step, cwd, timeout_s=step.timeout_s + 30)

    def run_command(self, argv: list[str], env: dict | None = None, timeout_s: float = 5.0) -> int:
        return self.agent.call("run_command", list(argv), env, timeout_s, timeout_s=timeout_s + 30)

    def start_process(self, name: str, argv: list[str], log_path: str, env: dict | None = None,
                      cwd: str | None = None, tmp_dir: str | None = None, stop_grace_s: float = 10.0,
                      on_exit=None) -> "RemoteProcess":
        log_path = os.path.abspath(log_path)
        key, pid = self.agent.call("start_process", name, list(argv), log_path, env, cwd, stop_grace_s)
        return RemoteProcess(self.agent, key, pid, name, log_path, tmp_dir, stop_grace_s, on_exit)

    def apply_limits(self, cfg, pid: int, extra: dict, log_path: str | None = None) -> None:
        extra.update(self.agent.call("apply_limits", cfg, pid, dict(extra), log_path))

    def read_text(self, path: str) -> str:
        return self.agent.call("read_text", path)


class RemoteProcess:
    """One process on a host, through its agent (the ``LocalProcess`` interface)."""

    def __init__(self, agent: AgentHandle, key: str, pid: int, name: str, log_path: str, tmp_dir: str | None,
                 stop_grace_s: float, on_exit: Callable[[int | None], None] | None = None):
        self.agent, self.key, self._pid = agent, key, pid
        self.name, self.log_path, self.tmp_dir, self.stop_grace_s = name, log_path, tmp_dir, stop_grace_s
        self.on_exit = on_exit
        self._code: int | None = None
        self._stopped = False

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def proc(self):
        """Not None until stopped (as LocalProcess.proc, which some callers look at)."""
        return None if self._stopped else self

    def _state(self) -> tuple[bool, int | None]:
        if self._stopped:
            return False, self._code
        alive, code = self.agent.call("proc_state", self.key)
        if code is not None:
            self._code = code
        return alive, code

    def alive(self) -> bool:
        return self._state()[0]

    @property
    def returncode(self) -> int | None:
        return self._state()[1]

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if self._stopped or self.agent.call("proc_wait", self.key, max(0.0, min(WAIT_STEP_S, left)),
                                                timeout_s=WAIT_STEP_S + 30):
                return True
            if left <= 0:
                return False

    def kill(self) -> None:
        self.agent.call("proc_kill", self.key, timeout_s=40)

    def signal(self, sig: int) -> None:
        self.agent.call("proc_signal", self.key, int(sig))

    def stop(self, timeout_s: float | None = None) -> None:
        if self._stopped:
            return
        timeout_s = self.stop_grace_s if timeout_s is None else timeout_s
        try:
            self._code = self.agent.call("proc_stop", self.key, timeout_s, self.tmp_dir, timeout_s=timeout_s + 30)
        finally:
            self._stopped = True
            self.tmp_dir = None
            if self.on_exit is not None:
                on_exit, self.on_exit = self.on_exit, None
                on_exit(self._code)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return self.agent.call("proc_log_tail", self.key, lines, timeout_s=10)
        except Exception:  # noqa: BLE001 - only for an error message
            return ""

    def sample(self) -> dict:
        try:
            return self.agent.call("proc_sample", self.key, timeout_s=5)
        except Exception:  # noqa: BLE001 - a figure we could not read is left empty
            return {}

    def wait_ready(self, check: Callable[[], object], timeout_s: float, what: str = "") -> object:
        """``check`` (here) until it answers; the process's life asked on its host."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            alive, code = self._state()
            if not alive:
                raise BrokerError(f"{self.name} on host {self.agent.name} exited during start-up (code {code}); "
                                  f"last log lines: {self.log_tail()}")
            try:
                return check()
            except Exception as exc:  # noqa: BLE001 - not ready yet
                last = exc
            time.sleep(READY_POLL_S)
        raise BrokerError(f"{self.name} on host {self.agent.name} did not become ready within {timeout_s:g}s"
                          f"{what}: {last}")

    # what fault injection sends (LocalHandle.pause/resume go through signal)
    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
