"""Remove what killed runs left behind: private broker processes, their temporary folders, containers.

``python -m testbed.brokers cleanup`` calls ``cleanup_all()``; every run starts with ``sweep()`` (the
same, limited to what a dead owner left, and cheap when there is nothing). A run that ends normally,
fails or is interrupted stops its own brokers, and a killed one's processes die with it and its watchdog
removes the rest (lifeline.py); what is left even so (the watchdog was killed too) is found here by what
the local launcher gives every broker: a temporary folder ``<tmp>/testbed-<name>-*``
(``base.private_tmp``) that the broker's command line, working directory or environment names.

A folder still used by a live run is left alone (other people may run the testbed on the same machine
at the same time):
- the local launcher writes ``owner`` into its folder (``base.write_owner``) (``"<pid> <create_time>"``
  of the orchestrating process): live while that process is;
- otherwise, live while one of the broker processes still has a Python parent (its orchestrator) that
  is not itself part of the leftovers; an orphan's parent is init.
Leftover processes get SIGTERM, then SIGKILL after a few seconds (their whole process group where it is
a session of its own, as every broker's is; otherwise the process alone); the folders are removed.
Folders with no process at all are removed once they are older than ``STALE_EMPTY_S``. Folders whose
name says docker or engine belong to a private Docker engine meant to outlive runs: never touched here.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import tempfile
import time

from testbed.launchers.base import OWNER_FILE, write_owner  # noqa: F401 (write_owner: re-exported)

STALE_EMPTY_S = 120.0
TERM_WAIT_S = 3.0


def cleanup_all() -> list[str]:
    lines = cleanup_local()
    lines += cleanup_docker()
    return lines


# -- local processes ------------------------------------------------------------------------------
#: folders of long-lived helpers (a private Docker engine) are not a run's leftovers
NOT_RUNS = ("docker", "engine")


def _testbed_dirs() -> list[str]:
    found = glob.glob(os.path.join(tempfile.gettempdir(), "testbed-*"))
    return sorted(d for d in found if os.path.isdir(d) and not any(w in os.path.basename(d) for w in NOT_RUNS))


def _references(proc, dirs: list[str]) -> str | None:
    """The testbed folder ``proc`` points into (command line, working directory, environment)."""
    import psutil
    texts = []
    try:
        texts.extend(proc.cmdline())
    except psutil.Error:
        pass
    try:
        texts.append(proc.cwd())
    except psutil.Error:
        pass
    try:
        texts.extend(proc.environ().values())
    except psutil.Error:
        pass
    for d in dirs:
        if any(d in t for t in texts):
            return d
    return None


def _owner_alive(tmp_dir: str) -> bool | None:
    """True/False from the owner file; None when there is none (or it is unreadable)."""
    import psutil
    try:
        with open(os.path.join(tmp_dir, OWNER_FILE)) as fh:
            pid_s, created_s = fh.read().split()
        p = psutil.Process(int(pid_s))
        return abs(p.create_time() - float(created_s)) < 1.0
    except (OSError, ValueError):
        return None
    except psutil.Error:
        return False


def _has_live_orchestrator(procs, members: set[int]) -> bool:
    import psutil
    for p in procs:
        try:
            parent = p.parent()
            if parent is None or parent.pid == 1 or parent.pid in members:
                continue
            name = (parent.name() or "").lower()
            argv0 = (parent.cmdline() or [""])[0].lower()
            if "python" in name or "python" in argv0 or "pytest" in name:
                return True
        except psutil.Error:
            continue
    return False


def _age_s(d: str) -> float | None:
    try:
        # a file's mtime is wall-clock time, so its age needs the wall clock (not a duration we measure)
        return time.time() - os.path.getmtime(d)
    except OSError:
        return None


def _processes_by_dir(dirs: list[str]) -> dict[str, list]:
    """Every process (but this one) pointing into each folder: one pass over the process table."""
    import psutil
    me = os.getpid()
    by_dir: dict[str, list] = {d: [] for d in dirs}
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        d = _references(proc, dirs)
        if d:
            by_dir[d].append(proc)
    return by_dir


def cleanup_local(quick: bool = False) -> list[str]:
    """Leftover folders and their processes. The process table is read only when a folder may be a
    leftover (its owner is dead, or it has no owner file); ``quick`` (the start-up sweep) also leaves
    folders with no owner file that are younger than ``STALE_EMPTY_S`` without looking."""
    dirs = _testbed_dirs()
    if not dirs:
        return ["local: no testbed broker folders or processes left"]
    lines = []
    owners = {d: _owner_alive(d) for d in dirs}
    for d, owner in owners.items():
        if owner:
            lines.append(f"local: {d} belongs to a run still going: left alone")
    unsure = [d for d, owner in owners.items() if not owner]
    if quick:
        unsure = [d for d in unsure if owners[d] is False or (_age_s(d) or 0.0) >= STALE_EMPTY_S]
    by_dir = _processes_by_dir(unsure) if unsure else {}
    for d, procs in by_dir.items():
        members = {p.pid for p in procs}
        if owners[d] is None and _has_live_orchestrator(procs, members):
            lines.append(f"local: {d} belongs to a run still going: left alone")
            continue
        if not procs and owners[d] is None:
            age = _age_s(d)
            if age is None:
                continue
            if age < STALE_EMPTY_S:
                lines.append(f"local: {d} is new ({age:.0f}s) and has no process: left alone")
                continue
        lines.append(_remove_dir(d, procs))
    return lines


def reap_dirs(dirs: list[str], protect: set[int] = frozenset(), grace_s: float = TERM_WAIT_S) -> list[str]:
    """Remove ``dirs`` (known leftovers: a dead owner's) and the processes pointing into them (SIGTERM,
    SIGKILL after ``grace_s``); the process groups in ``protect`` are never signalled as a whole."""
    by_dir = _processes_by_dir(dirs)
    return [_remove_dir(d, procs, protect, grace_s) for d, procs in by_dir.items()]


def _remove_dir(d: str, procs, protect: set[int] = frozenset(), grace_s: float = TERM_WAIT_S) -> str:
    killed = _kill_groups(procs, protect, grace_s)
    shutil.rmtree(d, ignore_errors=True)
    what = ", ".join(killed) if killed else "no process"
    return f"local: removed {d} ({what})"


def sweep(docker: bool = False) -> list[str]:
    """What runs whose owner is dead left: their folders and processes (and, with ``docker``, their
    containers). Cheap when there is nothing (a glob and the owner files): every run starts with it.
    Returns one line per thing removed."""
    lines = [ln for ln in cleanup_local(quick=True) if ": removed " in ln]
    try:  # simulated hosts of dead runs (testbed/hosts/teardown.py): a few folder listings when none
        from testbed.hosts.teardown import sweep as sweep_hosts
        lines += [f"hosts: {ln}" for ln in sweep_hosts()]
    except Exception:  # noqa: BLE001 - the sweep never stops a run
        pass
    if docker:
        try:
            from testbed.launchers import docker as docker_launcher
            lines += [f"docker: {ln}" for ln in docker_launcher.cleanup(dead_owners_only=True)
                      if ln.startswith("removed")]
        except Exception:  # noqa: BLE001 - the sweep never stops a run; `cleanup` says why
            pass
    return lines


def _kill_groups(procs, protect: set[int] = frozenset(), grace_s: float = TERM_WAIT_S) -> list[str]:
    """SIGTERM, then SIGKILL, to each process's group where that group is a session of its own (as
    every broker process is: ``start_new_session``), else to the process alone: a group we did not
    make (a shell job, the owner's own group, ours) is never signalled as a whole."""
    import psutil
    keep = set(protect) | {os.getpgid(0)}
    groups: dict[int, str] = {}
    singles: dict[int, str] = {}
    for p in procs:
        try:
            pgid = os.getpgid(p.pid)
            what = f"{p.name()} pid {p.pid}"
            if pgid not in keep and os.getsid(p.pid) == pgid:
                groups.setdefault(pgid, what)
            else:
                singles[p.pid] = what
        except (ProcessLookupError, psutil.Error):
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        for pid in singles:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGTERM:
            psutil.wait_procs([p for p in procs if p.is_running()], timeout=grace_s)
    return [f"killed {what}" for what in (*groups.values(), *singles.values())]


# -- containers -----------------------------------------------------------------------------------
def cleanup_docker() -> list[str]:
    try:
        from testbed.launchers import docker as docker_launcher
    except ImportError as exc:
        return [f"docker: launcher not available ({exc}): nothing to clean"]
    try:
        answers = getattr(docker_launcher, "engine_answers", None)
        if answers is not None and not answers():
            return ["docker: no engine answers: nothing to clean"]
        out = docker_launcher.cleanup()
    except Exception as exc:  # noqa: BLE001 - whatever the engine says, one line
        return [f"docker: cleanup failed: {' '.join(str(exc).split()) or type(exc).__name__}"]
    if out is None:
        return ["docker: cleaned"]
    return [f"docker: {line}" for line in (out if isinstance(out, (list, tuple)) else [out])]
