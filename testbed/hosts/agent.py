"""A host's agent: one Ray actor per host (on the node advertising ``testbed_host:<name>``), living in
the host's namespaces and clock, doing there what the orchestrator asks.

- Broker processes: the ``Node`` calls of testbed/launchers/nodes.py carried out here, as this
  machine's ``LocalNode`` does them (free ports on the host's address, a private folder with an owner
  file, the plan's files and steps, ``LocalProcess`` for each process: its own session, the
  parent-death signal, its log). Processes are named by a key; the orchestrator's ``RemoteProcess``
  (remote_node.py) holds the key.
- Stage processes: ``spawn`` starts ``python -m testbed.hosts.child`` (child.py) with what to run on its
  standard input; it connects back to the orchestrator by itself. ``stage_exits`` tells which are gone.
- A clock server (clock.py) on the host's address, from the agent's start.

Everything the agent started dies with it: processes get the parent-death signal (the agent's calls run
on its main thread), and its folders are tracked by its own watchdog (lifeline.py). ``shutdown`` stops
it all in order. Calls are short: waiting is done by the orchestrator calling again.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from testbed.hosts.clock import ClockServer
from testbed.launchers import lifeline
from testbed.launchers.base import LocalProcess, log_tail
from testbed.launchers.nodes import LocalNode

STAGE_MODULE = "testbed.hosts.child"
#: environment variables a stage process does not get from the Ray worker it is started by
STAGE_ENV_DROP = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _node_address() -> str:
    import ray
    return ray.util.get_node_ip_address()


class HostAgent:
    def __init__(self, name: str, address: str | None, clock_key: bytes):
        self.name = name
        self.address = address or _node_address()
        self.node = LocalNode(self.address)
        self.clock = ClockServer(self.address, clock_key)
        self.procs: dict[str, LocalProcess] = {}
        self.codes: dict[str, int | None] = {}  # exit codes of processes stopped here
        self.stages: dict[str, subprocess.Popen] = {}
        self.stage_logs: dict[str, str] = {}
        self.dirs: set[str] = set()
        self._stage_dir: str | None = None
        self._n = 0

    def info(self) -> dict:
        return {"name": self.name, "address": self.address, "clock_port": self.clock.port, "pid": os.getpid(),
                "hostname": socket.gethostname(), "python": sys.version.split()[0],
                "main_thread": threading.current_thread() is threading.main_thread(),
                "monotonic_ns": time.monotonic_ns()}

    # -- Node calls (testbed/launchers/nodes.py) -----------------------------------------------------
    def resolve_binary(self, binary) -> str:
        return self.node.resolve_binary(binary)

    def free_ports(self, names) -> dict:
        return self.node.free_ports(tuple(names))

    def make_dir(self, prefix: str) -> str:
        path = self.node.make_dir(prefix)
        self.dirs.add(path)
        return path

    def remove_dir(self, path: str) -> None:
        self.node.remove_dir(path)
        self.dirs.discard(path)

    def write_plan(self, folder: str, dirs, files: dict) -> None:
        for sub in dirs:
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
        for rel, text in files.items():
            with open(os.path.join(folder, rel), "w") as fh:
                fh.write(text)

    def run_step(self, step, cwd: str) -> None:
        self.node.run_step(step, cwd)

    def run_command(self, argv, env, timeout_s: float) -> int:
        return self.node.run_command(list(argv), env=env, timeout_s=timeout_s)

    def apply_limits(self, cfg, pid: int, extra: dict, log_path: str | None) -> dict:
        self.node.apply_limits(cfg, pid, extra, log_path)
        return extra

    def read_text(self, path: str) -> str:
        return self.node.read_text(path)

    def start_process(self, name: str, argv, log_path: str, env, cwd, stop_grace_s: float) -> tuple[str, int]:
        """A broker process; returns (its key, its pid). A missing program raises FileNotFoundError as
        locally (the launcher turns it into the install hint)."""
        self._n += 1
        key = f"{name}-{self._n}"
        p = LocalProcess(name, list(argv), log_path, env=env, cwd=cwd, stop_grace_s=stop_grace_s)
        self.procs[key] = p
        return key, p.pid

    def proc_state(self, key: str) -> tuple[bool, int | None]:
        p = self.procs.get(key)
        if p is None or p.proc is None:
            return False, self.codes.get(key)
        return p.alive(), p.returncode

    def proc_wait(self, key: str, timeout_s: float) -> bool:
        p = self.procs.get(key)
        return True if p is None else p.wait(timeout_s)

    def proc_kill(self, key: str) -> None:
        p = self.procs.get(key)
        if p is not None:
            p.kill()

    def proc_signal(self, key: str, sig: int) -> None:
        p = self.procs.get(key)
        if p is not None:
            p.signal(sig)

    def proc_stop(self, key: str, timeout_s: float | None, tmp_dir: str | None) -> int | None:
        """Stop the process (its group: TERM, then KILL after the grace); remove ``tmp_dir`` (the
        orchestrator's say: None keeps the folder). Returns its exit code."""
        p = self.procs.get(key)
        if p is None:
            return None
        p.tmp_dir = tmp_dir
        proc = p.proc
        p.stop(timeout_s)
        code = proc.returncode if proc is not None else None
        self.codes[key] = code
        if tmp_dir:
            self.dirs.discard(tmp_dir)
        return code

    def proc_log_tail(self, key: str, lines: int) -> str:
        p = self.procs.get(key)
        return p.log_tail(lines) if p is not None else ""

    def proc_sample(self, key: str) -> dict:
        p = self.procs.get(key)
        return p.sample() if p is not None and p.proc is not None else {}

    # -- stage processes -----------------------------------------------------------------------------
    def spawn(self, worker: str, payload: dict, log_path: str | None = None) -> int:
        """A stage process (child.py) running ``payload``; returns its pid. Its output goes to
        ``log_path`` (default: a folder of the agent's)."""
        if log_path is None:
            if self._stage_dir is None:
                self._stage_dir = self.make_dir("stages")
            log_path = os.path.join(self._stage_dir, f"{worker}.log")
        env = {k: v for k, v in os.environ.items() if k not in STAGE_ENV_DROP}
        cwd = payload.get("cwd") if payload.get("cwd") and os.path.isdir(payload["cwd"]) else None
        log = open(log_path, "ab")
        try:
            p = subprocess.Popen([sys.executable, "-m", STAGE_MODULE], stdin=subprocess.PIPE, stdout=log,
                                 stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
                                 preexec_fn=lifeline.die_with_parent())
        finally:
            log.close()
        try:
            p.stdin.write(json.dumps({**payload, "worker": worker, "parent": os.getpid()}).encode())
            p.stdin.close()
        except OSError:
            pass
        self.stages[worker] = p
        self.stage_logs[worker] = log_path
        return p.pid

    def stage_exits(self) -> dict:
        """worker -> its exit code (None: still running), for every stage process started here."""
        return {w: p.poll() for w, p in self.stages.items()}

    def stage_signal(self, worker: str, sig: int) -> None:
        """``sig`` to the stage process's group (SIGSTOP/SIGCONT pause and resume it, SIGKILL kills)."""
        p = self.stages.get(worker)
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass

    def stage_log_tail(self, worker: str, lines: int = 5) -> str:
        path = self.stage_logs.get(worker)
        if not path:
            return ""
        return log_tail(path, lines)

    # -- the end -------------------------------------------------------------------------------------
    def shutdown(self) -> list[str]:
        """Stop every process started here (stages first, then brokers) and remove the folders."""
        done = []
        for w, p in list(self.stages.items()):
            if p.poll() is None:
                for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
                    try:
                        os.killpg(p.pid, sig)
                    except ProcessLookupError:
                        break
                    try:
                        p.wait(wait)
                        break
                    except subprocess.TimeoutExpired:
                        continue
                done.append(f"stage {w}")
        for key, p in list(self.procs.items()):
            if p.proc is not None:
                p.stop()
                done.append(f"process {key}")
        for d in list(self.dirs):
            self.node.remove_dir(d)
        self.dirs.clear()
        return done
