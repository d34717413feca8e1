"""Where a broker's processes run: a ``Node``.

A recipe's plan is carried out the same way wherever it runs; only the node differs:

    LocalNode     this machine: private processes bound to 127.0.0.1 (the local launcher, as always)
    (RemoteNode)  a host of a hosts file or a Ray cluster (testbed/hosts/): the same calls, carried out
                  there by the host's agent; its processes bind the host's own address

Everything a launcher does to start, watch and stop broker processes goes through these calls, so the
single-node launcher (local.py) and the cluster launcher (one node per member) do not know where their
processes are. A node's process objects have the ``LocalProcess`` interface (base.py): ``pid``,
``alive()``, ``returncode``, ``wait(timeout)``, ``kill()``, ``signal(sig)``, ``stop(timeout_s)``,
``wait_ready(check, timeout_s, what)``, ``log_tail()``, ``sample()``, and the attributes ``name``,
``tmp_dir`` (the folder it removes when stopped; set to None to keep it) and ``stop_grace_s``.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from testbed.errors import BrokerError
from testbed.launchers import lifeline
from testbed.launchers.base import LocalProcess, named_ports, private_tmp, resolve_binary, write_owner


class Node:
    """This machine (the base is the local implementation; a remote node overrides every call)."""

    #: the host's name in a hosts file ("" = this machine)
    name: str = ""
    #: the address its processes bind and clients reach them at
    address: str = "127.0.0.1"

    def describe(self) -> str:
        return self.name or "this machine"

    # -- before the processes start --------------------------------------------------------------
    def resolve_binary(self, binary) -> str:
        """Where a recipe's ``Binary`` is on this node (a clear error saying how to install it)."""
        return resolve_binary(binary)

    def free_ports(self, names: tuple[str, ...]) -> dict[str, int]:
        """One free port per name on this node's address."""
        return named_ports(names, self.address)

    def make_dir(self, prefix: str) -> str:
        """A private temporary folder ``testbed-<prefix>-*`` with an owner file (cleanup leaves a live
        run's folder alone; the watchdog removes it if the run dies)."""
        tmp = private_tmp(prefix)
        write_owner(tmp)
        return tmp

    def remove_dir(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def write_plan(self, folder: str, plan) -> None:
        """The plan's folders and config files under ``folder``."""
        for sub in plan.dirs:
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
        for rel, text in plan.files.items():
            with open(os.path.join(folder, rel), "w") as fh:
                fh.write(text)

    def run_step(self, step, cwd: str) -> None:
        """A plan's step, run to completion (one line naming it if it fails)."""
        try:
            done = subprocess.run(step.argv, capture_output=True, text=True, timeout=step.timeout_s,
                                  stdin=subprocess.DEVNULL, cwd=cwd, preexec_fn=lifeline.die_with_parent())
        except subprocess.TimeoutExpired:
            raise BrokerError(f"{step.name} did not finish within {step.timeout_s:g}s") from None
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [f"exit {done.returncode}"]
            raise BrokerError(f"{step.name} failed: {last[0]}")

    def run_command(self, argv: list[str], env: dict | None = None, timeout_s: float = 5.0) -> int:
        """A short command on this node (a helper's readiness check, a broker's admin tool): its exit code."""
        r = subprocess.run(argv, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
                           env={**os.environ, **(env or {})})
        return r.returncode

    # -- the processes ---------------------------------------------------------------------------
    def start_process(self, name: str, argv: list[str], log_path: str, env: dict | None = None,
                      cwd: str | None = None, tmp_dir: str | None = None, stop_grace_s: float = 10.0,
                      on_exit=None):
        """A private process (its own session, the parent-death signal), its output in ``log_path``."""
        return LocalProcess(name, argv, log_path, env=env, cwd=cwd, tmp_dir=tmp_dir, stop_grace_s=stop_grace_s,
                            on_exit=on_exit)

    def apply_limits(self, cfg, pid: int, extra: dict, log_path: str | None = None) -> None:
        """--broker-cpus / --broker-memory on one of this node's processes (recorded in ``extra``)."""
        from testbed.launchers.limits import apply_limits
        apply_limits(cfg, pid, extra, log_path)

    def read_text(self, path: str) -> str:
        """A file on this node ("" if it cannot be read)."""
        try:
            with open(path, errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""


class LocalNode(Node):
    """This machine, bound to 127.0.0.1 (or another local address)."""

    def __init__(self, address: str = "127.0.0.1"):
        self.address = address


#: the node every broker runs on unless it is placed on a host
LOCAL = LocalNode()
